"""A local, faithful emulator of Microsoft Graph (every Intune ``/deviceManagement`` collection) and of Entra ID.

See ``docs/emulator.md`` for what it does and the choices made where Graph is undocumented.
"""

from __future__ import annotations

from bulkconn.emulator.hostile import SilentServer
from bulkconn.emulator.options import CHAOS, ROTATING, EmulatorOptions, Faults, RetryAfterFormat
from bulkconn.emulator.server import Emulator, EmulatorThread
from bulkconn.emulator.throttling import Limits

__all__ = [
    "CHAOS",
    "ROTATING",
    "Emulator",
    "EmulatorOptions",
    "EmulatorThread",
    "Faults",
    "Limits",
    "RetryAfterFormat",
    "SilentServer",
]
