"""bulkconn: fast, safe, resumable bulk changes to Microsoft Graph across many tenants."""

from __future__ import annotations

__version__ = "0.1.0"
