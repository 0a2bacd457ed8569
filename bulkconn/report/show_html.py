"""The handover report as one self-contained HTML page: inline CSS, no script, no external asset.

Every value that came from a job, a tenant or Graph goes through :func:`html.escape`, and the page carries a
Content-Security-Policy that allows no script and no remote load at all, so an object name or error message
holding ``<script>`` is shown as text and could not run even if escaping were missed.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator

from bulkconn.model import Status
from bulkconn.report.handover import (
    CONFLICTS_NOTE,
    CONFLICTS_TITLE,
    STATUS_LABEL,
    STATUS_ORDER,
    UNASSIGNED_NOTE,
    UNASSIGNED_TITLE,
    UNCHANGED_TITLE,
    Handover,
    Row,
    TenantReport,
    change_summary,
    span,
    when,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
CSS = """
:root { --ink:#1b2430; --muted:#5b6675; --line:#e3e7ed; --bg:#f4f6f9; --navy:#13294b; --accent:#2f6fde;
  --ok:#1e7b46; --ok-bg:#e4f4ea; --bad:#b42318; --bad-bg:#fdecea; --warn:#9a5b00; --warn-bg:#fff4df;
  --skip:#6b7280; --skip-bg:#eef0f3; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.5 "Segoe UI", -apple-system, "Helvetica Neue", Arial,
  "Liberation Sans", system-ui, sans-serif; }
