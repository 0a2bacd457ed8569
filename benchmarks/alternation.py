"""A B A B: warm every contender up once, then run them in turn for the counted rounds; medians and paired ratios."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.contenders import Contender
from benchmarks.measure import ContenderFailed, Sample, run_measured
from benchmarks.server import Server, pinned

METRICS = ("cpu_s", "wall_s", "peak_rss_mib")


def summarise_stats(stats: dict[str, Any], batched: bool) -> dict[str, Any]:
    """The emulator counters a table needs (its per-object counts are left out)."""
    tokens = stats.get("token_requests", {})
    return {
        "operations_seen": stats["requests_total"],
        "writes": stats["writes_total"],
        "batches": stats["batches_total"],
        # requests_total counts every sub-request of a $batch; the HTTP requests of a batched run are its envelopes.
        "http_requests": stats["batches_total"] if batched else stats["requests_total"],
        "throttled_429": stats["throttled_total"],
        "token_requests": sum(tokens.values()),
        "tenants_with_tokens": sum(1 for n in tokens.values() if n),
        "max_concurrent_token_requests": stats.get("max_concurrent_token_requests", 0),
    }


def applied(state: dict[str, Any], job: Path) -> tuple[int, int]:
    """(job lines the emulator's objects now reflect, job lines): every property of a line's patch has its value.

    Requests counted by the emulator do not prove work: a client that sends empty bodies is counted as well.
    """
    tenants = state["tenants"]
    done = lines = 0
    with job.open("rb") as handle:
        for raw in handle:
            line = json.loads(raw)
            found = tenants[line["tenant"]]["exchangeConnectors"].get(line["id"], {})
            done += all(found.get(k) == v for k, v in line["patch"].items())
            lines += 1
    return done, lines


def run_once(server: Server, contender: Contender, job: Path, work: Path, client_cpu: str | None) -> Sample:
    """Reset the emulator, run the contender pinned to the client CPU, attach the emulator's counters."""
    server.reset()
    report = work / f"{contender.name}.report.jsonl"
    report.unlink(missing_ok=True)
    argv = pinned(client_cpu, contender.argv(job, server.config, report))
    sample = run_measured(argv, log=work / f"{contender.name}.log")
    stats = summarise_stats(server.stats(), contender.batch_size > 1)
    stats["applied"], lines = applied(server.state(), job)
    if stats["applied"] != lines:
        raise ContenderFailed(f"{contender.name} applied {stats['applied']} of {lines} job lines; see {work}")
    return Sample(sample.cpu_s, sample.wall_s, sample.peak_rss_mib, stats)


def alternate(
    server: Server,
    contenders: list[Contender],
    job: Path,
    *,
    rounds: int,
    warm_up: bool,
    work: Path,
    client_cpu: str | None,
) -> dict[str, list[Sample]]:
    """One uncounted warm-up each (file cache, emulator), then ``rounds`` counted runs each in A B A B order."""
    for contender in contenders if warm_up else []:
        run_once(server, contender, job, work, client_cpu)
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for n in range(rounds):
        for contender in contenders:
            sample = run_once(server, contender, job, work, client_cpu)
            samples[contender.name].append(sample)
            print(
                f"    round {n + 1}: {contender.name:<20} cpu {sample.cpu_s:7.2f} s  wall {sample.wall_s:7.2f} s",
                flush=True,
            )
    return samples


def medians(samples: list[Sample]) -> dict[str, Any]:
    """Median of every metric and every emulator counter over the counted runs."""
    out: dict[str, Any] = {m: statistics.median(getattr(s, m) for s in samples) for m in METRICS}
    for key in samples[0].stats:
        out[key] = statistics.median(s.stats[key] for s in samples)
    return out


def paired_ratios(a: list[Sample], b: list[Sample]) -> dict[str, float]:
    """Median over rounds of a/b, round by round (the runs of one round ran next to each other)."""
    return {m: statistics.median(getattr(x, m) / getattr(y, m) for x, y in zip(a, b, strict=True)) for m in METRICS}


def scenario_result(
    samples: dict[str, list[Sample]], pairs: list[tuple[str, str]], setup: dict[str, Any]
) -> dict[str, Any]:
    """The JSON of one alternated scenario: every run, the medians and the named ratios."""
    return {
        "setup": setup,
        "contenders": {
            name: {"median": medians(runs), "runs": [s.as_json() for s in runs]} for name, runs in samples.items()
        },
        "ratios": [{"a": a, "b": b, **paired_ratios(samples[a], samples[b])} for a, b in pairs],
    }


def marginal_result(
    runs: dict[int, dict[str, list[Sample]]], small: int, big: int, pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Slope (CPU per extra operation) and intercept of every contender between two job sizes, and slope ratios.

    Round n of the small job and round n of the big one make one slope; medians over rounds, and the ratio of two
    contenders' slopes round by round (as :func:`paired_ratios`).
    """

    def slopes(name: str) -> list[float]:
        return [(b.cpu_s - a.cpu_s) / (big - small) for a, b in zip(runs[small][name], runs[big][name], strict=True)]

    contenders: dict[str, Any] = {}
    for name in runs[big]:
        slope = statistics.median(slopes(name))
        small_cpu = statistics.median(s.cpu_s for s in runs[small][name])
        big_cpu = statistics.median(s.cpu_s for s in runs[big][name])
        contenders[name] = {
            "median": {
                "cpu_s_small": small_cpu,
                "cpu_s": big_cpu,
                "us_per_op": slope * 1e6,
                "fixed_cpu_s": small_cpu - slope * small,
            },
            "runs": {str(n): [s.as_json() for s in runs[n][name]] for n in (small, big)},
        }
    ratios = [
        {"a": a, "b": b, "us_per_op": statistics.median(x / y for x, y in zip(slopes(a), slopes(b), strict=True))}
        for a, b in pairs
    ]
    return {"setup": {"operations": [small, big]}, "contenders": contenders, "ratios": ratios}


def patch_only(source: Path, target: Path, limit: int | None = None) -> int:
    """Copy the emulator's sample job, turning its occasional sync into a PATCH: every contender sends PATCHes."""
    written = 0
    with source.open("rb") as handle, target.open("w") as out:
        for raw in handle:
            if limit is not None and written >= limit:
                break
            line = json.loads(raw)
            patch = line.get("patch") or {
                "serverName": f"mail-migrated-{line['id'][:8]}.example.com",
                "exchangeConnectorType": "serviceToService",
            }
            out.write(json.dumps({"tenant": line["tenant"], "id": line["id"], "patch": patch}) + "\n")
            written += 1
    return written
