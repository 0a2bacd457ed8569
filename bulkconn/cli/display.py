"""Progress and summaries for the terminal (part of the CLI layer: the only other module that prints).

On a terminal: a live rich display (done, failed, throttled, rate, ETA; per tenant when there are few).
Otherwise: a plain line every ``plain_every_s`` seconds. ``--quiet``: nothing until the summary.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from bulkconn.childpipe import progress_record
from bulkconn.model import Progress, tenant_order

if TYPE_CHECKING:  # rich is imported when something is drawn, not at start-up (a --quiet run draws at the end only)
    from rich.console import RenderableType
    from rich.live import Live
    from rich.table import Table

PER_TENANT_ROWS = 8


def _rate_eta(progress: Progress) -> tuple[float, str]:
    elapsed = max(time.monotonic() - progress.started, 1e-6)
    rate = progress.finished / elapsed
    left = progress.total - progress.finished
    if rate <= 0 or left <= 0:
        return rate, "-"
    seconds = int(left / rate)
    return rate, f"{seconds // 60}m{seconds % 60:02d}s"


def least_time(minutes: float) -> str:
    """The least time a tenant's write limit allows, in words: ``at least 3.5 min``, ``at least 4.4 s``."""
    if minutes >= 1:
        return f"at least {minutes:.1f} min"
    seconds = minutes * 60
    return f"at least {seconds:.1f} s" if seconds >= 0.1 else "under 0.1 s"


def skipped_phrase(skipped: int, conflicts: int) -> str:
    """``40 skipped``, or ``3 skipped (1 conflict)`` when some were left alone because they changed since."""
    if not conflicts:
        return f"{skipped} skipped"
    return f"{skipped} skipped ({conflicts} conflict{'' if conflicts == 1 else 's'})"


def progress_line(progress: Progress) -> str:
    rate, eta = _rate_eta(progress)
    done = progress.done
    return (
        f"{progress.finished}/{progress.total} done: {done['succeeded']} succeeded, {done['failed']} failed, "
        f"{done['invalid']} invalid, {done['uncertain']} uncertain, "
        f"{skipped_phrase(done['skipped'], progress.conflicts)}; {progress.throttled} throttled, "
        f"{progress.retries} retries; {rate:.1f} ops/s; ETA {eta}"
    )


def _view(progress: Progress) -> RenderableType:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    bar = Table.grid()  # a grid row ends the line, which a bare ProgressBar does not
    bar.add_row(ProgressBar(total=max(progress.total, 1), completed=progress.finished, width=60))
    parts: list[RenderableType] = [Text(progress_line(progress)), bar]
    if progress.per_tenant and len(progress.per_tenant) <= PER_TENANT_ROWS:
        table = Table(expand=False)
        for column in ("tenant", "succeeded", "failed", "other", "throttled", "paced to"):
            table.add_column(column, justify="right" if column != "tenant" else "left")
        for tenant, counts in sorted(progress.per_tenant.items()):
            other = sum(counts.values()) - counts["succeeded"] - counts["failed"]
            throttled = progress.throttled_by_tenant[tenant]
            table.add_row(
                tenant,
                str(counts["succeeded"]),
                str(counts["failed"]),
                str(other),
                str(throttled),
                _pace(progress, tenant),
            )
        parts.append(table)
    return Group(*parts)


def _pace(progress: Progress, tenant: str) -> str:
    """The write limit the tenant is paced to now: configured, or learned from 429s (``40/1.1 s``)."""
    limit = progress.limit_by_tenant.get(tenant)
    return f"{limit[0]}/{limit[1]:.3g} s" if limit else "-"


