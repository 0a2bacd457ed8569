"""Device-code tokens kept between runs through msal-extensions: encrypted where the OS can, else owner-only."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from msal_extensions import FilePersistence
from msal_extensions.persistence import PersistenceDecryptionError

from bulkconn import tokencache
from bulkconn.auth import MsalTokenProvider, device_login
from bulkconn.config import Config, load_config
from bulkconn.errors import AuthError
from tests.conftest import World

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes; NTFS uses the folder's ACL")


def _device_code_config(world: World, cache: Path) -> Config:
    """The world's configuration with contoso signing in as a user (the emulator approves device codes at once)."""
    tenant = next(t for t in world.emu.core.world.tenants.values() if t.alias == "contoso")
    public = next(a for a in tenant.apps.values() if a.public_client)
    head = world.config.read_text().split("[tenants.")[0]
    world.config.write_text(
        head + f'[tenants.contoso]\ntenant_id = "{tenant.tenant_id}"\nclient_id = "{public.client_id}"\n'
        f'auth = "device-code"\ntoken_cache_file = "{cache}"\n'
    )
    return load_config(world.config)


def _no_encryption(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a Linux host without PyGObject/libsecret (what build_encrypted_persistence raises there)."""

    def unavailable(location: str) -> Any:
        raise ImportError("Unable to import module 'gi'")

    monkeypatch.setattr(tokencache, "build_encrypted_persistence", unavailable)


@pytest.mark.e2e
async def test_a_second_provider_uses_the_cached_sign_in(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`bulkconn login` once; a later run (a new provider, as a new process has) gets tokens with no device flow."""
    caplog.set_level(logging.INFO, logger="bulkconn")
    config = _device_code_config(world, tmp_path / "tokens" / "contoso.json")
    fresh = MsalTokenProvider(config)
    with pytest.raises(AuthError, match="login_required"):
        await fresh.token("contoso")  # nothing cached yet: a run would need the device flow
    fresh.close()
    user = device_login(config, "contoso", lambda message: None)
    assert user.startswith("admin@")
    later = MsalTokenProvider(config)
    try:
        assert (await later.token("contoso")).count(".") == 2  # a JWT, from the cache the login left
    finally:
        later.close()
    store = tokencache.persistence_for(tmp_path / "tokens" / "contoso.json")
    if isinstance(store, tokencache.OwnerOnlyFilePersistence):
        assert "no encrypted token store here" in caplog.text
    assert "eyJ" not in caplog.text and "refresh_token" not in caplog.text


@POSIX
def test_the_fallback_file_is_owner_only_even_when_it_was_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an encrypted store the cache is a 0600 file in a 0700 folder, also over a file readable by others."""
    _no_encryption(monkeypatch)
    path = tmp_path / "bulkconn" / "tokens-contoso.json"
    path.parent.mkdir(mode=0o755)
    path.write_text("{}")
    path.chmod(0o644)
    cache = tokencache.token_cache(path)
    cache.add({"client_id": "c", "scope": ["s"], "token_endpoint": "https://login.example/t", "response": {
        "access_token": "at", "token_type": "Bearer", "expires_in": 3600}})  # fmt: skip
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert '"secret": "at"' in path.read_text()  # written through the persistence, not held in memory only
    fresh = tmp_path / "new" / "tokens.json"
    tokencache.persistence_for(fresh).save("{}")
    assert stat.S_IMODE(os.stat(fresh.parent).st_mode) == 0o700 and stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_a_plaintext_cache_moves_into_the_encrypted_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where encryption works, a cache left in plaintext by an earlier version is imported, then deleted."""
    locations: list[str] = []

    def encrypted(location: str) -> Any:  # a stand-in for DPAPI/Keychain/libsecret with the same interface
        locations.append(location)
        return FilePersistence(location)

    monkeypatch.setattr(tokencache, "build_encrypted_persistence", encrypted)
    caplog.set_level(logging.INFO, logger="bulkconn")
    plaintext = tmp_path / "tokens-contoso.json"
    plaintext.write_text('{"AccessToken": {}}')
    store = tokencache.persistence_for(plaintext)
    assert locations == [f"{plaintext}.encrypted"] and store.load() == '{"AccessToken": {}}'
    assert not plaintext.exists() and "deleted the plaintext device-code token cache" in caplog.text


@pytest.mark.e2e  # msal-extensions retries a failed read twice, 0.5 s apart
async def test_an_unreadable_store_is_one_auth_error(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot be decrypted (another user's DPAPI file) is an AuthError naming it, not a traceback."""

    class Unreadable(FilePersistence):  # type: ignore[misc]
        def load(self) -> str:
            raise PersistenceDecryptionError(message="cannot decrypt")

        def time_last_modified(self) -> float:
            return 1e12

    monkeypatch.setattr(tokencache, "build_encrypted_persistence", Unreadable)
    config = _device_code_config(world, tmp_path / "tokens.json")
    provider = MsalTokenProvider(config)
    try:
        with pytest.raises(AuthError, match=r"token_cache_unreadable.*bulkconn login contoso"):
            await provider.token("contoso")
    finally:
        provider.close()
