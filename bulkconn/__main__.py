"""Allow ``python -m bulkconn``."""

from __future__ import annotations

from bulkconn.cli import main

if __name__ == "__main__":
    main()