class Display:
    """Call :meth:`update` as often as you like; it decides what to show."""

    def __init__(self, *, quiet: bool, stream: TextIO | None = None, plain_every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live: Live | None = None
        self.plain_every_s = plain_every_s
        self._last_plain = -math.inf
        if not quiet and self.stream.isatty():
            from rich.live import Live

            from bulkconn.cli.console import console

            self.live = Live(console=console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()

    def update(self, progress: Progress) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(_view(progress))
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            try:
                print(progress_line(progress), file=self.stream, flush=True)
            except BrokenPipeError:
                self.quiet = True  # the reader went away (`| head`): the run goes on, the summary says 141

    def message(self, text: str) -> None:
        """A line of text above the live display (or on its own line without one); shown even with ``--quiet``."""
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


class ChildProgress:
    """The display of a ``--processes`` child: one JSON progress line on stdout per tick, for its parent."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def update(self, progress: Progress) -> None:
        self.stream.write(progress_record(progress).decode())
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


SUMMARY_TITLE = "bulkconn summary"
_STATUSES = ("succeeded", "failed", "invalid", "uncertain", "skipped")


def summary_grid(
    counts: Mapping[str, int],
    per_tenant: Mapping[str, Mapping[str, int]],
    *,
    already_final: Mapping[str, int] | None = None,
    conflicts: Mapping[str, int] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The summary's header and rows (the last row is the total): final statuses per tenant.

    ``conflicts``: the skipped operations left alone because their object changed since (a column when any);
    ``already_final``: what a resume did not redo because the report already held its result (a column when any).
    """
    extra = {"conflicts": dict(conflicts or {}), "already final": dict(already_final or {})}
    extra = {name: column for name, column in extra.items() if sum(column.values())}
    rows = []
    for tenant in sorted(set(per_tenant).union(*extra.values()), key=tenant_order):
        row = per_tenant.get(tenant, {})
        cells = [str(row.get(s, 0)) for s in _STATUSES] + [str(column.get(tenant, 0)) for column in extra.values()]
        rows.append([tenant, *cells])
    total = [counts.get(s, 0) for s in _STATUSES] + [sum(column.values()) for column in extra.values()]
    rows.append(["total", *map(str, total)])
    return ["tenant", *_STATUSES, *extra], rows


def summary_table(
    counts: Mapping[str, int],
    per_tenant: Mapping[str, Mapping[str, int]],
    *,
    already_final: Mapping[str, int] | None = None,
    conflicts: Mapping[str, int] | None = None,
) -> Table:
    """The summary as a rich table; see :func:`summary_grid`."""
    return rich_summary(*summary_grid(counts, per_tenant, already_final=already_final, conflicts=conflicts))


def rich_summary(header: list[str], rows: list[list[str]]) -> Table:
    """``summary_grid``'s header and rows as a rich table (on a terminal the total is bold)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=SUMMARY_TITLE, title_justify="left")
    table.add_column(header[0])
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows[:-1]:
        table.add_row(escape(row[0]), *row[1:])  # a tenant alias is text, never markup
    table.add_row(*(f"[b]{cell}[/b]" for cell in rows[-1]))
    return table


def drawn_plain(stream: TextIO) -> bool:
    """Whether rich would draw on ``stream`` exactly what :func:`summary_text` draws: off a terminal (no colour,
    no wrapping), with neither COLUMNS nor FORCE_COLOR set, and UTF-8 (rich falls back to ASCII boxes otherwise,
    as on a Windows log file in the ANSI code page)."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream is not a terminal
        terminal = False
    utf8 = (getattr(stream, "encoding", None) or "").lower().replace("-", "").startswith("utf")
    return utf8 and not terminal and not os.environ.get("COLUMNS") and not os.environ.get("FORCE_COLOR")


def summary_text(header: list[str], rows: list[list[str]]) -> str | None:
    """The summary drawn as rich draws it off a terminal, without importing rich (about 20 ms of a run's end).

    None when a cell is not printable ASCII: then only rich knows each character's width on screen.
    ``tests/test_display.py`` holds this to rich's own rendering, character for character.
    """
    cells = [header, *rows]
    if not all(cell.isascii() and cell.isprintable() for row in cells for cell in row):
        return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(left: str, fill: str, sep: str, right: str) -> str:
        return left + sep.join(fill * (w + 2) for w in widths) + right

    def row_line(row: list[str], bar: str) -> str:
        padded = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))]
        return bar + bar.join(f" {cell} " for cell in padded) + bar

    width = sum(widths) + 3 * len(widths) + 1
    lines = [SUMMARY_TITLE.ljust(width), line("┏", "━", "┳", "┓"), row_line(header, "┃"), line("┡", "━", "╇", "┩")]
    lines += [row_line(row, "│") for row in rows]
    lines.append(line("└", "─", "┴", "┘"))
    return "\n".join(lines) + "\n"
