"""`bulkconn report show`: what a customer's handover report says, and that nothing in it can become markup."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from pathlib import Path

import orjson
from click.testing import CliRunner
from msgspec.structs import replace

from bulkconn.cli import cli
from bulkconn.fingerprint import fingerprint
from bulkconn.model import Action, ErrorInfo, Operation, Outcome, Status
from bulkconn.report import format as fmt
from bulkconn.report.handover import UNCERTAIN_WHY, change_summary, load_handover, readable_error, span
from bulkconn.report.show import render
from bulkconn.report.writer import ReportWriter

SCRIPT = "<script>document.title='pwned'</script>"
IMAGE = "<img src=x onerror=\"document.title='pwned'\">"
CONNECTOR = ["aaaaaaaa-0000-4000-8000-00000000000" + str(n) for n in range(6)]


def _outcome(line: int, tenant: str, status: Status, *, action: str = "update", error: ErrorInfo | None = None,
             http: int | None = 200, key: str = "") -> Outcome:  # fmt: skip
    return Outcome(
        key=key or str(line),
        line=line,
        tenant=tenant,
        object_id=CONNECTOR[line - 2],
        action=action,
        status=status,
        http_status=http,
        attempts=1,
        throttled=0,
        error=error,
        request_id="req-1",
        client_request_id="c-1",
        duration_ms=1500,
        finished_at=f"2026-05-04T09:30:1{line}.000Z",
    )


def _job(path: Path) -> Path:
    lines: list[dict[str, object]] = [
        {"defaults": {"patch": {"exchangeConnectorType": "serviceToService"}}},
        {"tenant": "contoso", "id": CONNECTOR[0], "patch": {"serverName": "mail2.contoso.com"}},
        {"tenant": "contoso", "id": CONNECTOR[1], "patch": {"serverName": "mail2.contoso.com"}},
        {"tenant": "contoso", "id": CONNECTOR[2], "patch": {"serverName": SCRIPT}},
        {"tenant": "fabrikam", "id": CONNECTOR[3], "action": "sync", "syncType": "deltaSync"},
        {"tenant": "fabrikam", "id": CONNECTOR[4], "action": "sync", "syncType": "fullSync"},
    ]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def sample_report(tmp: Path, *, finish: bool = True) -> Path:
    """A report of the job above: two changes, a failure whose message holds markup, a sync done, one in flight."""
    job = _job(tmp / "job.jsonl")
    report = tmp / "job.report.jsonl"
    print_ = fingerprint(job)
    failure = ErrorInfo('=HYPERLINK("x")', f"{SCRIPT} | not | a table {IMAGE}")
    with ReportWriter(report) as writer:
        writer.write(fmt.header(
            run_id="r", job=str(job), job_sha256=print_.sha256, job_bytes=print_.size, job_lines=print_.lines,
            bulkconn_version="0.1.0", started_at="2026-05-04T09:30:00.000Z", resumed=False,
            tenants=["contoso", "fabrikam"], settings={},
        ))  # fmt: skip
        writer.result(_outcome(2, "contoso", Status.FAILED, error=ErrorInfo("Timeout", "no answer"), http=None))
        writer.result(_outcome(2, "contoso", Status.SUCCEEDED))  # a later attempt of the same key wins
        writer.result(_outcome(3, "contoso", Status.SUCCEEDED))
        writer.result(_outcome(4, "contoso", Status.FAILED, error=failure, http=400, key=SCRIPT))
        writer.result(_outcome(5, "fabrikam", Status.SUCCEEDED, action="sync"))
        writer.intent(
            Operation("6", 6, "fabrikam", "exchangeConnector", CONNECTOR[4], Action.SYNC, sync_type="fullSync")
        )
        if finish:
            writer.write(fmt.summary(counts={}, interrupted=True, skipped_from_earlier_runs=0, auth_failures={},
                                     duration_s=19.5, finished_at="2026-05-04T09:30:20.000Z"))  # fmt: skip
    return report


def test_handover_says_per_tenant_what_changed_what_failed_and_what_is_uncertain(tmp_path: Path) -> None:
    """Changes come from the job lines the results name (defaults merged); failures and in-flight syncs are explained."""
    handover = load_handover(sample_report(tmp_path))
    contoso, fabrikam = handover.tenants
    assert (handover.runs, handover.state, handover.duration_s) == (1, "interrupted", 19.5)
    assert dict(contoso.counts) == {"succeeded": 2, "failed": 1} and dict(fabrikam.counts) == {
        "succeeded": 1,
        "uncertain": 1,
    }
    assert change_summary(contoso) == [
        ("exchangeConnectorType", "serviceToService", 2),
        ("serverName", "mail2.contoso.com", 2),
    ]
    assert change_summary(fabrikam) == [("sync", "deltaSync", 1)]
    failed = contoso.with_status(Status.FAILED)[0]
    assert (
        failed.change is not None
        and failed.change.describe() == f"exchangeConnectorType = serviceToService; serverName = {SCRIPT}"
    )
    assert failed.why.startswith("Rejected by Microsoft Graph: <script>")
    assert fabrikam.with_status(Status.UNCERTAIN)[0].why == UNCERTAIN_WHY
    assert contoso.started_at is not None and contoso.started_at.isoformat() == "2026-05-04T09:30:10.500000+00:00"
    assert handover.outcome() == "5 operations: 3 succeeded, 1 failed, 1 uncertain (interrupted: resume to finish)"


def test_one_tenant_only_and_an_unknown_alias_gets_a_suggestion(tmp_path: Path) -> None:
    """--tenant keeps one customer's operations; a typo names the closest alias instead of an empty report."""
    report = sample_report(tmp_path)
    assert [t.alias for t in load_handover(report, tenants=["fabrikam"]).tenants] == ["fabrikam"]
    result = CliRunner().invoke(cli, ["report", "show", str(report), "--tenant", "contosso"])
    assert result.exit_code == 2 and "did you mean 'contoso'" in result.stderr


