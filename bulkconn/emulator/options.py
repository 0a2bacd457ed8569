"""Every knob of the emulator, in one frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class RetryAfterFormat(StrEnum):
    """How the ``Retry-After`` header of a 429/503 is written."""

    SECONDS = "seconds"  # whole seconds, rounded up (Graph's usual form)
    FRACTIONAL = "fractional"  # e.g. 2.128 (seen in older Graph samples and batch sub-responses)
    HTTP_DATE = "http-date"  # an IMF-fixdate, RFC 9110
    ABSENT = "absent"  # no header at all (seen from Intune)


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Probabilities (0..1) of injected failures, and added latency."""

    p500: float = 0.0
    p503: float = 0.0  # 503 with a Retry-After header
    p503_bare: float = 0.0  # 503 without Retry-After
    p504: float = 0.0
    p_drop: float = 0.0  # the connection is closed mid-request, no answer at all
    p_batch_429: float = 0.0  # a 429 on a whole $batch envelope
    p_batch_garbled: float = 0.0  # a 200 $batch answer that drops, duplicates, or is not JSON
    latency_ms: float = 0.0
    jitter_ms: float = 0.0

    @property
    def any_status_fault(self) -> bool:
        return (self.p500 + self.p503 + self.p503_bare + self.p504) > 0


CHAOS = Faults(
    p500=0.01,
    p503=0.02,
    p503_bare=0.01,
    p504=0.02,
    p_drop=0.01,
    p_batch_429=0.03,
    p_batch_garbled=0.02,
    latency_ms=5,
    jitter_ms=20,
)

# Intune enrollment service limits (docs/service-facts.md §2): per 20 s window.
WINDOW_S = 20.0
WRITES_PER_APP = 100
WRITES_PER_TENANT = 200
ANY_PER_APP = 1000
ANY_PER_TENANT = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorOptions:
    """Configuration of one emulator instance (see ``bulkconn emulator serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 0
    tenants: int = 3
    connectors_per_tenant: int = 20
    seed: int = 1
    world_file: Path | None = None
    state_dir: Path | None = None
    time_scale: float = 1.0
    patch_status: int = 200
    page_size: int = 1000
    retry_after: RetryAfterFormat = RetryAfterFormat.SECONDS
    intune_errors: bool = False
    token_lifetime_s: int = 3599
    token_max_age_s: float | None = None  # refuse tokens older than this, before they expire (refresh tests)
    faults: Faults = field(default_factory=Faults)
    tenant_faults: Mapping[str, Faults] = field(default_factory=dict)  # alias, id or domain -> faults
    auto_approve_device_codes: bool = False
    writes_per_app: int = WRITES_PER_APP
    writes_per_tenant: int = WRITES_PER_TENANT
    any_per_app: int = ANY_PER_APP
    any_per_tenant: int = ANY_PER_TENANT

    @property
    def window_s(self) -> float:
        """The real length of a throttling window (20 s times the time scale)."""
        return WINDOW_S * self.time_scale
