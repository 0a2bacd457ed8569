"""Signals on an event loop without signal handlers (Windows'), forced on Linux: the signal-module fallback."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bulkconn.signals import FALLBACK_SIGNALS, interrupts


def _refuse_loop_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise NotImplementedError  # what ProactorEventLoop and Windows' SelectorEventLoop do

    monkeypatch.setattr(asyncio.get_running_loop(), "add_signal_handler", refuse)


async def test_each_signal_reaches_the_loop_once_and_the_old_handlers_come_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C and SIGTERM each call back once, on the loop; leaving the block restores the earlier handlers."""
    _refuse_loop_handlers(monkeypatch)
    before = {sig: signal.getsignal(sig) for sig in FALLBACK_SIGNALS}
    calls: list[int] = []
    both = asyncio.Event()

    def on_signal() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            both.set()

    with interrupts(on_signal):
        assert all(signal.getsignal(sig) is not before[sig] for sig in FALLBACK_SIGNALS)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        await both.wait()
    assert calls == [0, 1]
    assert {sig: signal.getsignal(sig) for sig in FALLBACK_SIGNALS} == before


async def test_once_stopping_further_signals_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the block, while the summary is written, a further Ctrl-C is ignored (as with the loop's handlers)."""
    _refuse_loop_handlers(monkeypatch)
    before = {sig: signal.getsignal(sig) for sig in FALLBACK_SIGNALS}
    try:
        with interrupts(lambda: None, ignore_after=lambda: True):
            pass
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in FALLBACK_SIGNALS)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
