"""A secret pasted where a variable name goes is refused, and never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkconn.config import UnreadCredential, from_azure_environment, parse_config
from bulkconn.errors import ConfigError

PASTED = "abc~supersecretvalue123"
TENANT = 'tenant_id = "00000000-0000-0000-0000-000000000001"\nclient_id = "00000000-0000-0000-0000-0000000000aa"\n'


def test_auth_check_refuses_a_pasted_secret_without_echoing_it(tmp_path: Path) -> None:
    """`bulkconn auth check` exits 2, says what went wrong, and the value appears nowhere in its output."""
    config = tmp_path / "bulkconn.toml"
    config.write_text(f'[tenants.contoso]\n{TENANT}client_secret_env = "{PASTED}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BULKCONN_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bulkconn", "auth", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "tenant 'contoso', key 'client_secret_env': is not a valid environment variable name" in proc.stderr
    assert "put the secret in the environment and name the variable" in proc.stderr
    assert "Traceback" not in proc.stderr
    for part in (PASTED, "supersecret"):
        assert part not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "table",
    [
        f'client_secret_env = "{PASTED}"',
        f'client_secret_env = " {PASTED} "',
        f'certificate_file = "c.pem"\ncertificate_password_env = "{PASTED}"',
        f'client_secret_file = "s.txt"\ncertificate_password_env = "{PASTED}"',  # present but unused: still refused
    ],
)
def test_every_env_key_refuses_a_value_that_is_no_name(table: str, tmp_path: Path) -> None:
    """Any *_env key whose value is not [A-Za-z_][A-Za-z0-9_]* is refused before it is used, without the value."""
    with pytest.raises(ConfigError, match="not a valid environment variable name") as refused:
        parse_config(f"[tenants.contoso]\n{TENANT}{table}\n", file="bulkconn.toml", base=tmp_path)
    assert "supersecret" not in str(refused.value)


def test_a_valid_name_that_is_unset_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed variable name is fine to show: the message says which variable to set."""
    monkeypatch.delenv("CONTOSO_SECRET_S12", raising=False)
    with pytest.raises(ConfigError, match="environment variable CONTOSO_SECRET_S12 is not set"):
        parse_config(
            f'[tenants.contoso]\n{TENANT}client_secret_env = "CONTOSO_SECRET_S12"\n', file="c.toml", base=tmp_path
        )


@pytest.mark.parametrize(
    ("table", "source"),
    [
        ('client_secret_env = "UNSET_S13"', "env:UNSET_S13"),
        ('client_secret_file = "missing.txt"', "file:{base}/missing.txt"),
        ('certificate_file = "missing.pfx"\ncertificate_password_env = "UNSET_S13"', "file:{base}/missing.pfx"),
    ],
)
def test_without_reading_secrets_a_missing_secret_is_fine(
    table: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate and --dry-run parse with read_secrets=False: an unset variable or absent file is not an error."""
    monkeypatch.delenv("UNSET_S13", raising=False)
    text = f"[tenants.contoso]\n{TENANT}{table}\n"
    config = parse_config(text, file="c.toml", base=tmp_path, read_secrets=False)
    assert config.tenants["contoso"].credential == UnreadCredential(source.format(base=tmp_path))
    with pytest.raises(ConfigError):
        parse_config(text, file="c.toml", base=tmp_path)  # a run reads them, and says what is missing


def test_without_reading_secrets_a_pasted_secret_is_still_refused(tmp_path: Path) -> None:
    """Not reading secrets never lets a secret pasted into a *_env key through to a message."""
    with pytest.raises(ConfigError, match="not a valid environment variable name") as refused:
        parse_config(
            f'[tenants.contoso]\n{TENANT}client_secret_env = "{PASTED}"\n',
            file="c.toml",
            base=tmp_path,
            read_secrets=False,
        )
    assert "supersecret" not in str(refused.value)


def test_azure_variables_without_the_secret_serve_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """AZURE_TENANT_ID and AZURE_CLIENT_ID alone: enough to validate (the secret is named, not read)."""
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000aa")
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"):
        monkeypatch.delenv(name, raising=False)
    config = from_azure_environment(read_secrets=False)
    assert config is not None and config.tenants["default"].credential == UnreadCredential("env:AZURE_CLIENT_SECRET")
    with pytest.raises(ConfigError, match="no credential"):
        from_azure_environment()
