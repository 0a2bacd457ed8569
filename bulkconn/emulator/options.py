"""Every knob of the emulator, in one frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path

from bulkconn.emulator.throttling import GLOBAL_PER_APP, GLOBAL_WINDOW_S, Limits


class RetryAfterFormat(StrEnum):
    """How the ``Retry-After`` header of a 429/503 is written."""

    SECONDS = "seconds"  # whole seconds, rounded up (Graph's usual form)
    FRACTIONAL = "fractional"  # e.g. 2.128 (seen in older Graph samples and batch sub-responses)
    HTTP_DATE = "http-date"  # an IMF-fixdate, RFC 9110
    ABSENT = "absent"  # no header at all (seen from Intune)


# ``retry_after_cycle`` value that rotates through every form, one throttled answer after another.
ROTATING = (
    RetryAfterFormat.SECONDS,
    RetryAfterFormat.FRACTIONAL,
    RetryAfterFormat.HTTP_DATE,
    RetryAfterFormat.ABSENT,
)


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
    # Hostile answers (docs/emulator.md, "Hostile answers"). A proxy answers instead of Graph: nothing happens.
    p_html_502: float = 0.0  # 502 text/html error page, as a reverse proxy writes it
    p_redirect_offhost: float = 0.0  # redirect to another host (https://evil.invalid/...)
    p_redirect_samehost: float = 0.0  # redirect to the same URL on this host
    p_silent: float = 0.0  # the request is read, nothing is ever answered
    # Graph did the work, then the answer is damaged on the way back.
    p_not_json: float = 0.0  # 200, Content-Type application/json, a body that is not JSON
    p_truncated: float = 0.0  # Content-Length larger than the bytes sent, then the connection closes
    p_huge: float = 0.0  # a valid JSON body of huge_body_bytes
    p_stall: float = 0.0  # status and headers, then the body never comes
    p_batch_missing_id: float = 0.0  # a $batch answer without one requested id
    p_batch_extra_id: float = 0.0  # one more sub-response, for an id nobody asked for
    p_batch_duplicate_id: float = 0.0  # one id answered twice, the copy a 500
    p_batch_unknown_id: float = 0.0  # one sub-response's id replaced by an unknown one
    p_batch_no_status: float = 0.0  # one sub-response without "status"
    huge_body_bytes: int = 50 * 1024 * 1024
    redirect_status: int = 307
    stall_s: float = 3600.0  # the longest a stalled or silent answer holds the connection

    @property
    def any_status_fault(self) -> bool:
        return (self.p500 + self.p503 + self.p503_bare + self.p504) > 0

    def with_setting(self, name: str, text: str) -> Faults:
        """A copy with one field set from text (``p503``, ``p-html-502``...); ``ValueError`` says what is wrong."""
        name = name.strip().replace("-", "_")
        kinds = {f.name: f.type for f in fields(self)}
        if name not in kinds:
            raise ValueError(f"unknown fault {name!r}; expected one of {', '.join(kinds)}")
        try:
            value: float = int(text) if kinds[name] == "int" else float(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number") from None
        if value < 0 or (name.startswith("p") and value > 1):
            raise ValueError(f"{name}: {text!r} is out of range")
        if name == "redirect_status" and value not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirect_status: {text!r} is not a redirect status")
        changed: Faults = replace(self, **{name: value})  # type: ignore[arg-type]  # the field's own type
        return changed


def parse_tenant_limit(text: str) -> tuple[str, dict[str, float]]:
    """``ALIAS:writes_per_app=40,window_s=2`` -> (alias, overrides); ``ValueError`` says what is wrong."""
    alias, _, assignments = text.partition(":")
    overrides: dict[str, float] = {}
    for assignment in filter(None, assignments.split(",")):
        name, _, number = assignment.partition("=")
        try:
            overrides[name.strip().replace("-", "_")] = float(number)
        except ValueError:
            raise ValueError(f"{text!r}: {number!r} is not a number") from None
    if not alias or not overrides:
        raise ValueError(f"{text!r}: expected ALIAS:NAME=VALUE[,NAME=VALUE...]")
    Limits().with_overrides(overrides)  # refuses unknown names and values out of range
    return alias, overrides


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
    objects_per_collection: int = 10  # seeded objects per tenant in each collection of seeding.SEEDED
    collection_sizes: Mapping[str, int] = field(default_factory=dict)  # collection -> objects per tenant
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
    limit_window_s: float | None = None  # real seconds; None: 20 s times the time scale
    tenant_limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # alias, id or domain -> overrides
    global_per_app: int = GLOBAL_PER_APP  # Graph's limit per app across all tenants, per global_window_s
    retry_after_cycle: tuple[RetryAfterFormat, ...] = ()  # when set, throttled answers rotate through these forms
    throttling: bool = True  # False: no Intune or global limit applies (client-overhead benchmarks)
    token_latency_ms: float = 0.0  # every token endpoint answer waits this long (real ms), the loop serving on
    shared_app: bool = False  # the generated world registers one multi-tenant bulkconn app in every tenant

    @property
    def window_s(self) -> float:
        """The real length of a throttling window: ``limit_window_s``, else 20 s times the time scale."""
        return self.limit_window_s if self.limit_window_s is not None else WINDOW_S * self.time_scale

    @property
    def global_window_s(self) -> float:
        """The real length of Graph's global window (10 s times the time scale)."""
        return GLOBAL_WINDOW_S * self.time_scale

    def seeded_sizes(self) -> dict[str, int]:
        """Objects per tenant for each seeded collection other than Exchange Connectors.

        Raises:
            ValueError: a size names Exchange Connectors (``connectors_per_tenant`` counts them) or is negative.
            bulkconn.registry.UnknownResourceError: a size names no ``/deviceManagement`` collection.
        """
        from bulkconn import registry  # the registry loads on first use, not when options are built
        from bulkconn.emulator.seeding import SEEDED

        sizes = dict.fromkeys(SEEDED, self.objects_per_collection)
        for name, count in self.collection_sizes.items():
            registry.resource(name)
            if name == "exchangeConnectors":
                raise ValueError("Exchange Connectors are counted by connectors_per_tenant (--connectors-per-tenant)")
            if count < 0:
                raise ValueError(f"{name}: a count of objects cannot be negative ({count})")
            sizes[name] = count
        return sizes

    def limits(self) -> Limits:
        """The limits every tenant starts with unless ``tenant_limits`` names it."""
        return Limits(
            window_s=self.window_s,
            writes_per_app=self.writes_per_app,
            writes_per_tenant=self.writes_per_tenant,
            any_per_app=self.any_per_app,
            any_per_tenant=self.any_per_tenant,
        )
