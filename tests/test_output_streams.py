"""Where output goes: a reader that went away is exit 141 everywhere, and output that is not a terminal is not wrapped."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from bulkconn.cli.console import console
from bulkconn.cli.display import Display
from bulkconn.model import Progress
from tests.conftest import World, launch, read_report
from tests.test_report_show import sample_report


class _GoneReader(io.StringIO):
    """A stream whose reader went away: every write fails as a closed pipe does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_table_to_a_closed_pipe_is_a_broken_pipe_not_exit_1() -> None:
    """rich's own handling (SystemExit(1)) is replaced: the CLI sees BrokenPipeError and exits 141."""
    with pytest.raises(BrokenPipeError):
        console(file=_GoneReader()).print("bulkconn summary")


def test_progress_to_a_reader_that_went_away_stops_the_display_not_the_run() -> None:
    """A progress line that meets a closed pipe ends the display quietly; the run itself goes on."""
    display = Display(quiet=False, stream=_GoneReader(), plain_every_s=0)
    display.update(Progress(total=3))
    display.update(Progress(total=3))  # no second attempt, no exception
    assert display.quiet


def test_output_that_is_not_a_terminal_is_not_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report summary > file`: the first line is whole, not cut at 80 columns mid-sentence."""
    monkeypatch.delenv("COLUMNS", raising=False)
    report = sample_report(tmp_path)
    result = CliRunner().invoke(cli, ["report", "summary", str(report)], env={"COLUMNS": None})
    first = result.stdout.splitlines()[0]
    assert len(first) > 80 and first.endswith("2026-05-04T09:30:20.000Z"), result.stdout
    stream = io.StringIO()
    console(file=stream).print("x " * 100)
    assert stream.getvalue().count("\n") == 1


def _closed_pipe_run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run ``python -m bulkconn ARGS`` with stdout and stderr into a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(launch("", *args), stdout=write_end, stderr=write_end, cwd=cwd, env=env, timeout=60)
    finally:
        os.close(write_end)
    return proc.returncode


def _first_line_then_close(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """``bulkconn ARGS | head -1``: read one line, close the pipe, wait."""
    proc = subprocess.Popen(launch("", *args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    return proc.wait(timeout=60), first


@pytest.mark.e2e
def test_report_summary_and_show_to_a_reader_that_went_away_exit_141(tmp_path: Path) -> None:
    """`report summary R | head -1` and `report show R --format csv | head -1` (a long CSV) both exit 141."""
    report = sample_report(tmp_path)
    assert _closed_pipe_run(["report", "summary", str(report)], tmp_path) == 141
    big = tmp_path / "big.report.jsonl"
    lines = report.read_bytes().splitlines(keepends=True)
    result = next(line for line in lines if b'"type":"result"' in line)
    many = [result.replace(b'"key":"2"', f'"key":"k{n}"'.encode()) for n in range(8000)]  # about 3 MB of CSV
    big.write_bytes(lines[0] + b"".join(many))
    code, first = _first_line_then_close(["report", "show", str(big), "--format", "csv"], tmp_path)
    assert first.startswith(b"\xef\xbb\xbftenant,line,") or first.startswith(b"tenant,line,")
    assert code == 141


@pytest.mark.e2e
def test_a_run_whose_output_reader_went_away_finishes_and_exits_141(world: World) -> None:
    """`bulkconn run JOB 2>&1 | head -1`: every operation still runs and the report ends with its summary."""
    code = _closed_pipe_run(["run", "job.jsonl", "--config", "bulkconn.toml"], world.dir, env=world.env())
    assert code == 141
    _, results, summary = read_report(world.dir / "job.report.jsonl")
    assert len(results) == 40 and summary["counts"] == {"succeeded": 40}