def test_a_changed_or_missing_job_is_not_guessed_from(tmp_path: Path) -> None:
    """Line numbers only mean something in the job the report was written for: otherwise the report says why."""
    report = sample_report(tmp_path)
    (tmp_path / "job.jsonl").write_bytes(b'{"tenant": "contoso", "id": "x", "patch": {"serverName": "other"}}\n')
    changed = load_handover(report)
    assert "changed since this report was written" in changed.job_note
    assert all(row.change is None for tenant in changed.tenants for row in tenant.rows)
    (tmp_path / "job.jsonl").unlink()
    assert "is not there" in load_handover(report).job_note
    assert "Not listed: the job" in render(load_handover(report), "md")


def test_a_report_that_did_not_finish_says_so(tmp_path: Path) -> None:
    """No summary after the header: the run crashed or is still going, and the report does not claim a finish."""
    handover = load_handover(sample_report(tmp_path, finish=False))
    assert handover.state == "incomplete" and handover.finished_at == ""
    assert "| Finished | not finished |" in render(handover, "md")


def test_markdown_escapes_what_came_from_the_job_and_graph(tmp_path: Path) -> None:
    """A `<script>` or `|` in a value is shown literally: no raw tag for a ticket system, no broken table."""
    text = render(load_handover(sample_report(tmp_path)), "md")
    assert "<script>" not in text and r"\<script\>" in text
    failure_rows = [line for line in text.splitlines() if line.startswith("| 4 |")]
    assert failure_rows and all(line.count(" | ") == 4 for line in failure_rows), failure_rows
    assert "## Tenant contoso" in text and "### Uncertain" in text and "--resend-uncertain" in text


