"""What a ``--resume`` will do: check the job is the same, choose the keys to skip, settle lost syncs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bulkconn.config import Config
from bulkconn.job import fingerprint, scan_job
from bulkconn.model import ErrorInfo, Outcome, Status
from bulkconn.report import utc_now
from bulkconn.resume import check_job, read_state


@dataclass(frozen=True, slots=True)
class ResumePlan:
    skip_keys: frozenset[str]
    prefill: tuple[Outcome, ...]
    remaining: int
    counts: Counter[str]
    message: str

    @property
    def nothing_to_do(self) -> bool:
        return self.remaining == 0 and not self.prefill


def plan_resume(
    job: Path,
    report: Path,
    config: Config,
    *,
    retry_failed: bool,
    recheck_invalid: bool,
    resend_uncertain: bool,
    force: bool,
) -> ResumePlan:
    """Read the report, refuse a changed job (unless ``force``), and count what is left."""
    state = read_state(report)
    job_print = fingerprint(job)
    check_job(state, job_print.sha256, job_print.size, job_print.lines, force=force)
    skip = frozenset(
        state.skip_keys(retry_failed=retry_failed, recheck_invalid=recheck_invalid, resend_uncertain=resend_uncertain)
    )
    prefill: tuple[Outcome, ...] = ()
    if not resend_uncertain:
        prefill = tuple(
            Outcome(
                key=key,
                line=line,
                tenant=tenant,
                object_id=object_id,
                action="sync",
                status=Status.UNCERTAIN,
                error=ErrorInfo(
                    "UncertainSync",
                    "the run stopped while this sync was being sent; it may have "
                    "happened, so it is not sent again (resume with --resend-uncertain to send it)",
                ),
                finished_at=utc_now(),
            )
            for key, tenant, object_id, line in state.uncertain_intents()
        )
    scan = scan_job(job, list(config.tenants), on_invalid=lambda item: None, skip_keys=skip)
    remaining = scan.valid + scan.invalid
    counts = state.counts()
    done = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    torn = f"; ignored {state.torn_lines} torn line(s)" if state.torn_lines else ""
    if remaining == 0 and not prefill:
        message = f"nothing to resume: every operation in {report} already has a final result ({done or 'none'})"
    else:
        message = (
            f"resuming {report}: {len(skip)} operation(s) already final ({done or 'none'}){torn}; {remaining} to go"
        )
    return ResumePlan(skip, prefill, remaining, counts, message)
