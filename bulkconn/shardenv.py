"""How a process is told that it runs one shard of a job: the flags' bound and the environment variables.

Apart from the partition code (:mod:`bulkconn.shards`) so that ``run`` can tell an unsharded run, the usual one,
without importing it: :func:`asks_for_shard` first, then :func:`bulkconn.shards.resolve_shard` says which shard;
and the part of the app's global limit a process paces to, shard or not (:func:`process_share`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulkconn.shards import ShardSpec

SHARD_ENV = "BULKCONN_SHARD"
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes for each pod of an Indexed Job
MAX_SHARDS = 100_000  # Kubernetes' own bound on an Indexed Job's completions


def asks_for_shard(*, shard: str | None, shards: int | None, environ: Mapping[str, str]) -> bool:
    """Whether ``--shard``, ``--shards`` or ``BULKCONN_SHARD`` make this process a shard (or a usage error).

    ``JOB_COMPLETION_INDEX`` alone does not: it counts only with ``--shards N`` (see ``resolve_shard``).
    """
    return shard is not None or shards is not None or environ.get(SHARD_ENV, "").strip() != ""


def process_share(spec: ShardSpec | None, fraction: float | None) -> float:
    """The part of the app's global limit one process paces to (``EngineSettings.global_share``).

    A shard of N: its floor share of ``fraction`` (default :data:`~bulkconn.shards.DEFAULT_GLOBAL_FRACTION`) of
    the limit. Unsharded: ``fraction`` as given, else the whole limit (1.0).
    """
    if spec is None:
        return 1.0 if fraction is None else fraction
    from bulkconn.shards import DEFAULT_GLOBAL_FRACTION, GLOBAL_REQUESTS_PER_WINDOW, global_share

    share = global_share(spec.count, fraction=DEFAULT_GLOBAL_FRACTION if fraction is None else fraction)
    return share.requests_per_window / GLOBAL_REQUESTS_PER_WINDOW
