"""The progress display: rich on a terminal, plain periodic lines otherwise, nothing with --quiet."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from bulkconn.cli.display import Display, drawn_plain, progress_line, summary_grid, summary_table, summary_text
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


def _rich_text(table: object) -> str:
    """What rich writes for ``table`` off a terminal (bulkconn's own console, unwrapped)."""
    from bulkconn.cli.console import console

    out = io.StringIO()
    console(file=out).print(table)
    return out.getvalue()


@pytest.mark.parametrize(
    ("counts", "per_tenant", "extra"),
    [
        ({"succeeded": 6, "failed": 1}, {"contoso": {"succeeded": 6}, "fabrikam": {"failed": 1}}, {}),
        ({}, {}, {}),
        (
            {"succeeded": 123456, "skipped": 3},
            {"a-very-long-tenant-alias-indeed": {"succeeded": 123456}, "b": {"skipped": 3}},
            {"conflicts": {"b": 1}, "already_final": {"a-very-long-tenant-alias-indeed": 99}},
        ),
        ({"invalid": 2}, {"[red]x[/red]": {"invalid": 2}}, {"already_final": {"y": 4}}),
    ],
)
def test_plain_summary_is_what_rich_draws_off_a_terminal(
    counts: dict[str, int], per_tenant: dict[str, dict[str, int]], extra: dict[str, dict[str, int]]
) -> None:
    """A run's end off a terminal draws the table without rich: the same characters, markup-looking aliases kept."""
    grid = summary_grid(Counter(counts), per_tenant, **extra)
    assert summary_text(*grid) == _rich_text(summary_table(Counter(counts), per_tenant, **extra))
    if per_tenant:
        assert f"│ {sorted(per_tenant)[0]}" in (summary_text(*grid) or "")


def test_plain_summary_leaves_wide_characters_to_rich() -> None:
    """Only rich knows how wide a non-ASCII alias is on screen: the plain drawing declines it."""
    assert summary_text(*summary_grid(Counter({"succeeded": 1}), {"東京": {"succeeded": 1}})) is None


def test_only_a_utf8_stream_off_a_terminal_gets_the_plain_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich draws ASCII boxes on a stream that is not UTF-8 (a Windows log in cp1252): that stays rich's job."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert drawn_plain(io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert not drawn_plain(io.TextIOWrapper(io.BytesIO(), encoding="cp1252"))
    monkeypatch.setenv("COLUMNS", "80")
    assert not drawn_plain(io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
