"""The validation pass's block reader reads every file exactly as the line-by-line reader does."""

from __future__ import annotations

import codecs
from contextlib import closing
from pathlib import Path

import pytest

from bulkconn import jobfile
from bulkconn.jobfile import LineStream
from bulkconn.jobscan import scan_job

_LIMIT = 40  # a tiny MAX_LINE_BYTES and block size, so that lines cross blocks and outgrow the limit


def _by_lines(path: Path) -> tuple[list[tuple[int, int, bytes | None, int]], tuple[str, int, int]]:
    stream = LineStream.open(path)
    with closing(stream):
        found = [
            (n, o, None if raw is None else raw.removesuffix(b"\n"), stream.last_size if raw is None else 0)
            for n, o, raw in stream
        ]
    return found, (stream.sha256, stream.size, stream.lines)


def _by_blocks(path: Path) -> tuple[list[tuple[int, int, bytes | None, int]], tuple[str, int, int]]:
    stream = LineStream.open(path)
    with closing(stream):
        found = [(n, o, raw, stream.last_size if raw is None else 0) for n, o, raw in stream.contents()]
    return found, (stream.sha256, stream.size, stream.lines)


CASES = {
    "plain": b'{"a": 1}\n{"b": 2}\n',
    "unterminated": b'{"a": 1}\n{"b": 2}',
    "blank lines and CRLF": b'\r\n{"a": 1}\r\n\n  \n{"b": 2}\r\n',
    "one line per block and more": b"".join(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * n) for n in range(20)),
    "over-long in the middle": b'{"a": 1}\n' + b"y" * 100 + b'\n{"b": 2}\n',
    "over-long at the end": b'{"a": 1}\n' + b"y" * 100,
    "over-long first": b"z" * 95 + b"\n{}\n",
    "exactly the limit": b"q" * _LIMIT + b"\n" + b"r" * (_LIMIT + 1) + b"\n" + b"s" * _LIMIT,
    "one past the limit, unterminated": b"{}\n" + b"t" * (_LIMIT + 1),
    "only newlines": b"\n\n\n",
    "empty": b"",
}


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8], ids=["utf-8", "utf-8 with BOM"])
@pytest.mark.parametrize("name", list(CASES))
def test_blocks_read_what_lines_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, bom: bytes) -> None:
    """Same numbers, offsets, contents, over-long lines (and their sizes), hash, size and line count."""
    monkeypatch.setattr(jobfile, "MAX_LINE_BYTES", _LIMIT)
    monkeypatch.setattr(jobfile, "_MAX_WITH_NEWLINE", _LIMIT + 1)
    monkeypatch.setattr(jobfile, "_BLOCK", 16)
    path = tmp_path / "job.jsonl"
    path.write_bytes(bom + CASES[name])
    lines, whole = _by_lines(path)
    blocks, whole_by_blocks = _by_blocks(path)
    assert blocks == lines
    assert whole_by_blocks == whole


def test_an_unterminated_last_line_is_malformed_as_before(tmp_path: Path) -> None:
    """The parser's complaint about a cut-off last line reads as it did when lines kept their newline."""
    job = tmp_path / "job.jsonl"
    job.write_bytes(b'{"tenant": "contoso", "id": "x1", "patch": {"serverName": "a"}}\n{"tenant": "contoso", "id"')
    middle = tmp_path / "middle.jsonl"
    middle.write_bytes(b'{"tenant": "contoso", "id"\n{"tenant": "contoso", "id": "x1", "patch": {"serverName": "a"}}\n')
    found: list[str] = []
    scan_job(job, ["contoso"], on_invalid=lambda item: found.append(item.message), positions=False)
    scan_job(middle, ["contoso"], on_invalid=lambda item: found.append(item.message), positions=False)
    assert found == [
        "line 2: malformed JSON (unexpected end of data at the end of the line: is a } or ] missing?)",
        "line 1: malformed JSON (unexpected end of data at the end of the line: is a } or ] missing?)",
    ]
