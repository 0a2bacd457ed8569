"""Ctrl-C, Ctrl-Break and SIGTERM delivered to a running event loop, on every platform.

``loop.add_signal_handler`` is the asyncio way, but only Unix event loops implement it: Windows' event loops
raise ``NotImplementedError`` (https://docs.python.org/3/library/asyncio-platforms.html#windows). There, the
handler is installed with :func:`signal.signal` (Ctrl-C is SIGINT, Ctrl-Break is SIGBREAK), and the callback
is handed to the loop with ``call_soon_threadsafe``, which also wakes a loop that waits in the selector.
Either way the callback runs on the loop, once per signal, so callers can count them (drain, then stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

LOOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Ctrl-Break exists on Windows only; where it does, it stops a run like Ctrl-C.
_BREAK: signal.Signals | None = getattr(signal, "SIGBREAK", None)
FALLBACK_SIGNALS = (*LOOP_SIGNALS, *((_BREAK,) if _BREAK is not None else ()))


@contextlib.contextmanager
def interrupts(on_signal: Callable[[], None], *, ignore_after: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Call ``on_signal`` on the running loop for each SIGINT/SIGTERM (and SIGBREAK) inside the block.

    On leaving, the earlier handlers come back, unless ``ignore_after()`` says the program is already
    stopping: then the signals are ignored, so a further Ctrl-C while the last words are written changes nothing.
    """
    loop = asyncio.get_running_loop()
    try:
        for sig in LOOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal)
    except NotImplementedError:
        for sig in LOOP_SIGNALS:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        with _handled_by_signal_module(loop, on_signal, ignore_after):
            yield
        return
    try:
        yield
    finally:
        for sig in LOOP_SIGNALS:
            loop.remove_signal_handler(sig)
            if ignore_after():
                signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def _handled_by_signal_module(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[], None], ignore_after: Callable[[], bool]
) -> Iterator[None]:
    log.debug("this event loop has no signal handlers; using signal.signal")

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_signal)

    previous: dict[signal.Signals, Any] = {}
    for sig in FALLBACK_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore_after() else earlier)
