"""Throttling limits as the server counts them: exact windows, per-tenant and run-time limits, Graph's global
limit, $batch sub-requests, the stats a pacing test reads, and Retry-After rotating through its forms."""

from __future__ import annotations

import datetime as dt
import signal
import ssl
import subprocess
import sys
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import click
import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from bulkconn.cli.emulator import _extra_faults, _tenant_limits
from bulkconn.emulator import ROTATING, Emulator, Faults, Limits
from bulkconn.emulator.options import parse_tenant_limit
from bulkconn.emulator.state import generate_world
from bulkconn.emulator.throttling import TenantThrottle, Window
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant
from tests.emulator_helpers import list_statuses as _gets
from tests.emulator_helpers import post_batch, wait_ready

JSON = {"Content-Type": "application/json"}


def _throttle(**limits: Any) -> TenantThrottle:
    return TenantThrottle.from_limits(Limits().with_overrides(limits))


# -- the arithmetic, with explicit timestamps ---------------------------------------------------------------


def test_window_boundary_is_exact() -> None:
    """An event exactly window_s old has left the window; one a microsecond younger still blocks it."""
    window = Window(limit=2, length_s=20.0)
    window.add(0.0)
    window.add(5.0)
    assert window.wait_s(19.999999) == 0.001  # the shortest wait the emulator states
    assert window.wait_s(20.0) == 0.0
    assert window.count(20.0) == 1
    assert window.count(25.0) == 0


def test_writes_per_app_boundary_and_retry_after_exact() -> None:
    """Limit 3 per 20 s: the 4th write waits exactly until the 1st leaves; at that instant it is admitted."""
    throttle = _throttle(writes_per_app=3)
    for t in (0.0, 1.0, 2.0):
        assert throttle.admit("app", is_write=True, now=t) == 0
    assert throttle.admit("app", is_write=True, now=3.0) == pytest.approx(17.0)
    assert throttle.admit("app", is_write=True, now=20.0) == 0
    assert throttle.admit("app", is_write=True, now=20.5) == pytest.approx(0.5)
    app = throttle.stats()["apps"]["app"]
    assert app["max_writes_in_window"] == 3
    assert app["writes_total"] == 6 and app["writes_admitted"] == 4 and app["writes_throttled"] == 2
    # Sends, not admissions: at 3.0, 20.0 and 20.5 the trailing 20 s held 4, 4 and 5 sends (the refused one too).
    assert app["windows_over_limit"] == 3


def test_each_documented_limit_is_its_own_window() -> None:
    """Writes for all apps, any request per app and any request per tenant each refuse on their own."""
    throttle = _throttle(writes_per_app=10, writes_per_tenant=3, any_per_app=5, any_per_tenant=8)
    assert [throttle.admit(a, is_write=True, now=0.0) for a in ("a", "b", "c")] == [0, 0, 0]
    assert throttle.admit("d", is_write=True, now=0.1) > 0  # tenant writes full though app d has room
    assert [throttle.admit("a", is_write=False, now=0.2) for _ in range(4)] == [0, 0, 0, 0]
    assert throttle.admit("a", is_write=False, now=0.3) > 0  # app a: 1 write + 4 reads = its 5
    assert throttle.admit("b", is_write=False, now=0.4) == 0  # the tenant's 8th request
    assert throttle.admit("c", is_write=False, now=0.5) > 0  # the tenant's 9th: refused
    stats = throttle.stats()
    assert (stats["max_requests_in_window"], stats["max_writes_in_window"]) == (8, 3)
    assert stats["windows_over_limit"] == 1  # d's write made the tenant's trailing attempts 4 > 3


def test_tenant_wide_any_request_limit() -> None:
    """Any request per tenant counts every app together."""
    throttle = _throttle(any_per_tenant=4)
    assert [throttle.admit(app, is_write=False, now=1.0) for app in ("a", "b", "c", "d")] == [0, 0, 0, 0]
    assert throttle.admit("e", is_write=False, now=1.0) == pytest.approx(20.0)


