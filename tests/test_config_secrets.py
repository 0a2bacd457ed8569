"""A secret pasted where a variable name goes is refused, and never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkconn.config import parse_config
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
