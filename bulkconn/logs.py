"""Logging setup for ``--debug``, with a last-line-of-defence filter that masks credentials.

Nothing in bulkconn logs headers, bodies, tokens or secrets in the first place; this filter only
makes sure a bearer token or a JWT that slipped into some third-party message is masked too.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)((?:client_secret|client_assertion|refresh_token|access_token)=)[^&\s]+"),
)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def enable_debug_logging() -> None:
    """Debug logs to stderr, credentials masked; a second call (``--debug`` given twice) changes nothing."""
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # urllib3 (inside msal) logs URLs only; keep it, but not the noisy connection-pool chatter.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)
