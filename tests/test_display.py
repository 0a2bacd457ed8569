"""The progress display: rich on a terminal, plain periodic lines otherwise, nothing with --quiet."""

from __future__ import annotations

import io
from collections import Counter

from bulkconn.cli.display import Display, progress_line, summary_table
from bulkconn.model import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress() -> Progress:
    progress = Progress(total=10, throttled=2, retries=3)
    progress.done.update({"succeeded": 6, "failed": 1})
    progress.per_tenant = {"contoso": Counter({"succeeded": 6}), "fabrikam": Counter({"failed": 1})}
    progress.throttled_by_tenant["contoso"] = 2
    progress.limit_by_tenant["contoso"] = (40, 2.05)
    return progress


def test_plain_lines_when_not_a_terminal() -> None:
    """Off a terminal: one plain line per period with done, failed, throttled, rate and ETA."""
    stream = io.StringIO()
    display = Display(quiet=False, stream=stream, plain_every_s=3600)
    display.update(_progress())
    display.update(_progress())  # within the period: no second line
    display.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(progress_line(_progress()).split(";")[0])
    assert "7/10 done: 6 succeeded, 1 failed" in lines[0] and "2 throttled" in lines[0] and "ETA" in lines[0]


def test_rich_display_on_a_terminal_shows_tenants() -> None:
    """On a terminal: a live view with a per-tenant table including throttling and the limit paced to."""
    stream = _Terminal()
    display = Display(quiet=False, stream=stream)
    display.update(_progress())
    display.close()
    out = stream.getvalue()
    assert "contoso" in out and "fabrikam" in out and "throttled" in out
    assert "paced to" in out and "40/2.05 s" in out  # the write limit learned for contoso


def test_quiet_prints_nothing() -> None:
    """--quiet: no progress output at all."""
    stream = _Terminal()
    display = Display(quiet=True, stream=stream)
    display.update(_progress())
    display.close()
    assert stream.getvalue() == ""


def test_summary_table_totals() -> None:
    """The end-of-run table has a row per tenant and the totals."""
    table = summary_table(Counter({"succeeded": 6, "failed": 1}), {"contoso": {"succeeded": 6}})
    assert table.row_count == 2