def test_window_counts_and_utilisation_fields() -> None:
    """window_counts are admitted writes per consecutive window from the first admitted write."""
    throttle = _throttle(writes_per_app=5, window_s=10.0)
    times = [0.0, 1.0, 2.0, 9.0, 10.0, 11.0, 25.0]
    for t in times:
        assert throttle.admit("app", is_write=True, now=t) == 0
    app = throttle.stats()["apps"]["app"]
    assert app["window_counts"] == [4, 2, 1]
    assert (app["first_write_s"], app["last_write_s"]) == (0.0, 25.0)
    assert app["windows_over_limit"] == 0
    assert app["max_writes_in_window"] == 4  # (0, 10] holds 1, 2, 9, 10 at t=10


def test_apply_changes_limits_and_window_from_now_on() -> None:
    """Lowering the limit refuses at once; a shorter window frees room earlier; admitted events stay."""
    throttle = _throttle(writes_per_app=10)
    for t in (0.0, 1.0, 2.0):
        assert throttle.admit("app", is_write=True, now=t) == 0
    throttle.apply(throttle.limits.with_overrides({"writes_per_app": 2}))
    assert throttle.admit("app", is_write=True, now=3.0) > 0
    throttle.apply(throttle.limits.with_overrides({"window_s": 2.5}))
    assert throttle.admit("app", is_write=True, now=4.0) == 0  # only t=2 is younger than 2.5 s
    assert throttle.stats()["apps"]["app"]["limit"] == 2
    assert throttle.stats()["limits"]["window_s"] == 2.5


def test_global_window_applies_across_tenants() -> None:
    """A window passed as `also` (Graph's global one) refuses a request another tenant's windows would admit."""
    shared = Window(limit=2, length_s=10.0)
    first, second = _throttle(), _throttle()
    assert first.admit("app", is_write=False, now=0.0, also=[shared]) == 0
    assert second.admit("app", is_write=False, now=0.0, also=[shared]) == 0
    assert second.admit("app", is_write=False, now=1.0, also=[shared]) == pytest.approx(9.0)
    assert shared.peak == 2


def test_limit_parsing_refuses_mistakes() -> None:
    """--tenant-limit and --fault parse into overrides; unknown names and bad values are refused."""
    assert parse_tenant_limit("contoso:writes_per_app=40,window-s=2") == (
        "contoso",
        {"writes_per_app": 40.0, "window_s": 2.0},
    )
    assert _tenant_limits(("contoso:writes_per_app=40", "contoso:window_s=2")) == {
        "contoso": {"writes_per_app": 40.0, "window_s": 2.0}
    }
    bad_limits = ("contoso", ":writes_per_app=1", "contoso:speed=1", "contoso:writes_per_app=0", "c:writes_per_app=2.5")
    for bad in (*bad_limits, "c:window_s=x"):
        with pytest.raises(click.BadParameter):
            _tenant_limits((bad,))
    assert _extra_faults(("p-html-502=0.5", "huge_body_bytes=1000"), Faults()) == Faults(
        p_html_502=0.5, huge_body_bytes=1000
    )
    for bad in ("p_html_502=2", "colour=1", "redirect_status=200", "huge_body_bytes=1.5"):
        with pytest.raises(click.BadParameter):
            _extra_faults((bad,), Faults())


# -- over real TLS sockets ---------------------------------------------------------------------------------


