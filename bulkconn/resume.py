"""What a ``--resume`` will do: check the job is the same, choose the keys to skip, settle lost syncs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bulkconn.expansion import RecordedExpansion, read_expansion
from bulkconn.job import fingerprint
from bulkconn.model import Outcome
from bulkconn.report.reader import check_job, iter_lines, read_state


@dataclass(frozen=True, slots=True)
class ResumePlan:
    report: Path
    skip_keys: frozenset[str]
    prefill: tuple[Outcome, ...]
    counts: Counter[str]
    torn_lines: int
    expansion: RecordedExpansion  # what the report's selector lines selected (used as is, never listed again)

    def starting(self, remaining: int) -> str:
        """What to tell the user once the job's scan knows how many operations are left."""
        done = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "none"
        if remaining == 0 and not self.prefill:
            return f"nothing to resume: every operation in {self.report} already has a final result ({done})"
        torn = f"; ignored {self.torn_lines} torn line(s)" if self.torn_lines else ""
        return (
            f"resuming {self.report}: {len(self.skip_keys)} operation(s) already final ({done}){torn}; "
            f"{remaining} to go"
        )


def plan_resume(
    job: Path,
    report: Path,
    *,
    retry_failed: bool,
    recheck_invalid: bool,
    resend_uncertain: bool,
    force: bool,
) -> ResumePlan:
    """Read the report, refuse a changed job (unless ``force``), and choose what to skip and settle."""
    state = read_state(report)
    job_print = fingerprint(job)
    check_job(state, job_print.sha256, job_print.size, job_print.lines, force=force)
    skip = frozenset(
        state.skip_keys(retry_failed=retry_failed, recheck_invalid=recheck_invalid, resend_uncertain=resend_uncertain)
    )
    prefill: tuple[Outcome, ...] = ()
    if not resend_uncertain:
        prefill = tuple(
            Outcome.uncertain_sync(key=key, line=line, tenant=tenant, object_id=object_id)
            for key, tenant, object_id, line in state.uncertain_intents()
        )
    expansion = read_expansion(record for _, record in iter_lines(report) if record is not None)
    return ResumePlan(report, skip, prefill, state.counts(), state.torn_lines, expansion)
