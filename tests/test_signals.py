"""Signals on an event loop without signal handlers (Windows'), forced on Linux: the signal-module fallback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bulkconn.signals import FALLBACK_SIGNALS, interrupts
from tests.conftest import FORCE_SIGNAL_FALLBACK, launch


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


@pytest.mark.e2e
def test_emulator_serve_stops_on_ctrl_c_without_loop_handlers(tmp_path: Path) -> None:
    """`bulkconn emulator serve` on an event loop that refuses signal handlers (Windows'): Ctrl-C stops it cleanly."""
    ready = tmp_path / "ready"
    args = ("emulator", "serve", "--tenants", "1", "--state-dir", str(tmp_path / "state"), "--ready-file", str(ready))
    proc = subprocess.Popen(
        launch(FORCE_SIGNAL_FALLBACK, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        while not ready.exists():  # bounded by the e2e timeout
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "emulator stopped" in out and "Traceback" not in err
