"""A resumed scan counts the lines its report proves valid and final without checking them again: same counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn import __version__, jobscan
from bulkconn.errors import JobError, ResumeError
from bulkconn.fingerprint import fingerprint
from bulkconn.jobline import LineParser
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.report.keycodes import KeyCodes, KeySet
from bulkconn.resume import plan_resume
from bulkconn.shards import operation_counts

TENANTS = ["contoso", "fabrikam", "northwind"]
PATCH = {"serverName": "mail.example.com"}
# line -> latest status in the report (lines not listed have no result yet)
STATUSES = {1: "succeeded", 2: "failed", 3: "invalid", 4: "skipped", 5: "uncertain", 7: "succeeded", 9: "succeeded"}


LINES: list[Any] = [
    {"tenant": "contoso", "id": "a1", "patch": PATCH},
    {"tenant": "fabrikam", "id": "a2", "patch": PATCH},
    {"tenant": "contoso", "id": "a3", "patch": {"serverName": 1}},  # invalid, recorded as such
    {"tenant": "northwind", "id": "a4", "action": "sync", "syncType": "fullSync"},
    {"tenant": "fabrikam", "id": "a5", "patch": PATCH},
    {"tenant": "contoso", "id": "a6", "patch": PATCH},
    {"tenant": "northwind", "id": "a7", "patch": PATCH, "key": "named"},  # keyed: checked in full
    {"tenant": "northwind", "id": "a8", "patch": PATCH},
    {"tenant": "fabrikam", "id": "a9", "patch": PATCH},
]


def _job(path: Path, lines: list[Any] = LINES) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def _report(
    path: Path,
    job: Path,
    *,
    headers: list[dict[str, Any]] | None = None,
    tenants: bool = True,
    lines: list[Any] = LINES,
    statuses: dict[int, str] = STATUSES,
) -> Path:
    """A report of ``job`` with STATUSES' results; ``tenants=False``: results that name no tenant (nothing known)."""
    sha = fingerprint(job).sha256
    heads = headers or [{"job_sha256": sha, "bulkconn_version": __version__}]
    records: list[dict[str, Any]] = [{"type": "header", "format": 1, "tenants": TENANTS, **h} for h in heads]
    for line, status in statuses.items():
        key = lines[line - 1].get("key", str(line))
        tenant = {"tenant": lines[line - 1].get("tenant", "contoso")} if tenants else {}
        records.append({"type": "result", "key": key, "line": line, "status": status, **tenant})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _resume_scan(job: Path, report: Path, *, tenants: list[str] = TENANTS, **redo: bool) -> tuple[JobScan, KeySet]:
    flags = {"retry_failed": False, "recheck_invalid": False, "resend_uncertain": False, "force": False, **redo}
    plan = plan_resume(job, report, **flags)
    assert isinstance(plan.skip_keys, KeySet)
    return scan_job(job, tenants, on_invalid=lambda item: None, skip_keys=plan.skip_keys), plan.skip_keys


def _counts(scan: JobScan) -> tuple[Any, ...]:
    return (
        scan.valid,
        scan.invalid,
        scan.skipped,
        scan.skipped_by_tenant,
        operation_counts(scan),
        scan.offsets,
        scan.line_numbers,
    )