.wrap { max-width:1120px; margin:0 auto; padding:0 28px; }
header.top { background:var(--navy); color:#fff; padding:26px 0 24px; }
header.top .eyebrow { text-transform:uppercase; letter-spacing:.08em; font-size:11px; opacity:.75; }
header.top h1 { margin:4px 0 2px; font-size:26px; font-weight:600; }
header.top .sub { margin:0; opacity:.85; }
main.wrap { padding-top:22px; padding-bottom:8px; }
.cards { display:grid; grid-template-columns:repeat(5, 1fr); gap:14px; margin-bottom:18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
.card .label { color:var(--muted); font-size:12px; }
.card .value { font-size:24px; font-weight:600; }
.card.ok .value { color:var(--ok); } .card.bad .value { color:var(--bad); } .card.warn .value { color:var(--warn); }
.panel { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin-bottom:18px; }
.panel h2 { margin:0 0 10px; font-size:18px; font-weight:600; }
h3 { margin:18px 0 8px; font-size:14px; font-weight:600; color:var(--navy); }
dl.facts { display:grid; grid-template-columns:140px 1fr; gap:4px 16px; margin:0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; word-break:break-all; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; font-weight:600; color:var(--muted); border-bottom:2px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.id { font-family:"Cascadia Mono", Consolas, "DejaVu Sans Mono", monospace; font-size:12px; white-space:nowrap; }
td.why { color:var(--bad); }
.pill { display:inline-block; border-radius:999px; padding:1px 10px; font-size:12px; font-weight:600; }
.pill.succeeded { color:var(--ok); background:var(--ok-bg); } .pill.failed, .pill.invalid { color:var(--bad);
  background:var(--bad-bg); } .pill.uncertain { color:var(--warn); background:var(--warn-bg); }
.pill.skipped { color:var(--skip); background:var(--skip-bg); }
.tenant-head { display:flex; align-items:baseline; gap:12px; }
.meta { color:var(--muted); margin:2px 0 10px; }
.bar { display:flex; height:8px; border-radius:4px; overflow:hidden; background:var(--skip-bg); margin:8px 0 4px; }
.bar span.succeeded { background:var(--ok); } .bar span.failed, .bar span.invalid { background:var(--bad); }
.bar span.uncertain { background:#e0a030; } .bar span.skipped { background:#b7bdc6; }
.callout { background:var(--warn-bg); border-left:4px solid #e0a030; padding:8px 12px; border-radius:4px; }
.note { color:var(--muted); font-style:italic; }
ul.reasons { margin:0 0 8px; padding-left:18px; } ul.reasons li { color:var(--bad); }
details summary { cursor:pointer; color:var(--accent); margin:14px 0 6px; font-weight:600; }
a { color:var(--accent); text-decoration:none; }
footer { color:var(--muted); font-size:12px; padding:8px 0 28px; }
@media print { body { background:#fff; } .panel, .card { border-color:#ccc; } details { display:block; }
  header.top { background:#fff; color:var(--ink); border-bottom:2px solid var(--navy); } }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], numeric: frozenset[int] = frozenset()) -> str:
    """A table whose cells are already HTML (escape values with :func:`_e` or :func:`_td` first)."""
    cells = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


def _pill(status: str, text: str = "") -> str:
    return f'<span class="pill {_e(status)}">{_e(text or STATUS_LABEL.get(status, status))}</span>'


def _change(row: Row) -> str:
    return row.change.describe() if row.change else row.action


def _more(total: int, listed: int) -> str:
    if total <= listed:
        return ""
    return f'<p class="note">... and {total - listed} more; <code>--format csv</code> lists every operation.</p>'


def _cards(handover: Handover) -> str:
    counts = handover.counts
    problems = counts.get(Status.FAILED, 0) + counts.get(Status.INVALID, 0) + handover.conflicts
    cards = [
        ("", "Operations", sum(counts.values())),
        ("ok", "Succeeded", counts.get(Status.SUCCEEDED, 0)),
        ("bad" if problems else "", "Failed or not sent", problems),
        ("warn" if counts.get(Status.UNCERTAIN) else "", "Uncertain", counts.get(Status.UNCERTAIN, 0)),
        ("", "Running time", span(handover.duration_s)),
    ]
    inner = "".join(
        f'<div class="card {cls}"><div class="label">{label}</div><div class="value">{_e(value)}</div></div>'
        for cls, label, value in cards
    )
    return f'<section class="cards">{inner}</section>'


def _run_panel(handover: Handover) -> str:
    finished = when(handover.finished_at) if handover.state != "incomplete" else "not finished"
    facts = [
        ("Job", handover.job),
        ("Report", handover.report),
        ("Started", when(handover.started_at)),
        ("Finished", finished),
        ("Running time", handover.runs_phrase()),
        ("Outcome", handover.outcome()),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    note = f'<p class="note">{_e(handover.job_note)}.</p>' if handover.job_note else ""
    return f'<section class="panel"><h2>Run</h2><dl class="facts">{items}</dl>{note}</section>'


def _tenant_index(handover: Handover) -> str:
    rows = []
    for n, tenant in enumerate(handover.tenants):
        counts = tenant.counts
        rows.append(
            [f'<td><a href="#t{n}">{_e(tenant.alias)}</a></td>']
            + [f'<td class="num">{counts.get(s, 0)}</td>' for s in STATUS_ORDER]
            + [_td(when(tenant.started_at)), _td(when(tenant.finished_at))]
        )
    head = ["Tenant", *(STATUS_LABEL[s] for s in STATUS_ORDER), "First change", "Last change"]
    table = _table(head, rows, numeric=frozenset(range(1, 6)))
    return f'<section class="panel"><h2>Tenants</h2>{table}</section>'


def _bar(tenant: TenantReport) -> str:
    counts, total = tenant.counts, max(1, len(tenant.rows))
    spans = "".join(
        f'<span class="{s}" style="width:{100 * counts[s] / total:.2f}%"></span>' for s in STATUS_ORDER if counts[s]
    )
    return f'<div class="bar" aria-hidden="true">{spans}</div>'


def _headline(tenant: TenantReport) -> str:
    counts = tenant.counts
    bad = counts.get(Status.FAILED, 0) + counts.get(Status.INVALID, 0) + len(tenant.conflicts)
    if bad:
        return _pill(Status.FAILED, f"{bad} not changed")
    if counts.get(Status.UNCERTAIN):
        return _pill(Status.UNCERTAIN, f"{counts[Status.UNCERTAIN]} uncertain")
    if counts.get(Status.SUCCEEDED) == len(tenant.rows) and tenant.rows:
        return _pill(Status.SUCCEEDED, "All succeeded")
    return _pill(Status.SKIPPED, "Nothing done" if not counts.get(Status.SUCCEEDED) else "Done")


def _changed(tenant: TenantReport, handover: Handover) -> str:
    if handover.job_note:
        return f'<h3>What changed</h3><p class="note">Not listed: {_e(handover.job_note)}.</p>'
    summary = change_summary(tenant)
    if not summary:
        return '<h3>What changed</h3><p class="note">Nothing was changed.</p>'
    rows = [[_td(name), _td(value), _td(count, "num")] for name, value, count in summary]
    return "<h3>What changed</h3>" + _table(["Property", "New value", "Objects"], rows, numeric=frozenset({2}))


def _failed(tenant: TenantReport, listed: int) -> str:
    problems = tenant.with_status(Status.FAILED, Status.INVALID)
    if not problems:
        return ""
    grouped = tenant.reasons()
    # A list of reasons helps when many operations share few; with one operation per reason it only repeats the table.
    shown = grouped.most_common(5) if len(grouped) < len(problems) else []
    reasons = "".join(f"<li>{count} &times; {_e(why)}</li>" for why, count in shown)
    rows = [
        [_td(r.line, "num"), _td(r.object_id, "id"), _td(_change(r)), _td(r.why, "why"), _td(r.attempts, "num")]
        for r in problems[:listed]
    ]
    table = _table(["Line", "Object", "Change", "Why", "Attempts"], rows, numeric=frozenset({0, 4}))
    reasons = f'<ul class="reasons">{reasons}</ul>' if reasons else ""
    return f"<h3>What failed, and why</h3>{reasons}{table}{_more(len(problems), listed)}"


def _skipped(tenant: TenantReport, listed: int) -> str:
    """The operations not sent: conflicts (a problem) with what was found, then those already as asked."""
    parts = []
    for title, note, rows_in in (
        (CONFLICTS_TITLE, CONFLICTS_NOTE, tenant.conflicts),
        (UNCHANGED_TITLE, "", tenant.unchanged),
    ):
        if not rows_in:
            continue
        rows = [[_td(r.line, "num"), _td(r.object_id, "id"), _td(_change(r)), _td(r.why)] for r in rows_in[:listed]]
        callout = f'<p class="callout">{_e(note)}</p>' if note else ""
        table = _table(["Line", "Object", "Change", "Why"], rows, numeric=frozenset({0}))
        parts.append(f"<h3>{_e(title)}</h3>{callout}{table}{_more(len(rows_in), listed)}")
    return "".join(parts)


def _uncertain(tenant: TenantReport, listed: int) -> str:
    rows_in = tenant.with_status(Status.UNCERTAIN)
    if not rows_in:
        return ""
    rows = [[_td(r.line, "num"), _td(r.object_id, "id"), _td(_change(r)), _td(when(r.finished_at))] for r in rows_in]
    table = _table(["Line", "Object", "Change", "Sent at"], rows[:listed], numeric=frozenset({0}))
    callout = f'<p class="callout">{_e(rows_in[0].why)}</p>'
    return f"<h3>Uncertain</h3>{callout}{table}{_more(len(rows_in), listed)}"


def _every(tenant: TenantReport, listed: int) -> str:
    rows = [
        [
            _td(r.line, "num"),
            _td(r.object_id, "id"),
            _td(_change(r)),
            f"<td>{_pill(r.status, r.label)}</td>",
            _td(when(r.finished_at)),
            _td(r.attempts, "num"),
        ]
        for r in tenant.rows[:listed]
    ]
    table = _table(["Line", "Object", "Change", "Result", "Finished", "Attempts"], rows, numeric=frozenset({0, 5}))
    summary = f"Every operation ({len(tenant.rows)})"
    return f"<details><summary>{summary}</summary>{table}{_more(len(tenant.rows), listed)}</details>"


def _tenant(n: int, tenant: TenantReport, handover: Handover, listed: int) -> Iterator[str]:
    took = (
        span((tenant.finished_at - tenant.started_at).total_seconds())
        if tenant.started_at and tenant.finished_at
        else "\u2014"
    )
    yield f'<section class="panel" id="t{n}"><div class="tenant-head"><h2>{_e(tenant.alias)}</h2>'
    yield f"{_headline(tenant)}</div>{_bar(tenant)}"
    yield (
        f'<p class="meta">{_e(tenant.outcome())} &middot; first change {_e(when(tenant.started_at))}'
        f" &middot; last {_e(when(tenant.finished_at))} &middot; took {_e(took)}</p>"
    )
    yield _changed(tenant, handover)
    yield _failed(tenant, listed)
    yield _skipped(tenant, listed)
    yield _uncertain(tenant, listed)
    yield _every(tenant, listed) if tenant.rows else ""
    yield "</section>"


def _unassigned(rows_in: list[Row], listed: int) -> str:
    """Invalid lines that named no configured tenant: a section of their own, not a tenant."""
    if not rows_in:
        return ""
    rows = [
        [_td(r.line, "num"), _td(r.tenant or "(none)"), _td(r.object_id, "id"), _td(r.why, "why")]
        for r in rows_in[:listed]
    ]
    table = _table(["Line", "Tenant", "Object", "Why"], rows, numeric=frozenset({0}))
    note = f'<p class="note">{_e(UNASSIGNED_NOTE)}</p>'
    more = _more(len(rows_in), listed)
    return f'<section class="panel"><h2>{_e(UNASSIGNED_TITLE)}</h2>{note}{table}{more}</section>'


def render_html(handover: Handover, *, listed: int) -> str:
    """The whole page; ``listed`` bounds the rows of each table (the CSV lists every operation)."""
    title = f"Change report: {handover.job.name}"
    tenants = len(handover.tenants)
    sub = f"{_e(handover.job.name)} &middot; {tenants} tenant{'s' if tenants != 1 else ''} &middot; "
    sub += f"started {_e(when(handover.started_at))}"
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        '<header class="top"><div class="wrap"><div class="eyebrow">Handover report &middot; Microsoft Graph</div>',
        f'<h1>Change report</h1><p class="sub">{sub}</p></div></header>',
        '<main class="wrap">',
        _cards(handover),
        _run_panel(handover),
        _tenant_index(handover) if tenants > 1 else "",
    ]
    for n, tenant in enumerate(handover.tenants):
        parts += list(_tenant(n, tenant, handover, listed))
    parts.append(_unassigned(handover.unassigned, listed))
    parts.append(
        f'</main><footer class="wrap">Written by bulkconn {_e(handover.bulkconn_version)} '
        f"from {_e(handover.report)}.</footer></body></html>"
    )
    return "\n".join(parts) + "\n"
