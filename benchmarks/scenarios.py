"""The scenarios of issue #10, each a function of the sizes (full or --quick) returning its JSON result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import contenders as c
from benchmarks.alternation import alternate, marginal_result, patch_only, scenario_result
from benchmarks.contenders import Contender
from benchmarks.measure import run_measured
from benchmarks.server import Server, ServerSpec, pinned

# "No throttling": the emulator's --no-throttling turns every limit off, and the configuration it writes for bulkconn
# paces to 1,000 writes per 0.2 s window per tenant (5,000 writes/s), so bulkconn's own pacer runs (its cost is
# counted) without ever holding a request back. Not 20 ms windows (the 20 s window at a 0.001 time scale): a tenant
# whose sends pause longer than a window starts afresh, one request in flight until the window is full or over
# (docs/pacing.md); with Intune's 20 s windows that happens after a tenant has been idle for 20 s, with 20 ms windows
# after any pause of a few tens of milliseconds, many times a run, so run-to-run noise followed how many there were.
# The time scale of 0.001 remains for the latency the latency-bound scenario scales (hence its large --latency-ms).
UNTHROTTLED = 0.001
NO_THROTTLING = ("--no-throttling", "--window-s", "0.2", "--writes-per-app", "1000", "--writes-per-tenant", "2000")
IDENTITY_LATENCY_MS = 200


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is; ``QUICK`` keeps the whole harness well under a minute."""

    rounds: int = 5
    warm_up: bool = True
    overhead_tenants: int = 50
    overhead_ops: int = 20_000
    sdk_ops: int = 2_000
    sdk_large_rounds: int = 3
    startup_rounds: int = 15
    throttle_window_scale: float = 0.02
    throttle_ops_one: int = 1_000
    throttle_ops_each: int = 500
    latency_ops: int = 2_000
    scale_lines: int = 1_000_000
    scale_small: int = 10_000
    scale_slice: int = 100_000
    msp_tenants: int = 1_000


FULL = Sizes()
QUICK = Sizes(
    rounds=1,
    warm_up=False,
    overhead_tenants=5,
    overhead_ops=400,
    sdk_ops=100,
    sdk_large_rounds=1,
    startup_rounds=1,
    throttle_window_scale=0.005,
    throttle_ops_one=200,
    throttle_ops_each=100,
    latency_ops=100,
    scale_lines=5_000,
    scale_small=1_000,
    scale_slice=1_000,
    msp_tenants=30,
)


@dataclass(frozen=True, slots=True)
class Env:
    """Where a scenario writes, and which CPUs the server and client use."""

    work: Path
    server_cpu: str | None
    client_cpu: str | None
    sizes: Sizes


def _alternated(
    env: Env,
    name: str,
    spec: ServerSpec,
    ops: int,
    field: list[Contender],
    pairs: list[tuple[str, str]],
    *,
    rounds: int | None = None,
    warm_up: bool | None = None,
) -> dict[str, Any]:
    work = env.work / name
    with Server(spec, work, env.server_cpu) as server:
        job = work / "job.jsonl"
        patch_only(server.sample_job, job, ops)
        samples = alternate(
            server,
            field,
            job,
            rounds=rounds or env.sizes.rounds,
            warm_up=env.sizes.warm_up if warm_up is None else warm_up,
            work=work,
            client_cpu=env.client_cpu,
        )
    setup = {
        "tenants": spec.tenants,
        "operations": ops,
        "time_scale": spec.time_scale,
        "emulator_flags": list(spec.extra),
    }
    setup["in_flight"] = {x.name: x.in_flight for x in field}
    return scenario_result(samples, pairs, setup)


