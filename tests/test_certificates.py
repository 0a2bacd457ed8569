"""Certificates as Windows admins export them: PFX / PKCS#12 with a password, from the config or AZURE_* variables."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate

from bulkconn.config import CertificateCredential, load_config, parse_config
from bulkconn.emulator.tls import make_client_certificate
from bulkconn.errors import ConfigError
from tests.conftest import Rehearsal, tenant
from tests.test_auth_e2e import _replace_in_tenant

PASSWORD = "Pfx-Passw0rd-123"
CONFIG = """
[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "11111111-1111-1111-1111-111111111111"
certificate_file = "app.pfx"
certificate_password_env = "PFX_PASSWORD"
"""


def _pfx(key_pem: str, cert_pem: str, password: str | None) -> bytes:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(
        b"bulkconn", key, load_pem_x509_certificate(cert_pem.encode()), None, encryption
    )


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    return make_client_certificate("app")


def _without_password(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "password" not in line)


def _credential(text: str, base: Path) -> CertificateCredential:
    credential = parse_config(text, file="cfg.toml", base=base).tenants["contoso"].credential
    assert isinstance(credential, CertificateCredential)
    return credential


def test_pfx_with_password_loads_like_its_pem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[str, str]
) -> None:
    """A password-protected PFX gives the same key, certificate and thumbprint as the PEM it was made from."""
    (tmp_path / "app.pfx").write_bytes(_pfx(*pair, PASSWORD))
    (tmp_path / "app.pem").write_text(pair[0] + pair[1])
    monkeypatch.setenv("PFX_PASSWORD", PASSWORD)
    from_pfx = _credential(CONFIG, tmp_path)
    from_pem = _credential(_without_password(CONFIG.replace("app.pfx", "app.pem")), tmp_path)
    assert from_pfx.thumbprint == from_pem.thumbprint
    assert from_pfx.certificate_pem == from_pem.certificate_pem
    assert from_pfx.private_key_pem.reveal() == from_pem.private_key_pem.reveal()


def test_wrong_or_missing_pfx_password_is_clear_and_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[str, str]
) -> None:
    """A wrong password names the file's key and never shows the password; a missing one says which key to set."""
    (tmp_path / "app.pfx").write_bytes(_pfx(*pair, PASSWORD))
    monkeypatch.setenv("PFX_PASSWORD", "not-the-Right-one-42")
    with pytest.raises(ConfigError, match=r"key 'certificate_file'.*PFX.*cannot be opened") as caught:
        _credential(CONFIG, tmp_path)
    assert "not-the-Right-one-42" not in str(caught.value)
    with pytest.raises(ConfigError, match="needs a password: set certificate_password_env"):
        _credential(_without_password(CONFIG), tmp_path)


def test_encrypted_pem_without_password_says_so(tmp_path: Path, pair: tuple[str, str]) -> None:
    """An encrypted PEM key and no certificate_password_env: the message says to set it."""
    key = serialization.load_pem_private_key(pair[0].encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    (tmp_path / "app.pem").write_bytes(encrypted + pair[1].encode())
    text = _without_password(CONFIG.replace("app.pfx", "app.pem"))
    with pytest.raises(ConfigError, match="private key is encrypted: set certificate_password_env"):
        _credential(text, tmp_path)


def test_azure_certificate_path_may_be_a_pfx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[str, str]
) -> None:
    """AZURE_CLIENT_CERTIFICATE_PATH pointing at a PFX, with AZURE_CLIENT_CERTIFICATE_PASSWORD, as azure-identity."""
    (tmp_path / "app.pfx").write_bytes(_pfx(*pair, PASSWORD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZURE_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("BULKCONN_CONFIG", raising=False)
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(tmp_path / "app.pfx"))
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", PASSWORD)
    credential = load_config().tenants["default"].credential
    assert isinstance(credential, CertificateCredential)
    assert "BEGIN PRIVATE KEY" in credential.private_key_pem.reveal()


async def test_pfx_credential_run_with_msal(
    rehearsal: Callable[..., Awaitable[Rehearsal]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MSAL signs its client assertion with the key from a password-protected PFX; the emulator accepts it."""
    r = await rehearsal(tenants=1, connectors_per_tenant=10)
    key, cert = await asyncio.to_thread(make_client_certificate, "contoso-bulkconn")
    tenant(r.emu, "contoso").writer_app().add_certificate(cert)
    pfx = r.dir / "contoso.pfx"
    pfx.write_bytes(_pfx(key, cert, PASSWORD))
    pfx.chmod(0o600)
    monkeypatch.setenv("CONTOSO_PFX_PASSWORD", PASSWORD)
    _replace_in_tenant(
        r,
        "contoso",
        "client_secret_file",
        f'certificate_file = "{pfx}"\ncertificate_password_env = "CONTOSO_PFX_PASSWORD"',
    )
    lines = r.patch_all(["contoso"], lambda alias, c: {"exchangeAlias": f"{alias}-{c['id'][:6]}"})
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 10})
    assert r.emu.stats()["token_requests"]["contoso"] == 1
