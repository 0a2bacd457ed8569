"""The Windows branches, forced on Linux: owner-only checks where NTFS ACLs, not mode bits, decide access."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bulkconn import config as config_module
from bulkconn.config import SecretCredential, parse_config

SECRET_FILE_CONFIG = """
[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_file = "secret.txt"
"""


@pytest.mark.parametrize("mode_bits_mean_access", [True, False])
def test_secret_file_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode_bits_mean_access: bool
) -> None:
    """POSIX warns with the chmod to run; Windows (forced) does not pretend, and logs that ACLs decide instead."""
    monkeypatch.setattr(config_module, "MODE_BITS_MEAN_ACCESS", mode_bits_mean_access)
    secret = tmp_path / "secret.txt"
    secret.write_text("abc\n")
    secret.chmod(0o644)
    with caplog.at_level(logging.DEBUG, logger="bulkconn.config"):
        config = parse_config(SECRET_FILE_CONFIG, file="cfg.toml", base=tmp_path)
    credential = config.tenants["contoso"].credential
    assert isinstance(credential, SecretCredential) and credential.secret.reveal() == "abc"
    if mode_bits_mean_access:
        assert [w for w in config.warnings if "chmod 600" in w]
        assert not caplog.records
    else:
        assert config.warnings == ()
        assert any("NTFS ACLs decide" in r.getMessage() for r in caplog.records)
