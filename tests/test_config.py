"""Configuration: every mistake gets one clear message naming file, tenant and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkconn.config import load_config, parse_config
from bulkconn.emulator.tls import make_client_certificate
from bulkconn.errors import ConfigError

GOOD = """
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"

[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_secret_env = "CONTOSO_SECRET"
"""


def _parse(text: str, tmp_path: Path) -> object:
    return parse_config(text, file="cfg.toml", base=tmp_path)


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTOSO_SECRET", "s3cr3t-value")
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "BULKCONN_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_good_config_uses_global_cloud_and_hides_the_secret(tmp_path: Path) -> None:
    """Defaults apply to every tenant; the secret is read from the env and never shown by repr."""
    config = parse_config(GOOD, file="cfg.toml", base=tmp_path)
    tenant = config.tenants["contoso"]
    assert tenant.client_id == "11111111-1111-1111-1111-111111111111"
    assert tenant.graph_root == "https://graph.microsoft.com/v1.0"
    assert tenant.scope == "https://graph.microsoft.com/.default"
    assert tenant.writes_per_20s == 100 and tenant.window_s == 20
    assert "s3cr3t-value" not in repr(config)


@pytest.mark.parametrize(
    ("cloud", "graph", "authority"),
    [
        ("usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
        ("dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.partner.microsoftonline.cn"),
    ],
)
def test_national_clouds(tmp_path: Path, cloud: str, graph: str, authority: str) -> None:
    """`cloud` picks the Graph root, the login authority and the .default scope."""
    config = parse_config(GOOD + f'cloud = "{cloud}"\n', file="cfg.toml", base=tmp_path)
    tenant = config.tenants["contoso"]
    assert (tenant.graph_url, tenant.authority_host, tenant.scope) == (graph, authority, f"{graph}/.default")
    assert not tenant.custom_authority


MISTAKES = [
    ("unknown key", GOOD + 'colour = "red"\n', "key 'colour'", "unknown key"),
    (
        "missing tenant_id",
        GOOD.replace('tenant_id = "00000000-0000-0000-0000-000000000001"\n', ""),
        "key 'tenant_id'",
        "is required",
    ),
    ("two credentials", GOOD + 'client_secret_file = "x"\n', "key 'client_secret_file'", "two credentials"),
    (
        "missing env var",
        GOOD.replace("CONTOSO_SECRET", "NOPE_SECRET"),
        "key 'client_secret_env'",
        "NOPE_SECRET is not set",
    ),
    (
        "missing secret file",
        GOOD.replace('client_secret_env = "CONTOSO_SECRET"', 'client_secret_file = "nope.txt"'),
        "key 'client_secret_file'",
        "cannot read",
    ),
    ("unknown cloud", GOOD + 'cloud = "moon"\n', "key 'cloud'", "unknown cloud 'moon'"),
    ("literal secret", GOOD + 'client_secret = "hunter2"\n', "key 'client_secret'", "client_secret_env"),
    ("no credential", GOOD.replace('client_secret_env = "CONTOSO_SECRET"\n', ""), "tenant 'contoso'", "no credential"),
    ("http graph url", GOOD + 'graph_url = "http://127.0.0.1:1"\n', "key 'graph_url'", "https://"),
    ("bad pacing", GOOD + "writes_per_20s = 0\n", "key 'writes_per_20s'", ">= 1"),
    ("boolean pacing", GOOD + "writes_per_20s = true\n", "key 'writes_per_20s'", ">= 1, not true"),
    ("no tenants", "[defaults]\n", "cfg.toml", "no tenants"),
    ("not TOML", "[tenants.x\n", "cfg.toml", "not valid TOML"),
]


@pytest.mark.parametrize(("case", "text", "where", "what"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_has_a_clear_message(tmp_path: Path, case: str, text: str, where: str, what: str) -> None:
    """The message names the file, the tenant and the key, and says what is wrong."""
    with pytest.raises(ConfigError) as info:
        _parse(text, tmp_path)
    message = str(info.value)
    assert message.startswith("cfg.toml")
    assert where in message and what in message
    assert "hunter2" not in message


def test_certificate_credential_and_unreadable_certificate(tmp_path: Path) -> None:
    """A PEM with key and certificate loads (thumbprint computed); garbage gets a clear message."""
    key, cert = make_client_certificate("app")
    pem = tmp_path / "app.pem"
    pem.write_text(key + cert)
    pem.chmod(0o600)
    text = GOOD.replace('client_secret_env = "CONTOSO_SECRET"', 'certificate_file = "app.pem"')
    config = parse_config(text, file="cfg.toml", base=tmp_path)
    cred = config.tenants["contoso"].credential
    assert len(getattr(cred, "thumbprint", "")) == 40
    assert not config.warnings
    pem.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"key 'certificate_file'.*PEM"):
        parse_config(text, file="cfg.toml", base=tmp_path)


def test_world_readable_secret_file_warns(tmp_path: Path) -> None:
    """A secret file readable by others works but gets a warning with the chmod to run."""
    secret = tmp_path / "secret.txt"
    secret.write_text("abc\n")
    secret.chmod(0o644)
    text = GOOD.replace('client_secret_env = "CONTOSO_SECRET"', 'client_secret_file = "secret.txt"')
    config = parse_config(text, file="cfg.toml", base=tmp_path)
    assert any("chmod 600" in w for w in config.warnings)


def test_azure_environment_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no configuration file, the azure-identity variables make a one-tenant configuration."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "from-env")
    config = load_config()
    assert list(config.tenants) == ["default"]
    assert config.tenants["default"].tenant_id == "contoso.onmicrosoft.com"


def test_missing_file_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file and no AZURE_* variables: the message lists the three ways to configure."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--config PATH, set BULKCONN_CONFIG"):
        load_config()


def test_each_tenants_own_mistake_can_be_collected_instead_of_stopping_at_the_first(tmp_path: Path) -> None:
    """per_tenant_errors: every broken tenant is listed with its key and reason; the good ones load; files still stop."""
    text = (
        '[defaults]\nclient_id = "11111111-1111-1111-1111-111111111111"\n'
        '[tenants.contoso]\ntenant_id = "t1"\nclient_secret_env = "BULKCONN_NOT_SET_ANYWHERE"\n'
        '[tenants.fabrikam]\ntenant_id = "t2"\nclient_secret_file = "missing.secret"\n'
        '[tenants.northwind]\ntenant_id = "t3"\nauth = "device-code"\n'
    )
    config = parse_config(text, file="cfg.toml", base=tmp_path, per_tenant_errors=True)
    assert list(config.tenants) == ["northwind"]
    assert {alias: (e.key, e.detail) for alias, e in config.problems.items()} == {
        "contoso": ("client_secret_env", "environment variable BULKCONN_NOT_SET_ANYWHERE is not set"),
        "fabrikam": ("client_secret_file", f"cannot read {tmp_path / 'missing.secret'}: No such file or directory"),
    }
    with pytest.raises(ConfigError, match="contoso"):
        parse_config(text, file="cfg.toml", base=tmp_path)  # without it, the first mistake stops, as before
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[tenants.x\n", file="cfg.toml", base=tmp_path, per_tenant_errors=True)
