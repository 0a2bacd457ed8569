"""``bulkconn report show``: a handover report in Markdown (tickets, email), CSV (one row per operation) or HTML.

What the report says comes from :mod:`bulkconn.report.handover`; this module only writes it down, escaping
every value that came from a job, a tenant or Graph: Markdown backslash-escapes its punctuation (so a
``<script>`` in an error message is shown, not run, where the ticket renders HTML), CSV neutralises cells
that a spreadsheet would take for a formula, and HTML (:mod:`bulkconn.report.show_html`) escapes everything.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

from bulkconn.model import Status
from bulkconn.report.handover import (
    CONFLICTS_NOTE,
    CONFLICTS_TITLE,
    UNASSIGNED_NOTE,
    UNASSIGNED_TITLE,
    UNCHANGED_TITLE,
    Handover,
    Row,
    TenantReport,
    change_summary,
    when,
)
from bulkconn.report.show_html import render_html

FORMATS = ("md", "html", "csv")
LISTED_PER_TENANT = 500  # rows per table in Markdown and HTML; the CSV always lists every operation
CSV_COLUMNS = (
    "tenant", "line", "key", "object_id", "resource", "action", "change", "status", "reason", "http_status",
    "attempts", "throttled", "error_code", "error_message", "finished_at", "duration_ms", "request_id",
)  # fmt: skip
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP "CSV injection": a spreadsheet would evaluate these


def render(handover: Handover, fmt: str) -> str:
    """The handover report in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "csv":
        return render_csv(handover)
    if fmt == "html":
        return render_html(handover, listed=LISTED_PER_TENANT)
    return render_md(handover)


def md(text: object) -> str:
    """Text for a Markdown table cell: one line, punctuation escaped, so nothing in it becomes markup or HTML."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _md_table(head: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _more(total: int, listed: int) -> list[str]:
    if total <= listed:
        return []
    return [f"... and {total - listed} more; `--format csv` lists every operation.", ""]


def _md_header(handover: Handover) -> list[str]:
    rows: list[tuple[object, ...]] = [
        ("Job", handover.job),
        ("Report", handover.report),
        ("Started", when(handover.started_at)),
        ("Finished", when(handover.finished_at) if handover.state != "incomplete" else "not finished"),
        ("Running time", handover.runs_phrase()),
        ("Outcome", handover.outcome()),
    ]
    return [f"# Change report: {md(handover.job.name)}", "", *_md_table(("", ""), rows)]


def _md_rows(rows: list[Row], listed: int) -> list[tuple[object, ...]]:
    return [(r.line, r.object_id, _change_text(r), r.why, r.attempts) for r in rows[:listed]]


def _change_text(row: Row) -> str:
    return row.change.describe() if row.change else row.action


def _md_tenant(tenant: TenantReport, handover: Handover) -> Iterator[str]:
    yield f"## Tenant {md(tenant.alias)}"
    yield ""
    yield (f"{tenant.outcome()}. First change {when(tenant.started_at)}, last {when(tenant.finished_at)}.")
    yield ""
    changes = change_summary(tenant)
    yield "### What changed"
    yield ""
    if handover.job_note:
        yield md(f"Not listed: {handover.job_note}.")
        yield ""
    elif changes:
        yield from _md_table(("Property", "New value", "Objects"), list(changes))
    else:
        yield "Nothing was changed."
        yield ""
    problems = tenant.with_status(Status.FAILED, Status.INVALID)
    if problems:
        yield "### What failed, and why"
        yield ""
        grouped = tenant.reasons()
        if len(grouped) < len(problems):  # many operations share few reasons: say each reason once first
            yield from (f"- {count} x {md(why)}" for why, count in grouped.most_common(5))
            yield ""
        yield from _md_table(("Line", "Object", "Change", "Why", "Attempts"), _md_rows(problems, LISTED_PER_TENANT))
        yield from _more(len(problems), LISTED_PER_TENANT)
    yield from _md_skipped(tenant)
    uncertain = tenant.with_status(Status.UNCERTAIN)
    if uncertain:
        yield "### Uncertain"
        yield ""
        yield md(uncertain[0].why)
        yield ""
        yield from _md_table(
            ("Line", "Object", "Change", "Sent at"),
            [(r.line, r.object_id, _change_text(r), when(r.finished_at)) for r in uncertain[:LISTED_PER_TENANT]],
        )
        yield from _more(len(uncertain), LISTED_PER_TENANT)
    done = tenant.with_status(Status.SUCCEEDED)
    if done:
        yield "### Changed objects"
        yield ""
        yield from _md_table(
            ("Line", "Object", "Change", "Finished"),
            [(r.line, r.object_id, _change_text(r), when(r.finished_at)) for r in done[:LISTED_PER_TENANT]],
        )
        yield from _more(len(done), LISTED_PER_TENANT)


def _md_skipped(tenant: TenantReport) -> Iterator[str]:
    """The operations not sent: conflicts (a problem) with what was found, then those already as asked."""
    head = ("Line", "Object", "Change", "Why")
    for title, note, rows in (
        (CONFLICTS_TITLE, CONFLICTS_NOTE, tenant.conflicts),
        (UNCHANGED_TITLE, "", tenant.unchanged),
    ):
        if not rows:
            continue
        yield f"### {title}"
        yield ""
        if note:
            yield md(note)
            yield ""
        yield from _md_table(head, [(r.line, r.object_id, _change_text(r), r.why) for r in rows[:LISTED_PER_TENANT]])
        yield from _more(len(rows), LISTED_PER_TENANT)


def render_md(handover: Handover) -> str:
    """Markdown for a ticket or an email: the run, then per tenant what changed, what failed and why."""
    lines = _md_header(handover)
    for tenant in handover.tenants:
        lines += list(_md_tenant(tenant, handover))
    if handover.unassigned:
        rows: list[tuple[object, ...]] = [
            (r.line, r.tenant or "(none)", r.object_id, r.why) for r in handover.unassigned[:LISTED_PER_TENANT]
        ]
        lines += [f"## {UNASSIGNED_TITLE}", "", md(UNASSIGNED_NOTE), ""]
        lines += _md_table(("Line", "Tenant", "Object", "Why"), rows)
        lines += _more(len(handover.unassigned), LISTED_PER_TENANT)
    lines.append(f"_Written by bulkconn {md(handover.bulkconn_version)} from {md(handover.report)}._")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a leading ``=``, ``+``, ``-`` or ``@`` gets a quote in front."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_row(row: Row) -> tuple[object, ...]:
    change = row.change
    return (
        row.tenant, row.line, row.key, row.object_id, change.resource if change else "", row.action,
        _change_text(row) if change else "", row.label, row.why,
        "" if row.http_status is None else row.http_status, row.attempts, row.throttled, row.error_code,
        row.error_message, row.finished_at, row.duration_ms, row.request_id,
    )  # fmt: skip


def render_csv(handover: Handover) -> str:
    """One row per operation (every one, tenant by tenant in job order), with a header row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # as Excel writes CSV
    writer.writerow(CSV_COLUMNS)
    for rows in [*(tenant.rows for tenant in handover.tenants), handover.unassigned]:
        writer.writerows(tuple(_cell(value) for value in _csv_row(row)) for row in rows)
    return out.getvalue()
