"""What a ``--resume`` will do: check the job is the same, choose the keys to skip, settle lost syncs."""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkconn.errors import ResumeError
from bulkconn.expansion import RecordedExpansion, read_expansion
from bulkconn.fingerprint import fingerprint
from bulkconn.model import Outcome
from bulkconn.report.reader import ReportState, check_job, iter_lines, read_state
from bulkconn.shards import ShardSpec

_SHARD_NAME = re.compile(r"^(.*)\.shard-(\d+)-of-(\d+)\.report\.jsonl$")


@dataclass(frozen=True, slots=True)
class ResumePlan:
    report: Path
    skip_keys: Set[str]
    prefill: tuple[Outcome, ...]
    counts: Counter[str]  # every operation the report holds, by latest status
    torn_lines: int
    expansion: RecordedExpansion  # what the report's selector lines selected (used as is, never listed again)
    skipped: Counter[str] = field(default_factory=Counter)  # the skipped ones, by status
    again: Counter[str] = field(default_factory=Counter)  # recorded, but done again (--retry-failed, ...)
    header: dict[str, Any] = field(default_factory=dict)  # the report's first header: which job, which shard
    state: ReportState | None = None  # the report as read: the final counts then read only what the run appends

    def starting(self, remaining: int) -> str:
        """What to tell the user once the job's scan knows how many operations are left."""
        if remaining == 0 and not self.prefill:
            done = _listed(self.counts) or "none"
            return f"nothing to resume: every operation in {self.report} already has a final result ({done})"
        torn = f"; ignored {self.torn_lines} torn line(s)" if self.torn_lines else ""
        again = sum(self.again.values())
        redo = f", {again} of them recorded before ({_listed(self.again)}) and done again" if again else ""
        return (
            f"resuming {self.report}: {sum(self.skipped.values())} operation(s) already final are skipped"
            f" ({_listed(self.skipped) or 'none'}){torn}; {remaining} to go{redo}"
        )


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n)


def plan_resume(
    job: Path,
    report: Path,
    *,
    retry_failed: bool,
    recheck_invalid: bool,
    resend_uncertain: bool,
    force: bool,
) -> ResumePlan:
    """Read the report, refuse a changed job (unless ``force``), and choose what to skip and settle.

    ``force`` also sends again the undo lines an earlier run left alone as ``Conflict``.
    """
    state = read_state(report)
    job_print = fingerprint(job)
    check_job(state, job_print.sha256, job_print.size, job_print.lines, force=force)
    # --force: objects changed since bulkconn wrote them (left alone as Conflict) are overwritten this time
    redo = {
        "retry_failed": retry_failed,
        "recheck_invalid": recheck_invalid,
        "resend_uncertain": resend_uncertain,
        "overwrite_conflicts": force,
    }
    # The scan need not check again the lines this report proves valid and final, if it is this job's report.
    same_job = job_print.sha256 if state.header.get("job_sha256") == job_print.sha256 else ""
    skip = state.skip_keys(**redo, job_sha256=same_job)
    prefill: tuple[Outcome, ...] = ()
    if not resend_uncertain:
        prefill = tuple(
            Outcome.uncertain_sync(
                key=key, line=line, tenant=tenant, object_id=object_id, action=state.intent_actions.get(key, "sync")
            )
            for key, tenant, object_id, line in state.uncertain_intents()
        )
    skipped, again = state.split_counts(**redo)
    expansion = RecordedExpansion()
    if state.has_expansion:  # a second pass only for reports of jobs with selector lines
        expansion = read_expansion(record for _, record in iter_lines(report) if record is not None)
    return ResumePlan(
        report, skip, prefill, state.counts(), state.torn_lines, expansion, skipped, again, state.header, state
    )


def _first_header(path: Path) -> dict[str, Any]:
    for _, record in iter_lines(path):
        return record or {}
    return {}


def refuse_stray_shards(report: Path, spec: ShardSpec | None) -> None:
    """Before ``--resume`` starts afresh (no report yet): refuse when this job's work is recorded under other names.

    Only default names are recognised (``X.report.jsonl``, ``X.shard-K-of-N.report.jsonl``): reports of another
    number of shards next to ``report`` mean their tenants already ran, and starting a new split would send
    them again; for a shard, so does an unsharded (not merged) ``X.report.jsonl``. Raises :class:`ResumeError`.
    """
    match = _SHARD_NAME.match(report.name)
    stem = match[1] if match else report.name.removesuffix(".jsonl").removesuffix(".report")
    for sibling in sorted(report.parent.glob(f"{glob.escape(stem)}.shard-*-of-*.report.jsonl")):
        found = _SHARD_NAME.match(sibling.name)
        if found is None or not sibling.stat().st_size or (spec is not None and int(found[3]) == spec.count):
            continue
        raise ResumeError(
            f"no report at {report}, but {sibling} holds shard {found[2]}/{found[3]} of this job: resume with "
            f"--processes {found[3]} (or --shard K/{found[3]}), or start a new set of reports without --resume"
        )
    whole = report.with_name(f"{stem}.report.jsonl")
    if spec is not None and whole.is_file() and whole.stat().st_size and "merged" not in _first_header(whole):
        raise ResumeError(
            f"no report at {report}, but {whole} holds an unsharded run of this job: resume it without --shard"
        )
