"""Files only their owner may read: secrets, keys and token caches (reports use ``os.open(..., 0o600)`` to append)."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_private(path: os.PathLike[str] | str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable only by the owner (the one owner-only writer).

    On Windows the modes only set the read-only flag; the file takes the folder's ACL, which under the
    user's profile (the default ``~/.bulkconn``) admits the user, SYSTEM and Administrators only.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    # A fresh file of our own (mkstemp: O_EXCL, 0600), never a leftover or a link planted at a fixed name.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
