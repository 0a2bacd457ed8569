"""Authentication in real runs: certificates, refresh after revocation, quarantine, tenant isolation."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bulkconn.emulator.tls import make_client_certificate
from bulkconn.model import Progress
from tests.conftest import Rehearsal, read_report, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

Start = Callable[..., Awaitable[Rehearsal]]


def _lines(r: Rehearsal, aliases: list[str]) -> list[dict[str, Any]]:
    return r.patch_all(aliases, lambda alias, c: {"exchangeAlias": f"{alias}-{c['id'][:6]}"})


def _replace_in_tenant(r: Rehearsal, alias: str, old_prefix: str, new_line: str) -> None:
    """Swap one key's line inside [tenants.ALIAS] of the written configuration."""
    out, inside = [], False
    for line in r.config_path.read_text().splitlines():
        if line.startswith("[tenants."):
            inside = line == f"[tenants.{alias}]"
        out.append(new_line if inside and line.startswith(old_prefix) else line)
    r.config_path.write_text("\n".join(out) + "\n")


async def test_certificate_credential_run(rehearsal: Start) -> None:
    """A tenant configured with a certificate (private_key_jwt) runs a job with one token request."""
    r = await rehearsal(tenants=1, connectors_per_tenant=40)
    key, cert = await asyncio.to_thread(make_client_certificate, "contoso-bulkconn")
    tenant(r.emu, "contoso").writer_app().add_certificate(cert)
    pem = r.dir / "contoso.pem"
    pem.write_text(key + cert)
    pem.chmod(0o600)
    _replace_in_tenant(r, "contoso", "client_secret_file", f'certificate_file = "{pem}"')
    result = await r.run(r.job(_lines(r, ["contoso"])))
    assert result.counts == Counter({"succeeded": 40})
    assert r.emu.stats()["token_requests"]["contoso"] == 1


async def test_token_revoked_mid_run_is_refreshed(rehearsal: Start) -> None:
    """Tokens revoked while the run is going: 401s drop the cached token, a new one is fetched, all succeed."""
    r = await rehearsal(tenants=2, connectors_per_tenant=200)
    revoked = False

    def tick(progress: Progress) -> None:
        nonlocal revoked
        if not revoked and progress.finished >= 60:
            r.emu.revoke_tokens()
            revoked = True

    result = await r.run(r.job(_lines(r, ["contoso", "fabrikam"])), tick_s=0.05, on_tick=tick)
    assert revoked
    assert result.counts == Counter({"succeeded": 400})
    requests = r.emu.stats()["token_requests"]
    assert requests == {"contoso": 2, "fabrikam": 2}


async def test_wrong_secret_quarantines_only_that_tenant(rehearsal: Start) -> None:
    """fabrikam's secret is wrong: its operations fail with invalid_client, contoso's all succeed."""
    r = await rehearsal(tenants=2, connectors_per_tenant=30)
    (r.dir / "bulkconn.secrets" / "fabrikam.secret").write_text("definitely-wrong\n")
    result = await r.run(r.job(_lines(r, ["contoso", "fabrikam"])))
    assert result.counts == Counter({"succeeded": 30, "failed": 30})
    assert set(result.auth_failures) == {"fabrikam"}
    _, results, summary = read_report(r.dir / "report.jsonl")
    failed = [x for x in results if x["status"] == "failed"]
    assert {x["tenant"] for x in failed} == {"fabrikam"}
    assert {x["error"]["code"] for x in failed} == {"invalid_client"}
    assert "fabrikam" in summary["auth_failures"]
    assert r.emu.stats()["tenants"]["fabrikam"]["writes"] == 0


async def test_missing_permission_quarantines_the_tenant(rehearsal: Start) -> None:
    """An app with only a Read role gets 403 on its first write; the tenant stops after that batch."""
    r = await rehearsal(tenants=1, connectors_per_tenant=60)
    reader = next(a for a in tenant(r.emu, "contoso").apps.values() if a.display_name == "bulkconn-readonly")
    _replace_in_tenant(r, "contoso", "client_id", f'client_id = "{reader.client_id}"')
    (r.dir / "bulkconn.secrets" / "contoso.secret").write_text(reader.secrets[0])
    result = await r.run(r.job(_lines(r, ["contoso"])))
    assert result.counts == Counter({"failed": 60})
    assert "permission" in result.auth_failures["contoso"]
    assert r.emu.stats()["writes_total"] <= 20 * 4  # at most the batches already in flight


async def test_operations_only_touch_their_own_tenant(rehearsal: Start) -> None:
    """Each tenant's objects are changed only by its own operations; a mis-tenanted id is a 404, not a leak."""
    r = await rehearsal(tenants=3, connectors_per_tenant=20)
    before = r.emu.state()["tenants"]
    lines = _lines(r, ["contoso", "fabrikam"])
    stray = r.connectors("northwind")[0]["id"]
    lines.append({"tenant": "contoso", "id": stray, "patch": {"exchangeAlias": "stolen"}})
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 40, "failed": 1})
    after = r.emu.state()["tenants"]
    assert after["northwind"] == before["northwind"]
    for line in lines[:-1]:
        assert (
            after[line["tenant"]]["exchangeConnectors"][line["id"]]["exchangeAlias"] == line["patch"]["exchangeAlias"]
        )
    assert r.emu.stats()["cross_tenant_attempts"] == 1
    _, results, _ = read_report(r.dir / "report.jsonl")
    (failed,) = [x for x in results if x["status"] == "failed"]
    assert failed["http_status"] == 404 and failed["error"]["code"] == "ResourceNotFound"
