"""Where device-code tokens are kept between runs: the operating system's encrypted store, else an owner-only file.

Through msal-extensions (``build_encrypted_persistence``): DPAPI on Windows, the Keychain on macOS, libsecret on
Linux when it is installed and a keyring is unlocked (not in a plain SSH session). Where none of these works,
the cache is the owner-only plaintext file it has always been (``token_cache_file``, mode 0600 in a 0700
folder), and that is logged at info level. With encryption, ``token_cache_file`` + ``.encrypted`` is the store's
file (DPAPI: the encrypted cache; Keychain and libsecret: an empty marker whose time says when it changed), and
a plaintext cache left from before is moved into the store and deleted.

msal-extensions' exceptions are translated to :class:`AuthError` by :mod:`bulkconn.auth`, which only catches
:data:`CACHE_ERRORS`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msal
from msal_extensions import FilePersistence, LockError, PersistedTokenCache, build_encrypted_persistence
from msal_extensions.persistence import PersistenceNotFound

from bulkconn.private import write_private

log = logging.getLogger(__name__)
ENCRYPTED_SUFFIX = ".encrypted"
# A store that cannot be read or written (PersistenceError: another user's DPAPI file; KeychainError, an OSError: a
# locked Keychain; a disk error) or a lock not obtained. Windows and macOS only fail here, on first use.
CACHE_ERRORS: tuple[type[Exception], ...] = (OSError, LockError)
# What building the encrypted store raises where it is unavailable: no PyGObject or libsecret (ImportError,
# ValueError), no keyring service on D-Bus (RuntimeError), an unsupported platform (RuntimeError), or an OS error.
_UNAVAILABLE = (ImportError, RuntimeError, ValueError, OSError)


class OwnerOnlyFilePersistence(FilePersistence):  # type: ignore[misc]  # msal-extensions has no type hints
    """msal-extensions' plaintext file, written atomically with mode 0600 (its own keeps a wider existing mode)."""

    def save(self, content: str) -> None:
        write_private(self.get_location(), content)


def _import_plaintext(plaintext: Path, store: Any) -> None:
    """Move a cache written before encryption was available into the encrypted store, then delete it."""
    if not plaintext.is_file():
        return
    try:
        store.load()
    except PersistenceNotFound:
        store.save(plaintext.read_text(encoding="utf-8"))
        log.info("moved the device-code token cache %s into the encrypted store", plaintext)
    plaintext.unlink()
    log.info("deleted the plaintext device-code token cache %s", plaintext)


def persistence_for(path: Path) -> Any:
    """The encrypted store for the cache at ``path`` where the platform has one, else the owner-only file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store = build_encrypted_persistence(str(path) + ENCRYPTED_SUFFIX)
    except _UNAVAILABLE as exc:
        # The reason names a missing library or service, never a token.
        reason = (str(exc).strip().splitlines() or [""])[0]
        log.info("no encrypted token store here (%s: %s); keeping %s owner-only", type(exc).__name__, reason, path)
        return OwnerOnlyFilePersistence(str(path))
    _import_plaintext(path, store)
    return store


def token_cache(path: Path) -> msal.SerializableTokenCache:
    """An MSAL token cache that reads and saves itself through :func:`persistence_for` on every change."""
    return PersistedTokenCache(persistence_for(path))
