"""Markdown tables from a results file, written between markers in benchmarks/README.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _contenders(result: dict[str, Any], extra: list[tuple[str, str, str]]) -> list[str]:
    head = "| contender | in flight | client CPU s | wall s | peak RSS MiB | HTTP requests | 429s |"
    rows = [head + "".join(f" {title} |" for title, _, _ in extra), "|---" * (7 + len(extra)) + "|"]
    in_flight = result["setup"].get("in_flight", {})
    for name, entry in result["contenders"].items():
        m = entry["median"]
        cells = [
            name,
            str(in_flight.get(name, "")),
            f"{m['cpu_s']:.2f}",
            f"{m['wall_s']:.2f}",
            f"{m['peak_rss_mib']:.0f}",
            f"{m.get('http_requests', 0):,.0f}",
            f"{m.get('throttled_429', 0):,.0f}",
        ]
        cells += [format(m[key], fmt) for _, key, fmt in extra]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _ratios(result: dict[str, Any]) -> list[str]:
    rows = ["| ratio (median of paired runs) | client CPU | wall | peak RSS |", "|---|---|---|---|"]
    for r in result["ratios"]:
        rows.append(f"| {r['a']} / {r['b']} | {r['cpu_s']:.2f}x | {r['wall_s']:.2f}x | {r['peak_rss_mib']:.2f}x |")
    return rows


def _setup(result: dict[str, Any]) -> str:
    s = result["setup"]
    keys = ("tenants", "operations", "time_scale", "emulator_flags", "window_s", "ideal_wall_s", "identity_latency_ms")
    return "Setup: " + ", ".join(f"{k} {s[k]}" for k in keys if k in s and s[k] not in ([], None)) + "."


TOKENS = [("token requests", "token_requests", ",.0f"), ("max concurrent", "max_concurrent_token_requests", ".0f")]
EXTRA: dict[str, list[tuple[str, str, str]]] = {
    "overhead": [("µs CPU / op", "cpu_us_per_op", ".0f"), ("ops / CPU s", "ops_per_cpu_s", ",.0f")],
    "sdk": [("µs CPU / op", "cpu_us_per_op", ".0f"), ("ops / CPU s", "ops_per_cpu_s", ",.0f")],
    "sdk-batch": [("µs CPU / op", "cpu_us_per_op", ".0f"), ("ops / CPU s", "ops_per_cpu_s", ",.0f")],
    "sdk-single": [("µs CPU / op", "cpu_us_per_op", ".0f"), ("ops / CPU s", "ops_per_cpu_s", ",.0f")],
    "throttle-1": [
        ("wall / ideal", "wall_over_ideal", ".2f"),
        ("utilisation", "utilisation", ".0%"),
        ("429 share", "share_429", ".1%"),
    ],
    "throttle-20": [
        ("wall / ideal", "wall_over_ideal", ".2f"),
        ("utilisation", "utilisation", ".0%"),
        ("429 share", "share_429", ".1%"),
    ],
    "tenants": TOKENS,
    "tenants-200ms": TOKENS,
}

TITLES = {
    "startup": "Start-up: `bulkconn --version` and loading `bulkconn.cli.run` as the command line does, against importing aiohttp, msal, orjson,"
    " click",
    "overhead": "(1) Client overhead: PATCHes over 50 tenants, no throttling",
    "marginal": "(1d) CPU per operation without start-up: the overhead job at two sizes, slope and intercept",
    "sdk": "(1b) msgraph-sdk against bulkconn on a short job (2,000 operations: start-up weighs more)",
    "sdk-batch": "(1c) `$batch` on the full overhead job: msgraph-sdk against bulkconn and the floor",
    "sdk-single": "(1e) One request per operation on the full overhead job: msgraph-sdk against bulkconn",
    "throttle-1": "(2a) Throttle-bound: 1 tenant at Intune's write limit (time-scaled)",
    "throttle-20": "(2b) Throttle-bound: 20 tenants at the limit (time-scaled)",
    "latency": "(3) Latency-bound: 100 ± 30 ms per request, 20 tenants",
    "tenants": "(5) Many tenants: 3 operations each, real token acquisition",
    "tenants-200ms": "(5b) Many tenants, every token answer 200 ms late",
}


def _scale(result: dict[str, Any]) -> list[str]:
    s = result["setup"]
    rows = [
        f"Job: {s['lines']:,} lines ({s['job_mib']:.0f} MiB); report {s['report_mib']:.0f} MiB; small job {s['small']:,}"
        f" lines; slice {s['slice']:,} operations ($batch, 8 in flight, no throttling).",
        "",
        "| step | client CPU s | wall s | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for name, m in result["steps"].items():
        rows.append(f"| {name} | {m['cpu_s']:.2f} | {m['wall_s']:.2f} | {m['peak_rss_mib']:.0f} |")
    return rows


def _marginal(result: dict[str, Any]) -> list[str]:
    small, big = result["setup"]["operations"]
    rows = [
        f"| contender | client CPU s, {small:,} ops | client CPU s, {big:,} ops | µs CPU per extra op | fixed CPU s |",
        "|---|---|---|---|---|",
    ]
    for name, entry in result["contenders"].items():
        m = entry["median"]
        rows.append(
            f"| {name} | {m['cpu_s_small']:.2f} | {m['cpu_s']:.2f} | {m['us_per_op']:.1f} | {m['fixed_cpu_s']:.2f} |"
        )
    rows += ["", "| ratio (median of paired rounds) | CPU per extra operation |", "|---|---|"]
    rows += [f"| {r['a']} / {r['b']} | {r['us_per_op']:.2f}x |" for r in result["ratios"]]
    return rows


def render(results: dict[str, Any]) -> str:
    """Every scenario of ``results`` as Markdown."""
    machine = results["machine"]
    out = [
        f"Last run {results['started_at']} on {machine['cpus']} CPUs ({machine['platform']}, Python {machine['python']}),"
        f" server pinned to CPU {results['pinning']['server_cpu']}, client to CPU {results['pinning']['client_cpu']};"
        f" load average at its start {', '.join(f'{x:.1f}' for x in machine['load_average'])}."
        " Medians of the counted runs; `python -m benchmarks run` regenerates this section.",
    ]
    for name, result in results["scenarios"].items():
        out += ["", f"### {TITLES.get(name, '(4) Scale: 1,000,000 operations')}", ""]
        if "measured_at" in result:
            load = ", ".join(f"{x:.1f}" for x in result["load_average"])
            out += [f"Measured {result['measured_at']} (load average after the scenario {load}).", ""]
        if name == "scale":
            out += _scale(result)
            continue
        if name == "marginal":
            out += [_setup(result), "", *_marginal(result)]
            continue
        if "setup" in result and "tenants" in result["setup"]:
            out += [_setup(result), ""]
        out += [*_contenders(result, EXTRA.get(name, [])), "", *_ratios(result)]
    return "\n".join(out)


def write_readme(results: dict[str, Any], readme: Path) -> None:
    """Replace the text between the result markers of ``readme`` (append the markers if missing)."""
    text = readme.read_text()
    block = f"{BEGIN}\n{render(results)}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.DOTALL)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
