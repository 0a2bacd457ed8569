"""bulkconn.limits, .sendlog and .episode: the pure pacing arithmetic, one behaviour per test (no loop, no clock)."""

from __future__ import annotations

import pytest

from bulkconn.learning import Learned
from bulkconn.limits import TenantLimits
from bulkconn.sendlog import SendLog, SharedLimit


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


@pytest.mark.parametrize(("dated", "first_probe_s"), [(False, 2.7), (True, 2.5)])
def test_a_window_from_an_http_date_is_probed_halfway_to_a_second_shorter(dated: bool, first_probe_s: float) -> None:
    """Retry-After measures a 3 s window. Seconds are close: the first probe is 10 % shorter. An HTTP date has
    whole seconds (the window may be up to 1 s shorter): the first probe goes halfway to that, 2.5 s."""
    limits = TenantLimits(writes_per_window=1000, tenant_writes_per_window=2000, margin_s=0.0)
    limits.record_send(0.0, writes=60)
    limits.answered()
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=2.9, tightest_is_date=dated)
    learned = limits.learner.current
    assert learned.per_window == 40 and learned.window_s == pytest.approx(3.0)
    assert limits.earliest_send_at(3.0, writes=40) == pytest.approx(3.0)
    limits.record_send(3.0, writes=40)
    limits.answered()
    limits.succeeded(4.7, sent_at=3.0)  # one and a half windows since the 429: the window is probed shorter
    assert limits.learner.current.window_s == pytest.approx(first_probe_s)


def test_without_retry_after_the_wait_is_what_the_learned_window_implies() -> None:
    """No Retry-After in steady state: the tenant waits until its learned window has room, not a blind backoff."""
    limits = TenantLimits(margin_s=0.25)
    for sent, writes in ((0.0, 40), (15.0, 20), (30.0, 40)):  # steady sending: the window cannot be read
        limits.record_send(sent, writes=writes)
        limits.answered()
    limits.throttled(30.1, sent_at=30.0, refused=20, retry_after_s=None)
    assert limits.learner.current.per_window == 40  # admitted in the trailing window: 20 + 20
    assert limits.cooldown_until == pytest.approx(35.25)  # when the 20 sent at 15 s leave it


def test_without_any_retry_after_single_writes_find_the_window() -> None:
    """At a fresh start without Retry-After, single writes at doubling spans find the window; batches wait."""
    limits = TenantLimits(writes_per_window=1000, tenant_writes_per_window=2000, margin_s=0.0)
    limits.record_send(0.0, writes=80)
    limits.throttled(0.1, sent_at=0.0, refused=40, retry_after_s=None)  # 40 admitted at once
    assert limits.max_batch == 1
    assert limits.earliest_send_at(0.1, writes=1) == pytest.approx(20 / 32)  # the first probe: 1/32 of the window
    assert limits.earliest_send_at(0.1, writes=20) > 20.0  # batches wait for the search to end
    for span in (0.625, 1.25):  # refused: the window is longer than that
        limits.record_send(span, writes=1)
        limits.answered()
        limits.throttled(span + 0.1, sent_at=span, refused=1, retry_after_s=None)
    limits.record_send(2.5, writes=1)
    limits.answered()
    limits.succeeded(2.6, sent_at=2.5)  # admitted: the window is longer than 1.25 s and at most 2.5 s
    assert limits.learner.current == Learned(40, 2.5)
    assert limits.max_batch == 20 and limits.earliest_send_at(2.6, writes=20) == pytest.approx(2.6)


def _learned_40_and_stable() -> TenantLimits:
    """40 per 20 s learned from a 429, then three windows filled to it without one."""
    limits = TenantLimits(margin_s=0.0)
    limits.record_send(0.0, writes=60)
    limits.answered()
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=19.9)  # 40 per 20 s
    for sent in (20.0, 40.0, 60.0):
        assert limits.earliest_send_at(sent, writes=40) == sent
        limits.record_send(sent, writes=40)
        limits.answered()
        limits.succeeded(sent + 0.1, sent_at=sent)
    return limits


def test_a_stable_period_probes_the_configured_limit_and_a_refusal_shows_the_real_one() -> None:
    """After three windows filled without a 429 the configured limit is tried, one small request at a time
    beyond what held; the 429 that ends it leaves the limit at what the service admitted in its window."""
    limits = _learned_40_and_stable()
    assert limits.learner.current.per_window == 100
    assert limits.max_batch == 2  # a probe goes out in small batches, so a failing one costs little
    limits.record_send(70.0, writes=2)
    assert limits.earliest_send_at(70.05, writes=2) > 70.05  # beyond the 40 that held: one request at a time
    limits.answered()
    limits.succeeded(70.1, sent_at=70.0)
    assert limits.earliest_send_at(70.1, writes=2) == 70.1
    limits.record_send(70.1, writes=2)
    limits.answered()
    limits.throttled(70.2, sent_at=70.1, refused=2, retry_after_s=9.8)
    assert limits.learner.current == Learned(42, 20.0)  # 40 sent at 60 s and the 2 admitted at 70 s


def test_a_configured_limit_that_holds_for_a_window_is_paced_to_again() -> None:
    """The probe of the configured limit holds for a window: the learned limit is dropped, batches are whole."""
    limits = _learned_40_and_stable()
    for n in range(30):  # 60 more writes than the 40 sent at 60 s, in batches of 2, each answered before the next
        sent = 70.0 + 0.2 * n
        assert limits.earliest_send_at(sent, writes=2) == sent
        limits.record_send(sent, writes=2)
        limits.answered()
        limits.succeeded(sent + 0.1, sent_at=sent)
    assert limits.learner.learned is not None  # not yet a whole window since the probe began (60.1 s)
    for n in range(15):  # once the 40 sent at 60 s have left: 30 more, so that 90 of 100 fill the window
        sent = 80.0 + 0.2 * n
        assert limits.earliest_send_at(sent, writes=2) == sent
        limits.record_send(sent, writes=2)
        limits.answered()
        limits.succeeded(sent + 0.1, sent_at=sent)
    assert limits.learner.learned is None and limits.max_batch == 20


def test_windows_not_filled_prove_nothing() -> None:
    """Quiet windows in which we sent little (another limit held us back) never raise the learned limit."""
    limits = TenantLimits(margin_s=0.0)
    limits.record_send(0.0, writes=60)
    limits.throttled(0.1, sent_at=0.0, refused=20, retry_after_s=19.9)
    for sent in (20.0, 40.0, 60.0, 80.0):
        limits.record_send(sent, writes=10)
        limits.answered()
        limits.succeeded(sent + 0.1, sent_at=sent)
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
