"""bulkconn.limits: the pure pacing arithmetic, one behaviour per test (no loop, no clock)."""

from __future__ import annotations

import pytest

from bulkconn.limits import SendLog, SharedLimit, TenantLimits


def test_send_log_room_is_exact_with_a_time_margin() -> None:
    """100 writes at t=0 fill a 100-per-20 s window; the 101st may go at 20 s plus the margin, not before."""
    limits = TenantLimits(margin_s=0.25)
    limits.record_send(0.0, writes=100)
    assert limits.earliest_send_at(1.0, writes=1) == pytest.approx(20.25)
    assert limits.earliest_send_at(20.25, writes=20) == 20.25


def test_send_log_frees_room_as_old_sends_leave() -> None:
    """Room comes back batch by batch as the oldest sends leave the window."""
    limits = TenantLimits(margin_s=0.0)
    for when in (0.0, 5.0, 10.0, 15.0, 16.0):
        limits.record_send(when, writes=20)
    assert limits.room(17.0) == 0
    assert limits.earliest_send_at(17.0, writes=40) == pytest.approx(25.0)  # the sends of 0 s and 5 s leave
    assert limits.room(20.0) == 20


def test_send_log_memory_is_bounded() -> None:
    """A long run keeps only the entries of the trailing window."""
    log = SendLog(retention_s=20.0)
    for second in range(10_000):
        log.add(float(second), 1)
    assert log.count_since(10_000.0, -1.0) == 19  # 9,981 .. 9,999: the send of 9,980 s left at 10,000 s
    assert len(log) == 19


def test_reads_and_writes_share_the_any_request_limit() -> None:
    """Each sub-request counts once against 'any request': 990 reads leave room for 10 writes."""
    limits = TenantLimits(any_per_window=1000, margin_s=0.0)
    limits.record_send(0.0, writes=0, reads=990)
    assert limits.earliest_send_at(0.0, writes=10) == 0.0
    assert limits.earliest_send_at(0.0, writes=11) == pytest.approx(20.0)


def test_a_429_pauses_the_whole_tenant_until_the_latest_retry_after() -> None:
    """The cool-down is shared and only ever extended: a shorter Retry-After later does not shorten it."""
    limits = TenantLimits()
    limits.record_send(0.0, writes=60)
    limits.throttled(1.0, sent_at=0.0, refused=20, retry_after_s=10.0)
    limits.throttled(2.0, sent_at=0.0, refused=20, retry_after_s=1.0)
    assert limits.cooldown_until == pytest.approx(11.0)
    assert limits.room(5.0) == 0
    assert limits.earliest_send_at(5.0, writes=1) >= 11.0


def test_admitted_count_and_retry_after_give_the_real_limit() -> None:
    """40 of 80 admitted at start-up, Retry-After 1.9 s: the service allows 40 per ~2 s, and we pace to that."""
    limits = TenantLimits(writes_per_window=1000, tenant_writes_per_window=2000, margin_s=0.25)
    limits.record_send(0.0, writes=80)
    limits.throttled(0.1, sent_at=0.0, refused=40, retry_after_s=1.9)
    learned = limits.learner.current
    assert learned.per_window == 40
    assert learned.window_s == pytest.approx(2.0)
    assert limits.earliest_send_at(2.0, writes=1) == pytest.approx(2.25)  # the learned window plus the margin
    assert limits.max_batch == 20


def test_without_retry_after_the_wait_is_what_the_learned_window_implies() -> None:
    """No Retry-After: the tenant waits until its learned window has room, not a blind exponential backoff."""
    limits = TenantLimits(margin_s=0.25)
    limits.record_send(0.0, writes=60)
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=None)
    assert limits.learner.current.per_window == 40
    assert limits.cooldown_until == pytest.approx(20.25)


def test_a_stable_period_probes_upwards_and_a_failed_probe_reverts() -> None:
    """After three quiet windows the limit is raised one step; a 429 soon after goes back to what held."""
    limits = TenantLimits(margin_s=0.0)
    limits.record_send(0.0, writes=60)
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=19.9)  # 40 per 20 s
    limits.succeeded(70.0)
    assert limits.learner.current.per_window == 42
    assert limits.max_batch == 2  # a probe goes out in small batches, so a failing one costs little
    limits.throttled(75.0, sent_at=74.9, refused=2, retry_after_s=5.0)
    assert limits.learner.current.per_window == 40


def test_an_envelope_429_halves_the_batch_and_stable_windows_restore_it() -> None:
    """A throttled $batch envelope halves the batch size; each quiet window doubles it back to 20."""
    limits = TenantLimits()
    limits.record_send(0.0, writes=20)
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=1.0, envelope=True)
    limits.record_send(1.1, writes=10)
    limits.throttled(1.2, sent_at=1.1, refused=10, retry_after_s=1.0, envelope=True)
    assert limits.max_batch == 5
    limits.succeeded(21.2)
    assert limits.max_batch == 10
    limits.succeeded(41.2)
    assert limits.max_batch == 20


def test_the_global_limit_is_shared_by_every_tenant() -> None:
    """Sends of one tenant use up the process-wide limit for the others."""
    shared = SharedLimit(per_window=100, window_s=10.0, margin_s=0.0)
    first, second = TenantLimits(shared=shared), TenantLimits(shared=shared)
    first.record_send(0.0, writes=90)
    assert second.room(1.0) == 10
    assert second.earliest_send_at(1.0, writes=20) == pytest.approx(10.0)
