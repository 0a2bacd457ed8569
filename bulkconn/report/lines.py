"""The fields of a report line that the report state needs, decoded without building the rest of the line.

A module of its own so that its decoder is built when a report is read (a resume, ``bulkconn report``), not by
every command at start-up.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bulkconn.model import Action


class StateLine(msgspec.Struct):
    """What :class:`bulkconn.report.reader.ReportState` needs of a line (an absent field as ``dict.get`` gives it)."""

    type: Any = None
    key: Any = ""
    status: Any = None
    tenant: Any = ""
    id: Any = ""
    line: Any = 0
    action: Any = Action.SYNC.value
    reason: Any = None
    job_sha256: Any = None  # a header's: which job the run read
    bulkconn_version: Any = None  # a header's: which bulkconn read it


decode_state_line = msgspec.json.Decoder(StateLine).decode
DecodeError = msgspec.DecodeError  # torn, not JSON, or not an object (ValidationError is one too)