def _unthrottled(
    env: Env,
    name: str,
    ops: int,
    field: list[Contender],
    pairs: list[tuple[str, str]],
    *,
    rounds: int | None = None,
    warm_up: bool | None = None,
) -> dict[str, Any]:
    """``ops`` PATCHes over the overhead scenario's tenants with throttling out of reach; CPU per operation added."""
    tenants = env.sizes.overhead_tenants
    spec = ServerSpec(tenants, ops // tenants + 1, ops, UNTHROTTLED, extra=NO_THROTTLING)
    result = _alternated(env, name, spec, ops, field, pairs, rounds=rounds, warm_up=warm_up)
    for entry in result["contenders"].values():
        cpu = entry["median"]["cpu_s"]
        entry["median"]["cpu_us_per_op"] = cpu / ops * 1e6
        entry["median"]["ops_per_cpu_s"] = ops / cpu
    return result


def overhead(env: Env) -> dict[str, Any]:
    """(1) Client overhead: PATCHes over many tenants, throttling out of reach; bulkconn against the floor."""
    field = [c.floor(1), c.bulkconn(1), c.floor(20), c.bulkconn(20)]
    pairs = [("bulkconn-single", "floor-single"), ("bulkconn-batch", "floor-batch")]
    return _unthrottled(env, "overhead", env.sizes.overhead_ops, field, pairs)


def marginal(env: Env) -> dict[str, Any]:
    """(1d) CPU per operation with start-up and per-tenant costs taken out: each contender on a tenth of the overhead
    job and on the whole job, on one server, in A B A B order; the slope between the two sizes is what one more
    operation costs, the intercept what a run costs before its first operation (imports, tokens, set-up)."""
    big = env.sizes.overhead_ops
    small = big // 10
    tenants = env.sizes.overhead_tenants
    spec = ServerSpec(tenants, big // tenants + 1, big, UNTHROTTLED, extra=NO_THROTTLING)
    field = [c.floor(1), c.bulkconn(1), c.floor(20), c.bulkconn(20)]
    work = env.work / "marginal"
    with Server(spec, work, env.server_cpu) as server:
        jobs = {n: work / f"job-{n}.jsonl" for n in (small, big)}
        for n, path in jobs.items():
            patch_only(server.sample_job, path, n)
        runs = {n: alternate(server, field, job, rounds=env.sizes.rounds, warm_up=env.sizes.warm_up, work=work,
                             client_cpu=env.client_cpu) for n, job in jobs.items()}  # fmt: skip
    result = marginal_result(runs, small, big, [("bulkconn-single", "floor-single"), ("bulkconn-batch", "floor-batch")])
    result["setup"].update(tenants=tenants, time_scale=UNTHROTTLED, emulator_flags=list(NO_THROTTLING))
    return result


def sdk_single_large(env: Env) -> dict[str, Any]:
    """(1e) One request per operation on the overhead scenario's full job: msgraph-sdk's per-object ``patch()`` against
    bulkconn single. The SDK costs about 7 ms of CPU per request, so each of its runs takes minutes: the issue's
    minimum of 3 counted rounds here and no warm-up run (in a full run scenario (1b) has already run both contenders on
    the same shape, so files and bytecode are warm; the client CPU of a first run on a fresh emulator is not affected)."""
    field = [c.bulkconn(1), c.sdk(1)]
    pairs = [("msgraph-sdk-single", "bulkconn-single")]
    return _unthrottled(
        env, "sdk-single", env.sizes.overhead_ops, field, pairs, rounds=env.sizes.sdk_large_rounds, warm_up=False
    )


def sdk(env: Env) -> dict[str, Any]:
    """(1b) msgraph-sdk against bulkconn on a short job of the same shape (2,000 operations: start-up weighs more)."""
    field = [c.bulkconn(1), c.sdk(1), c.bulkconn(20), c.sdk(20)]
    pairs = [("msgraph-sdk-single", "bulkconn-single"), ("msgraph-sdk-batch", "bulkconn-batch")]
    return _unthrottled(env, "sdk", env.sizes.sdk_ops, field, pairs)


def sdk_batch_large(env: Env) -> dict[str, Any]:
    """(1c) ``$batch`` on the overhead scenario's full job: msgraph-sdk, bulkconn and the floor.

    At 2,000 operations start-up is most of every contender's CPU; on 20,000 the batch path's cost per operation
    shows, and msgraph-sdk / floor bounds what any client no cheaper than the floor can reach.
    """
    field = [c.floor(20), c.bulkconn(20), c.sdk(20)]
    pairs = [("msgraph-sdk-batch", "bulkconn-batch"), ("msgraph-sdk-batch", "floor-batch")]
    return _unthrottled(env, "sdk-batch", env.sizes.overhead_ops, field, pairs)


def _throttle(env: Env, tenants: int, ops_each: int) -> dict[str, Any]:
    s = env.sizes
    spec = ServerSpec(tenants, ops_each + 1, tenants * ops_each, s.throttle_window_scale)
    field = [c.bulkconn(20), c.bulkconn(1)]
    result = _alternated(
        env, f"throttle-{tenants}", spec, tenants * ops_each, field, [("bulkconn-batch", "bulkconn-single")]
    )
    window_s = 20 * s.throttle_window_scale
    ideal_s = ops_each / 100 * window_s  # Intune: 100 writes per app per 20 s window, one app per tenant
    result["setup"].update(window_s=window_s, ideal_wall_s=ideal_s, writes_per_window=100)
    for entry in result["contenders"].values():
        m = entry["median"]
        m["wall_over_ideal"] = m["wall_s"] / ideal_s
        m["utilisation"] = ideal_s / m["wall_s"]
        m["share_429"] = m["throttled_429"] / max(1, m["writes"])
    return result


def throttle_one(env: Env) -> dict[str, Any]:
    """(2a) Throttle-bound, one tenant at Intune's write limit (time-scaled)."""
    return _throttle(env, 1, env.sizes.throttle_ops_one)


def throttle_twenty(env: Env) -> dict[str, Any]:
    """(2b) Throttle-bound, twenty tenants at the limit at once (time-scaled)."""
    return _throttle(env, 20, env.sizes.throttle_ops_each)


def latency(env: Env) -> dict[str, Any]:
    """(3) Latency-bound: 100 +- 30 ms per request (emulator --latency-ms/--jitter-ms), 20 tenants."""
    s = env.sizes
    # Latency is multiplied by the time scale: 70,000 + uniform(0, 60,000) ms x 0.001 = 70..130 ms.
    extra = ("--latency-ms", "70000", "--jitter-ms", "60000", *NO_THROTTLING)
    spec = ServerSpec(20, s.latency_ops // 20 + 1, s.latency_ops, UNTHROTTLED, extra=extra)
    field = [c.floor(1), c.bulkconn(1), c.floor(20), c.bulkconn(20)]
    pairs = [("bulkconn-single", "floor-single"), ("bulkconn-batch", "floor-batch")]
    return _alternated(env, "latency", spec, s.latency_ops, field, pairs)


def _many_tenants(env: Env, name: str, identity_latency_ms: int) -> dict[str, Any]:
    s = env.sizes
    extra = ("--token-latency-ms", str(identity_latency_ms)) if identity_latency_ms else ()
    spec = ServerSpec(s.msp_tenants, 3, s.msp_tenants * 3, 1.0, extra=extra)
    field = [c.floor(20, concurrency=64), c.bulkconn(20, concurrency=64)]
    result = _alternated(env, name, spec, s.msp_tenants * 3, field, [("bulkconn-batch", "floor-batch")])
    result["setup"]["identity_latency_ms"] = identity_latency_ms
    return result


def many_tenants(env: Env) -> dict[str, Any]:
    """(5) 1,000 tenants x 3 operations with real token acquisition (one client-credentials grant each)."""
    return _many_tenants(env, "tenants", 0)


def many_tenants_slow_identity(env: Env) -> dict[str, Any]:
    """(5b) The same with every token answer held back 200 ms (emulator ``--token-latency-ms``)."""
    return _many_tenants(env, "tenants-200ms", IDENTITY_LATENCY_MS)


# What `bulkconn run` imports before its first request, loaded as the command line loads it
# (bulkconn.cli.import_without_collector: the collector paused, then what the import created frozen), ending as every
# `bulkconn` command ends, with gc.freeze() (bulkconn.cli.main). The floor's script ends with gc.freeze() too: the
# interpreter's final collection walks every object still alive, so it grows with what was imported, and it is not an
# import's cost. Each side imports with the collector as it leaves it.
RUN_IMPORTS = (
    "import gc; from bulkconn.cli import import_without_collector; import_without_collector('bulkconn.cli.run'); "
    "gc.freeze()"
)
FLOOR_IMPORTS = "import aiohttp, msal, orjson, click"


def startup(env: Env) -> dict[str, Any]:
    """Start-up: ``bulkconn --version``, and what ``bulkconn run`` imports before its first request, against
    importing what the floor of a bulk tool needs."""
    field = [
        Contender("imports", 1, 1, lambda *_: [sys.executable, "-c", f"{FLOOR_IMPORTS}; import gc; gc.freeze()"]),
        Contender("bulkconn-version", 1, 1, lambda *_: [sys.executable, "-m", "bulkconn", "--version"]),
        Contender("bulkconn-run-imports", 1, 1, lambda *_: [sys.executable, "-c", RUN_IMPORTS]),
    ]
    work = env.work / "startup"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[Any]] = {x.name: [] for x in field}
    for n in range(env.sizes.startup_rounds + 1):
        for x in field:
            sample = run_measured(pinned(env.client_cpu, x.argv(work, work, work)), log=work / "startup.log")
            if n:  # round 0 warms the file cache
                runs[x.name].append(sample)
    pairs = [("bulkconn-version", "imports"), ("bulkconn-run-imports", "imports")]
    return scenario_result(runs, pairs, {"floor": FLOOR_IMPORTS})


SCENARIOS: dict[str, Callable[[Env], dict[str, Any]]] = {
    "startup": startup,
    "overhead": overhead,
    "marginal": marginal,
    "sdk": sdk,
    "sdk-batch": sdk_batch_large,
    "sdk-single": sdk_single_large,
    "throttle-1": throttle_one,
    "throttle-20": throttle_twenty,
    "latency": latency,
    "tenants": many_tenants,
    "tenants-200ms": many_tenants_slow_identity,
}
