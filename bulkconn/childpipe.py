"""A ``run --processes`` child's side of its pipes: the flag that makes a run one, its stdout lines, its stdin watch.

Kept apart from :mod:`bulkconn.processes` (the parent's side) so that a run imports the parent's code only when
it starts children: every run must know the hidden flag, only a child writes these lines. The protocol:

- the child's **stdout** carries one JSON object per line (:func:`progress_record`, :func:`final_record`):
  its live counters every tick, then what its run ended with. Nothing else is written there;
- its **stdin** stays open and silent: when it closes without the parent having said so, the parent died,
  and the child drains and stops as on SIGTERM (:func:`stop_when_parent_dies`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from bulkconn.model import Progress
    from bulkconn.runner import RunResult

PROGRESS_FLAG = "--progress-jsonl"  # the hidden `run` flag that makes a child speak this protocol


def progress_record(progress: Progress) -> bytes:
    """One progress line of a child: its counters now."""
    body = {
        "type": "progress",
        "total": progress.total,
        "done": dict(progress.done),
        "throttled": progress.throttled,
        "retries": progress.retries,
        "skip_reasons": dict(progress.skip_reasons),
    }
    return orjson.dumps(body) + b"\n"


def final_record(result: RunResult) -> bytes:
    """A child's last line: what its run ended with (this run's counts; the report holds the rest)."""
    body = {
        "type": "final",
        "nothing_to_do": result.nothing_to_do,
        "counts": dict(result.counts),
        "per_tenant": {tenant: dict(counts) for tenant, counts in result.per_tenant.items()},
        "skip_reasons": dict(result.skip_reasons),
        "conflicts_by_tenant": dict(result.conflicts_by_tenant),
        "auth_failures": result.auth_failures,
        "identity_unreachable": result.identity_unreachable,
        "not_sent": dict(result.not_sent),
        "tenants": result.tenants,
        "interrupted": result.interrupted,
        "duration_s": round(result.duration_s, 3),
    }
    return orjson.dumps(body) + b"\n"


def stop_when_parent_dies(stdin_fd: int, *, stop: Callable[[], None] | None = None) -> threading.Thread:
    """In a child: when its stdin ends (the parent is gone), stop this run as SIGTERM would (drain, summary).

    The thread reads the raw descriptor, never ``sys.stdin``: a daemon thread blocked inside a buffered
    reader would hold its lock while the interpreter shuts down.
    """

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(stdin_fd, 4096):
                pass
        (stop or (lambda: os.kill(os.getpid(), signal.SIGTERM)))()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