async def _patches(emu: Emulator, alias: str, n: int) -> list[aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu, alias)
        cid = next(iter(tenant(emu, alias).connectors.values()))["id"]
        url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{cid}"
        out = []
        for i in range(n):
            async with http.patch(
                url, json={"exchangeAlias": f"a{i}"}, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                await r.read()
                out.append(r)
        return out


def _app_stats(emu: Emulator, alias: str) -> dict[str, Any]:
    apps = emu.stats()["tenants"][alias]["apps"]
    writer = tenant(emu, alias).writer_app().client_id
    return dict(apps[writer])


async def test_per_tenant_limit_slows_one_tenant_only(make_emulator: EmulatorFactory) -> None:
    """contoso at 3 writes per window, fabrikam at the default: 3 of 5 pass on contoso, 5 of 5 on fabrikam."""
    emu = await make_emulator(tenant_limits={"contoso": {"writes_per_app": 3, "window_s": 60}})
    assert [r.status for r in await _patches(emu, "contoso", 5)] == [200, 200, 200, 429, 429]
    assert [r.status for r in await _patches(emu, "fabrikam", 5)] == [200] * 5
    contoso = _app_stats(emu, "contoso")
    assert contoso["limit"] == 3 and contoso["window_s"] == 60
    assert contoso["max_writes_in_window"] == 3
    assert contoso["windows_over_limit"] == 2
    assert (contoso["writes_total"], contoso["writes_admitted"], contoso["writes_throttled"]) == (5, 3, 2)
    assert contoso["throttled"] == 2
    assert _app_stats(emu, "fabrikam")["windows_over_limit"] == 0
    assert emu.limits()["tenants"]["fabrikam"]["writes_per_app"] == 100


async def test_window_length_independent_of_time_scale(make_emulator: EmulatorFactory) -> None:
    """limit_window_s sets the real window whatever the time scale: Retry-After fits inside 0.4 s."""
    emu = await make_emulator(writes_per_app=2, limit_window_s=0.4, time_scale=1.0, retry_after_cycle=(ROTATING[1],))
    last = (await _patches(emu, "contoso", 3))[-1]
    assert last.status == 429
    assert 0 < float(last.headers["Retry-After"]) <= 0.4
    assert emu.limits()["tenants"]["contoso"]["window_s"] == 0.4


async def test_limits_changed_at_run_time_over_admin_endpoint(make_emulator: EmulatorFactory) -> None:
    """POST /_emulator/limits lowers then raises one tenant's limit; mistakes are a 400, not a change."""
    emu = await make_emulator()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        async with http.post(f"{emu.base_url}/_emulator/limits", json={"tenant": "contoso", "writes_per_app": 2}) as r:
            assert r.status == 200
            assert (await r.json())["tenants"]["contoso"]["writes_per_app"] == 2
        assert [r.status for r in await _patches(emu, "contoso", 3)] == [200, 200, 429]
        async with http.post(f"{emu.base_url}/_emulator/limits", json={"tenant": "contoso", "writes_per_app": 5}) as r:
            assert r.status == 200
        assert [r.status for r in await _patches(emu, "contoso", 4)] == [200, 200, 200, 429]
        for bad in ({"tenant": "nobody", "writes_per_app": 5}, {"speed": 1}, {"writes_per_app": -1}):
            async with http.post(f"{emu.base_url}/_emulator/limits", json=bad) as r:
                assert r.status == 400
        async with http.get(f"{emu.base_url}/_emulator/limits") as r:
            limits = await r.json()
    assert limits["tenants"]["contoso"]["writes_per_app"] == 5
    assert limits["tenants"]["fabrikam"]["writes_per_app"] == 100
    assert _app_stats(emu, "contoso")["limit"] == 5


async def test_set_limits_python_api_for_all_tenants(make_emulator: EmulatorFactory) -> None:
    """Emulator.set_limits() without a tenant changes every tenant, including ones not yet seen."""
    emu = await make_emulator()
    emu.set_limits(any_per_tenant=2)
    assert await _gets(emu, "fabrikam", 3) == [200, 200, 429]
    with pytest.raises(ValueError, match="unknown limit"):
        emu.set_limits(colour=1)
    emu.core.reset()
    assert emu.limits()["tenants"]["fabrikam"]["any_per_tenant"] == 2000


async def test_global_limit_per_app_across_tenants(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """One multi-tenant app in two tenants shares Graph's global window: 4 allowed in all, the 5th is a 429."""
    world = generate_world(tenants=2, connectors_per_tenant=2, seed=1).to_json()
    shared = next(a for a in world["tenants"][0]["apps"] if a["display_name"] == "bulkconn")
    other = next(a for a in world["tenants"][1]["apps"] if a["display_name"] == "bulkconn")
    other.update(client_id=shared["client_id"], secrets=shared["secrets"])
    path = tmp_path / "world.json"
    path.write_bytes(orjson.dumps(world))
    emu = await make_emulator(world_file=path, global_per_app=4)
    assert await _gets(emu, "contoso", 3) == [200, 200, 200]
    assert await _gets(emu, "fabrikam", 2) == [200, 429]
    stats = emu.stats()
    assert stats["global"]["apps"][shared["client_id"]]["max_requests_in_window"] == 4
    assert stats["global"]["per_app"] == 4
    emu.set_limits(global_per_app=10)
    assert await _gets(emu, "fabrikam", 1) == [200]


async def test_batch_sub_requests_count_one_by_one(make_emulator: EmulatorFactory) -> None:
    """A $batch of 5 PATCHes against a limit of 3: three 200s and two 429s inside one 200 envelope."""
    emu = await make_emulator(writes_per_app=3)
    ids = [c["id"] for c in tenant(emu, "contoso").connectors.values()]
    requests = [
        {"id": str(i), "method": "PATCH", "url": f"/deviceManagement/exchangeConnectors/{cid}", "headers": JSON}
        | {"body": {"exchangeAlias": f"b{i}"}}
        for i, cid in enumerate(ids[:5])
    ]
    statuses = sorted(item["status"] for item in await post_batch(emu, requests))
    assert statuses == [200, 200, 200, 429, 429]
    app = _app_stats(emu, "contoso")
    assert (app["writes_total"], app["max_writes_in_window"], app["windows_over_limit"]) == (5, 3, 2)


async def test_retry_after_rotates_through_every_form(make_emulator: EmulatorFactory) -> None:
    """retry_after_cycle=ROTATING: whole seconds, fractional, an HTTP date, absent, then again."""
    emu = await make_emulator(writes_per_app=1, retry_after_cycle=ROTATING)
    throttled = [r for r in await _patches(emu, "contoso", 6) if r.status == 429]
    values = [r.headers.get("Retry-After") for r in throttled]
    assert values[0] is not None and values[0].isdigit()
    assert values[1] is not None and "." in values[1] and float(values[1]) > 0
    assert values[2] is not None
    assert 0 < (parsedate_to_datetime(values[2]) - dt.datetime.now(dt.UTC)).total_seconds() <= 21
    assert values[3] is None
    assert values[4] is not None and values[4].isdigit()


def test_serve_options_reach_the_running_emulator(tmp_path: Path) -> None:
    """`emulator serve` limit, Retry-After and --fault options show in GET /_emulator/limits and the config it writes."""
    ready, config, state = tmp_path / "ready", tmp_path / "bulkconn.toml", tmp_path / "state"
    args = [
        *("--tenants", "2", "--connectors-per-tenant", "1", "--state-dir", str(state), "--ready-file", str(ready)),
        *("--write-config", str(config), "--writes-per-app", "50", "--window-s", "3", "--global-per-app", "999"),
        *("--tenant-limit", "contoso:writes_per_app=40,window_s=2", "--retry-after", "rotating"),
        *("--fault", "p_html_502=1", "--tenant-fault", "fabrikam:p_html_502=0"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkconn", "emulator", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        base_url = wait_ready(proc, ready)
        context = ssl.create_default_context(cafile=str(state / "ca.pem"))
        with urllib.request.urlopen(f"{base_url}/_emulator/limits", context=context, timeout=10) as answer:
            limits = orjson.loads(answer.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert limits["tenants"]["contoso"] == Limits(window_s=2, writes_per_app=40).to_json()
    assert limits["tenants"]["fabrikam"] == Limits(window_s=3, writes_per_app=50).to_json()
    assert limits["global_per_app"] == 999
    text = config.read_text()
    assert "window_s = 3.0" in text and "writes_per_20s = 50" in text
    assert proc.returncode == 0


def test_serve_refuses_a_bad_tenant_limit(tmp_path: Path) -> None:
    """A mistake in --tenant-limit is a usage error naming the option, not a traceback."""
    run = subprocess.run(
        [sys.executable, "-m", "bulkconn", "emulator", "serve", "--tenant-limit", "contoso:speed=3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert "unknown limit 'speed'" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("option", ["--write-config", "--write-job"])
def test_serve_refuses_to_replace_an_existing_file(tmp_path: Path, option: str) -> None:
    """An existing --write-config/--write-job file (a real bulkconn.toml) is kept: exit 2, nothing served."""
    existing = tmp_path / "bulkconn.toml"
    existing.write_text("# my real configuration\n")
    ready = tmp_path / "ready"
    args = ["emulator", "serve", option, str(existing), "--ready-file", str(ready), "--state-dir", str(tmp_path / "s")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"{existing} exists" in result.output and "--force" in result.output
    assert existing.read_text() == "# my real configuration\n"
    assert not ready.exists() and not (tmp_path / "bulkconn.secrets").exists()