def _without_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line read and checked in full, as before the proof (nothing is counted on sight)."""
    monkeypatch.setattr(jobscan, "_proof", lambda skip_keys: None)
    monkeypatch.setattr(LineParser, "plain_tenant", lambda self, data: None)


@pytest.mark.parametrize("tenants", [True, False], ids=["results name tenants", "results name none"])
@pytest.mark.parametrize(
    "redo",
    [{}, {"retry_failed": True}, {"recheck_invalid": True}, {"resend_uncertain": True}],
    ids=["plain", "retry-failed", "recheck-invalid", "resend-uncertain"],
)
def test_proven_counts_equal_a_full_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redo: dict[str, Any], tenants: bool
) -> None:
    """Per-tenant counts (the shard partition's input), skips and offsets are those of checking every line."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job, tenants=tenants)
    proven, keys = _resume_scan(job, report, **redo)
    assert keys.proof is not None
    _without_proof(monkeypatch)
    full, _ = _resume_scan(job, report, **redo)
    assert _counts(proven) == _counts(full)
    assert proven.skipped > 0


def test_only_valid_final_results_prove_a_line(tmp_path: Path) -> None:
    """An 'invalid' result, a result done again (--retry-failed) or no result at all proves nothing."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job)
    _, keys = _resume_scan(job, report, retry_failed=True)
    assert keys.proof is not None
    assert [n for n in range(12) if n in keys.proof] == [1, 4, 5, 9]  # 2 failed (redone), 3 invalid, 7 keyed


@pytest.mark.parametrize(
    "other",
    [{"job_sha256": "0" * 64, "bulkconn_version": __version__}, {"bulkconn_version": "0.0.1"}],
    ids=["a forced run of another job", "another version"],
)
def test_a_report_with_another_run_proves_nothing(tmp_path: Path, other: dict[str, Any]) -> None:
    """When any run read another job (resumed with --force) or ran another bulkconn, every line is checked."""
    job = _job(tmp_path / "job.jsonl")
    sha = fingerprint(job).sha256
    first = {"job_sha256": sha, "bulkconn_version": __version__}
    report = _report(tmp_path / "job.report.jsonl", job, headers=[first, {**first, **other}])
    scan, keys = _resume_scan(job, report)
    assert keys.proof is None
    assert scan.skipped == 7  # every line with a result: checked in full, skipped all the same


def test_an_edited_job_is_still_refused(tmp_path: Path) -> None:
    """Resuming against a changed job is refused before any line is counted (unless --force, then checked in full)."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job)
    job.write_bytes(job.read_bytes().replace(b'"a1"', b'"b1"'))
    with pytest.raises(ResumeError, match="the job file changed"):
        _resume_scan(job, report)
    _, keys = _resume_scan(job, report, force=True)
    assert keys.proof is None


def test_a_job_replaced_after_planning_stops_the_scan(tmp_path: Path) -> None:
    """A job edited between reading the report and scanning is refused: its hash is not the proof's."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job)
    plan = plan_resume(job, report, retry_failed=False, recheck_invalid=False, resend_uncertain=False, force=False)
    job.write_bytes(job.read_bytes().replace(b'"a6"', b'"b6"'))
    with pytest.raises(JobError, match="changed while it was being validated"):
        scan_job(job, TENANTS, on_invalid=lambda item: None, skip_keys=plan.skip_keys)


def test_a_tenant_no_longer_configured_is_checked_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proven line whose tenant left the configuration counts as the full check counts it (not an operation)."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job)
    proven, _ = _resume_scan(job, report, tenants=["contoso", "northwind"])
    _without_proof(monkeypatch)
    full, _ = _resume_scan(job, report, tenants=["contoso", "northwind"])
    assert _counts(proven) == _counts(full)
    assert "fabrikam" not in operation_counts(proven)


def test_proven_lines_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line the report proves (its tenant named) is counted without being parsed; the first line always is."""
    job = _job(tmp_path / "job.jsonl")
    report = _report(tmp_path / "job.report.jsonl", job)
    parsed: list[bytes] = []
    loads = orjson.loads

    def counted(content: bytes | str) -> Any:
        parsed.append(content if isinstance(content, bytes) else content.encode())
        return loads(content)

    monkeypatch.setattr(orjson, "loads", counted)
    scan, _ = _resume_scan(job, report)
    ids = sorted(found["id"] for found in map(loads, parsed) if "id" in found)  # job lines, not the report's
    # a1: the first line; a3: invalid; a4: a skip (the reader keeps no tenant for it); a6, a8: no result; a7: keyed
    assert ids == ["a1", "a3", "a4", "a6", "a7", "a8"]
    assert scan.skipped == 7


@pytest.mark.parametrize("broken_first", [False, True], ids=["proven first line", "malformed, then proven"])
def test_a_defaults_line_after_a_proven_first_line_stays_misplaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_first: bool
) -> None:
    """The first readable line is read even when proven: a later defaults line is still not the defaults."""
    lines: list[Any] = [LINES[0], {"defaults": {"tenant": "fabrikam"}}, *LINES[2:]]
    lines[6 - 1] = {"id": "a6", "patch": PATCH}  # a line whose tenant would come from defaults
    statuses = {**STATUSES, 2: "invalid"}  # as a run records it: the misplaced defaults line is invalid
    job = _job(tmp_path / "job.jsonl", lines)
    if broken_first:  # a line that cannot be read comes first: it does not decide where the defaults may be
        job.write_bytes(b"{broken\n" + job.read_bytes())
        lines = [{}, *lines]
        statuses = {1: "invalid", **{line + 1: status for line, status in statuses.items()}}
    report = _report(tmp_path / "job.report.jsonl", job, lines=lines, statuses=statuses)
    proven, _ = _resume_scan(job, report)
    _without_proof(monkeypatch)
    full, _ = _resume_scan(job, report)
    assert _counts(proven) == _counts(full)
    assert proven.defaults == {}


def test_a_csv_job_resumes_with_the_same_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spreadsheet's rows are read as always; the proof still spares their checks, with the same counts."""
    job = tmp_path / "job.csv"
    rows = [
        f"{line['tenant']},{line['id']},mail.example.com" for line in LINES if "patch" in line and "key" not in line
    ]
    job.write_text("tenant,id,serverName\n" + "\n".join(rows) + "\n")
    csv_lines = [{"tenant": r.split(",")[0]} for r in rows]
    statuses = {2: "succeeded", 3: "failed", 5: "succeeded", 7: "uncertain", 8: "succeeded"}
    report = _report(tmp_path / "job.report.jsonl", job, lines=[{}, *csv_lines], statuses=statuses)  # row N: line N+1
    proven, keys = _resume_scan(job, report)
    assert keys.proof is not None
    _without_proof(monkeypatch)
    full, _ = _resume_scan(job, report)
    assert _counts(proven) == _counts(full)


def test_key_codes_keep_a_tenant_per_line_until_set_otherwise() -> None:
    """Two bytes a line, as long as the codes; a line set without its tenant (take()'s path) forgets it."""
    codes = KeyCodes()
    codes.set_line(3, 1, "contoso")
    codes.set_line(1000, 1, "fabrikam")
    codes.set_line(5, 1, "contoso")
    tenants = codes.line_tenants()
    assert len(tenants) == len(codes._lines)
    names = [codes.tenant_names[tenants[n]] for n in (3, 5, 1000, 4)]
    assert names == ["contoso", "contoso", "fabrikam", ""]
    codes["5"] = 2
    del codes["3"]
    assert (tenants[5], tenants[3], codes.tenant_names[tenants[1000]]) == (0, 0, "fabrikam")
