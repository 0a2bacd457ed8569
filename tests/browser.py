"""Headless Chromium for the handover report's HTML, a small PNG reader, and a demo-like run to render.

Used by ``tests/test_report_browser.py`` and by ``python tools/report_screenshot.py`` (which writes
``docs/images/report-show.png``). Chromium is Debian's ``chromium`` package; when it is absent the tests skip.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import orjson

from bulkconn.config import load_config
from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.runner import RunOptions, execute

CHROMIUM_TIMEOUT_S = 90
MISSING_ID = "00000000-0000-4000-8000-00000000dead"


def chromium() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, timeout=CHROMIUM_TIMEOUT_S, check=True, stdin=subprocess.DEVNULL
    )


def screenshot(binary: str, page: Path, png: Path, *, width: int = 1280, height: int = 1500) -> None:
    """Render ``page`` as Chromium shows it and save a ``width`` x ``height`` PNG."""
    _chromium(binary, png.parent / "chromium-profile", f"--screenshot={png}", f"--window-size={width},{height}",
              page.resolve().as_uri())  # fmt: skip


def dump_dom(binary: str, page: Path, profile: Path) -> str:
    """The document as Chromium holds it after loading ``page`` (scripts, had any run, included)."""
    return _chromium(binary, profile, "--dump-dom", page.resolve().as_uri()).stdout.decode()


def _unfilter(kind: int, row: bytearray, prior: bytes, bpp: int) -> None:
    """Undo one PNG scanline filter in place (RFC 2083, section 6)."""
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = prior[i]
        corner = prior[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF


def png_colours(png: Path) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and how many pixels have each RGB colour (8-bit RGB or RGBA, not interlaced)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, "only 8-bit RGB/RGBA PNGs"
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * bpp
    prior, colours = bytes(stride), Counter[tuple[int, int, int]]()
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], row, prior, bpp)
        colours.update(zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True))
        prior = bytes(row)
    return width, height, colours


def demo_like_report(directory: Path, *, tenants: int = 3, connectors: int = 8) -> Path:
    """Run a demo-like job on the emulator: every connector changed, a sync, an unknown object, an invalid line.

    Returns the report. The job, the configuration and the secrets are left in ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    job, config, report = directory / "migrate.jsonl", directory / "bulkconn.toml", directory / "migrate.report.jsonl"
    options = EmulatorOptions(tenants=tenants, connectors_per_tenant=connectors, time_scale=0.05, seed=2026)
    with EmulatorThread(options) as emu:
        write_config(emu.core, emu.ca_file, config)
        ops = write_job(emu.core, job, tenants * connectors)
        first = next(iter(emu.core.world.tenants.values()))
        connector = sorted(first.connectors)[0]
        extra = [
            {"tenant": first.alias, "id": connector, "action": "sync", "syncType": "deltaSync"},
            {"tenant": first.alias, "id": MISSING_ID, "patch": {"serverName": f"mail2.{first.domain}"}},
            {"tenant": first.alias, "id": connector, "patch": {"exchangeConnectorType": "Hosted"}},
        ]
        with job.open("ab") as out:
            out.writelines(orjson.dumps(line) + b"\n" for line in extra)
        run = execute(job, load_config(config), RunOptions(report=report), install_signals=False)
        result = asyncio.run(run)
    assert sum(result.counts.values()) == ops + len(extra), result.counts
    return report


def page_area_ok(colours: Counter[tuple[int, int, int]]) -> bool:
    """More than a blank page: many colours, and no single colour covering almost everything."""
    total = sum(colours.values())
    return len(colours) > 50 and colours.most_common(1)[0][1] < total * 0.9


def near(colours: Counter[tuple[int, int, int]], rgb: tuple[int, int, int], tolerance: float = 12.0) -> int:
    """How many pixels are within ``tolerance`` of ``rgb``."""
    return sum(count for colour, count in colours.items() if math.dist(colour, rgb) <= tolerance)