def test_csv_has_one_row_per_operation_and_no_formula_cells(tmp_path: Path) -> None:
    """Every operation's latest state is a row; a cell a spreadsheet would evaluate starts with a quote."""
    rows = list(csv.DictReader(io.StringIO(render(load_handover(sample_report(tmp_path)), "csv"))))
    assert [(r["tenant"], r["line"], r["status"]) for r in rows] == [
        ("contoso", "2", "Succeeded"), ("contoso", "3", "Succeeded"), ("contoso", "4", "Failed"),
        ("fabrikam", "5", "Succeeded"), ("fabrikam", "6", "Uncertain"),
    ]  # fmt: skip
    assert rows[2]["error_code"] == '\'=HYPERLINK("x")' and rows[2]["key"] == SCRIPT
    assert rows[3]["change"] == "sync (deltaSync)" and rows[2]["http_status"] == "400"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_shows_markup_as_text_and_loads_nothing(tmp_path: Path) -> None:
    """Every value is escaped, no script tag exists, nothing is fetched, and a policy forbids scripts anyway."""
    page = _Page()
    page.feed(render(load_handover(sample_report(tmp_path)), "html"))
    assert "script" not in page.tags and "img" not in page.tags and "link" not in page.tags
    assert all(link.startswith("#") for link in page.links), page.links
    assert SCRIPT in "".join(page.text)  # shown, as text
    assert "Content-Security-Policy" in render(load_handover(sample_report(tmp_path)), "html")


def test_cli_writes_the_file_and_csv_opens_in_excel(tmp_path: Path) -> None:
    """-o writes the file (CSV with the byte order mark Excel needs for UTF-8); a missing report is exit 2."""
    report = sample_report(tmp_path)
    out = tmp_path / "handover.csv"
    result = CliRunner().invoke(cli, ["report", "show", str(report), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\xef\xbb\xbftenant,line,")
    stdout = CliRunner().invoke(cli, ["report", "show", str(report), "--tenant", "fabrikam"])
    assert stdout.exit_code == 0 and "## Tenant fabrikam" in stdout.stdout and "contoso" not in stdout.stdout
    missing = CliRunner().invoke(cli, ["report", "show", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such report" in missing.stderr


def test_errors_read_as_reasons() -> None:
    """The kind of problem first, then Graph's words; a message that already says it is not repeated."""
    assert readable_error("ResourceNotFound", "no such connector", 404) == "Not found in this tenant: no such connector"
    assert readable_error("Timeout", "no answer in 30 s", None) == "No answer from Microsoft Graph: no answer in 30 s"
    auth = readable_error("invalid_client", "authentication failed for tenant 'x': bad secret", None)
    assert auth == "Sign-in to the tenant failed, nothing was sent: authentication failed for tenant 'x': bad secret"
    assert readable_error("Forbidden", "permission missing for tenant 'x'", 403) == "Permission missing for tenant 'x'"
    assert readable_error("", "", 503).startswith("Microsoft Graph service error")
    assert [span(0.01), span(0.42), span(42), span(200), span(7500)] == [
        "under 0.1 s",
        "0.4 s",
        "42 s",
        "3 min 20 s",
        "2 h 5 min",
    ]


def test_an_odata_type_in_a_patch_is_not_shown_as_a_change(tmp_path: Path) -> None:
    """An undo or export line naming the object's @odata.type: what changed lists the properties only."""
    job = tmp_path / "undo.jsonl"
    patch = {"@odata.type": "#microsoft.graph.deviceManagementExchangeConnector", "serverName": "mail1.contoso.com"}
    job.write_bytes(orjson.dumps({"tenant": "contoso", "id": CONNECTOR[0], "patch": patch}) + b"\n")
    report = tmp_path / "undo.report.jsonl"
    print_ = fingerprint(job)
    with ReportWriter(report) as writer:
        writer.write(fmt.header(
            run_id="r", job=str(job), job_sha256=print_.sha256, job_bytes=print_.size, job_lines=print_.lines,
            bulkconn_version="0.1.0", started_at="2026-05-04T09:30:00.000Z", resumed=False, tenants=["contoso"],
            settings={},
        ))  # fmt: skip
        writer.result(replace(_outcome(2, "contoso", Status.SUCCEEDED), key="1", line=1))
    (contoso,) = load_handover(report).tenants
    assert change_summary(contoso) == [("serverName", "mail1.contoso.com", 1)]
    assert "odata" not in render(load_handover(report), "csv")
