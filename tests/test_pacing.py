"""bulkconn.pacing: what the pacer hears from an answer, the Pacer on a virtual clock, and the default factory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bulkconn.limits import TenantLimits
from bulkconn.pacing import Heard, Pacer, Pacers, acquire, heard
from bulkconn.retry import Answer
from tests.engine_harness import config
from tests.fakes import run_virtual


def _answer(status: int | None, retry_after: str | None = None, *, whole: bool = False) -> Answer:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Answer(status=status, headers=headers, whole_envelope=whole)


def test_heard_counts_admitted_and_refused_with_the_longest_raw_retry_after() -> None:
    """A 429 is refused, any other HTTP answer admitted, no answer neither; the longest Retry-After wins."""
    answers = [_answer(200), _answer(429, "2"), _answer(429, "1.5"), _answer(429), _answer(404), _answer(None)]
    summary = heard(answers, sent_at=7.0)
    assert summary == Heard(
        sent_at=7.0, admitted_writes=2, refused_writes=3, retry_after_s=2.0, tightest_retry_after_s=1.5
    )
    assert heard([_answer(429)], sent_at=0.0).retry_after_s is None  # absent stays absent: the pacer decides
    assert heard([_answer(429, "900")], sent_at=0.0, retry_after_cap_s=300).retry_after_s == 300
    dated = heard([_answer(429, "Thu, 01 Jan 2026 00:00:03 GMT"), _answer(429, "9")], sent_at=0.0)
    assert dated.tightest_is_date and not summary.tightest_is_date  # the shortest was a date: whole seconds
    reads = heard([_answer(200), _answer(429, "1")], sent_at=0.0, reads=True)
    assert (reads.admitted_reads, reads.refused_reads, reads.admitted_writes, reads.refused_writes) == (1, 1, 0, 0)


@pytest.mark.parametrize(
    ("status", "whole", "refused", "failed"),
    [(429, True, True, True), (503, True, False, True), (500, True, False, True), (429, False, False, False)],
)
def test_only_a_failed_envelope_shrinks_the_batch(status: int, whole: bool, refused: bool, failed: bool) -> None:
    """An envelope answered 429 or 5xx asks for smaller batches; a sub-response never does."""
    summary = heard([_answer(status, "1", whole=whole)] * 3, sent_at=0.0)
    assert (summary.envelope_refused, summary.envelope_failed) == (refused, failed)


def test_take_counts_only_what_fits_and_wait_sleeps_until_room() -> None:
    """100 writes fill the window; the next one waits for the window plus the margin, in virtual time."""

    async def scenario() -> None:
        pacer = Pacer(TenantLimits(margin_s=0.25))
        assert pacer.take(writes=100) == pytest.approx(0.0)
        assert pacer.take(writes=1) is None and not pacer.ready(writes=1)
        assert pacer.max_batch == 20  # nothing fits now: the batch limit, to wait for
        await pacer.wait(writes=20)
        assert asyncio.get_running_loop().time() == pytest.approx(20.25)
        assert pacer.max_batch == 20 and await acquire(pacer, writes=20) == pytest.approx(20.25)

    run_virtual(scenario())


def test_a_429_pauses_the_tenant_and_a_failed_envelope_halves_the_batch() -> None:
    """Retry-After pauses every send of the tenant; an envelope 5xx halves the batch; a quiet window restores it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer(TenantLimits(margin_s=0.0))
        sent_at = pacer.take(writes=20)
        assert sent_at is not None
        pacer.heard(Heard(sent_at=sent_at, admitted_writes=10, refused_writes=10, retry_after_s=5.0))
        assert not pacer.ready(writes=1)
        assert await acquire(pacer, writes=1) == pytest.approx(5.0)
        other = Pacer(TenantLimits(margin_s=0.0))
        other.heard(Heard(sent_at=loop.time(), envelope_failed=True))
        assert other.max_batch == 10
        await asyncio.sleep(25)
        other.heard(Heard(sent_at=loop.time(), admitted_writes=10))
        assert other.max_batch == 20

    run_virtual(scenario())


def test_pacers_share_graphs_global_limit_per_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenants of one client id share one global limit, scaled by the process's share; another app has its own."""
    other_app = {"client_id": "22222222-2222-2222-2222-222222222222"}
    tenants = config(tmp_path, monkeypatch, {"northwind": other_app}).tenants
    pacers = Pacers(global_share=0.15, global_per_window=1000, global_window_s=10.0)
    contoso, fabrikam, northwind = (pacers(tenants[alias], clock=_Frozen()) for alias in tenants)
    assert contoso.limits.shared is fabrikam.limits.shared is not northwind.limits.shared
    assert contoso.limits.shared is not None and contoso.limits.shared.per_window == 150
    assert all(_sent(contoso, 20) for _ in range(5))  # its own 100 per 20 s
    assert _sent(fabrikam, 20) and _sent(fabrikam, 20)
    assert not _sent(fabrikam, 20)  # under its own 100, but the app's 150 are spent
    assert _sent(fabrikam, 10) and not _sent(fabrikam, 1)
    assert _sent(northwind, 20)  # another app


def _sent(pacer: Pacer, writes: int) -> bool:
    """Take ``writes`` if they fit now and hear them admitted at once (after a fresh start one request at a time
    goes out until its answer is back)."""
    sent_at = pacer.take(writes=writes)
    if sent_at is not None:
        pacer.heard(Heard(sent_at=sent_at, admitted_writes=writes))
    return sent_at is not None


class _Frozen:
    """A clock that stays at 0 (the factory test never sleeps)."""

    def now(self) -> float:
        return 0.0

    async def sleep(self, delay_s: float) -> None:
        raise AssertionError("not expected to sleep")
