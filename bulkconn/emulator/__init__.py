"""A local, faithful emulator of Microsoft Graph (Intune Exchange Connectors) and of Entra ID.

See ``docs/emulator.md`` for what it does and the choices made where Graph is undocumented.
"""

from __future__ import annotations

from bulkconn.emulator.options import CHAOS, EmulatorOptions, Faults, RetryAfterFormat
from bulkconn.emulator.server import Emulator, EmulatorThread

__all__ = ["CHAOS", "Emulator", "EmulatorOptions", "EmulatorThread", "Faults", "RetryAfterFormat"]
