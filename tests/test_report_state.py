"""Reading a report's state compactly gives exactly what reading every record in full gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkconn.jobscan import scan_job
from bulkconn.report import format as fmt
from bulkconn.report.keycodes import KeyCodes, KeySet, line_number
from bulkconn.report.reader import read_state, update_state

STATUSES = ("succeeded", "failed", "invalid", "skipped", "uncertain", "bogus")
keys = st.one_of(st.integers(0, 3000).map(str), st.sampled_from(["07", "+7", "a", "conn-1", "٣", " 7", "0", ""]))
lines = st.lists(
    st.one_of(
        st.tuples(st.just("result"), keys, st.sampled_from(STATUSES)),
        st.tuples(st.just("intent"), keys, st.just("")),
        st.tuples(st.just("torn"), keys, st.just("")),
    ),
    max_size=60,
)


def _write(path: Path, entries: list[tuple[str, str, str]]) -> None:
    out = [orjson.dumps({"type": "header", "format": 1, "job_sha256": "x"})]
    for kind, key, status in entries:
        if kind == "torn":
            out.append(b'{"type": "result", "key": "' + key.encode())
        elif kind == "intent":
            out.append(orjson.dumps({"type": "intent", "key": key, "tenant": "t", "id": f"id-{key}", "line": 3}))
        else:
            out.append(orjson.dumps({"type": "result", "key": key, "status": status, "request_id": "r"}))
    path.write_bytes(b"\n".join(out) + b"\n")


def _reference(path: Path) -> tuple[dict[str, str], int]:
    """Every record decoded in full: key -> 'intent' or the status the reader counts, and torn lines."""
    latest: dict[str, str] = {}
    torn = 0
    for raw in path.read_bytes().splitlines():
        record: dict[str, Any] | None = fmt.decode(raw)
        if record is None:
            torn += 1
        elif record["type"] == "intent":
            latest[str(record["key"])] = "intent"
        elif record["type"] == "result":
            status = str(record["status"])
            latest[str(record["key"])] = status if status in fmt.FINAL_STATUSES else "failed"
    return latest, torn


@settings(max_examples=60, deadline=None)
@given(entries=lines)
def test_state_matches_reading_every_record_in_full(tmp_path_factory: pytest.TempPathFactory, entries: Any) -> None:
    """Line-number and named keys alike: the same latest status per key, counts, skips and torn lines."""
    path = tmp_path_factory.mktemp("r") / "report.jsonl"
    _write(path, entries)
    expected, torn = _reference(path)
    state = read_state(path)
    assert {key: state.status_of(key) or "intent" for key in state.latest} == expected
    assert state.torn_lines == torn
    assert state.counts() == Counter("uncertain" if s == "intent" else s for s in expected.values())
    skip = state.skip_keys(retry_failed=True, recheck_invalid=False, resend_uncertain=True)
    assert skip == frozenset(k for k, s in expected.items() if s not in ("failed", "uncertain", "intent"))
    assert {k for k, *_ in state.uncertain_intents()} == {k for k, s in expected.items() if s == "intent"}


def test_update_state_reads_only_what_was_appended(tmp_path: Path) -> None:
    """After a run appends results, updating the state equals reading the whole report again."""
    path = tmp_path / "report.jsonl"
    _write(path, [("result", "1", "failed"), ("intent", "2", ""), ("result", "name", "succeeded")])
    state = read_state(path)
    with path.open("ab") as out:
        out.write(orjson.dumps({"type": "header"}) + b"\n")
        out.write(orjson.dumps({"type": "result", "key": "1", "status": "succeeded"}) + b"\n")
        out.write(orjson.dumps({"type": "result", "key": "2", "status": "uncertain"}) + b"\n{torn\n")
    fresh = read_state(path)
    update_state(state, path)
    assert dict(state.latest) == dict(fresh.latest)
    assert (
        (state.runs, state.torn_lines, state.counts())
        == (fresh.runs, fresh.torn_lines, fresh.counts())
        == (
            2,
            1,
            Counter({"succeeded": 2, "uncertain": 1}),
        )
    )


def test_key_codes_keep_only_canonical_line_numbers_in_the_array() -> None:
    """'7' is a line number; '07', '+7', ' 7', '٣' and names are other keys, each kept apart and exactly."""
    assert [line_number(k) for k in ("7", "0", "07", "+7", " 7", "٣", "", "x", str(1 << 40))] == [
        7, 0, -1, -1, -1, -1, -1, -1, -1,
    ]  # fmt: skip
    codes = KeyCodes([("7", 1), ("07", 2), ("x", 3), (str(1 << 40), 4)])
    codes["7"] = 5
    assert dict(codes) == {"7": 5, "07": 2, "x": 3, str(1 << 40): 4} and len(codes) == 4
    assert codes.get("8") is None and codes.get("8", 0) == 0 and "07" in codes and "8" not in codes
    del codes["7"], codes["x"]
    assert dict(codes) == {"07": 2, str(1 << 40): 4}
    with pytest.raises(KeyError):
        del codes["7"]
    with pytest.raises(ValueError):
        codes["9"] = 256


def test_key_set_is_a_set_view() -> None:
    """A KeySet compares, sizes and answers membership like the frozenset of the keys it admits."""
    codes = KeyCodes([("1", 1), ("2", 2), ("abc", 1), ("3", 3)])
    view: AbstractSet[str] = KeySet(codes, {2})
    assert view == frozenset({"1", "abc", "3"}) and len(view) == 3
    assert "1" in view and "2" not in view and "99" not in view and not view.__contains__(1)


def test_resumed_scan_still_reports_a_malformed_line(tmp_path: Path) -> None:
    """Lines final in the report are skipped unvalidated, but a line that is not JSON stays invalid."""
    job = tmp_path / "job.jsonl"
    job.write_text('{"tenant": "a", "id": "x1", "patch": {"serverName": "s"}}\n{not json\n')
    invalid: list[int] = []
    skip = KeySet(KeyCodes([("1", 1), ("2", 3)]), set())
    scan = scan_job(job, ["a"], on_invalid=lambda bad: invalid.append(bad.line), skip_keys=skip)
    assert (scan.skipped, scan.invalid, scan.valid, invalid) == (1, 1, 0, [2])


def test_validation_keeps_no_offsets_but_counts_the_same(tmp_path: Path) -> None:
    """`bulkconn validate` scans without positions: same counts, nothing held per line."""
    job = tmp_path / "job.jsonl"
    job.write_text("".join(f'{{"tenant": "a", "id": "x{n}", "patch": {{"serverName": "s"}}}}\n' for n in range(50)))
    full = scan_job(job, ["a"], on_invalid=lambda bad: None)
    lean = scan_job(job, ["a"], on_invalid=lambda bad: None, positions=False)
    assert (lean.valid, lean.invalid, lean.lines, lean.sha256) == (full.valid, full.invalid, full.lines, full.sha256)
    assert len(full.offsets["a"]) == 50 and lean.offsets == {}
