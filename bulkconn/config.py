"""Tenant configuration (TOML) -> frozen values. All defaults live here.

See ``docs/configuration.md``. Every mistake raises :class:`ConfigError` naming the file, the
tenant and the key. Secrets are never read from the file itself, only from an environment variable
or a file, and they are held in :class:`Secret` so that no repr, log line or report shows them.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from bulkconn.errors import ConfigError

if TYPE_CHECKING:  # cryptography is imported only when a certificate is configured: it costs start-up time
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

DEFAULT_CONFIG = Path("bulkconn.toml")
# Who may read a file: mode bits on POSIX; on Windows, NTFS ACLs, which st_mode does not show (docs/configuration.md).
MODE_BITS_MEAN_ACCESS = os.name == "posix"

log = logging.getLogger(__name__)


class Cloud(Struct, frozen=True):
    """A national cloud's Graph root and login authority (docs/service-facts.md §4)."""

    name: str
    graph_url: str
    authority_host: str

    @property
    def scope(self) -> str:
        return f"{self.graph_url}/.default"


CLOUDS: Mapping[str, Cloud] = {
    "global": Cloud("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "usgov": Cloud("usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "dod": Cloud("dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": Cloud("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.partner.microsoftonline.cn"),
}

# Intune's documented limits per app per tenant per 20 s (docs/service-facts.md §2).
DEFAULT_WRITES_PER_20S = 100
DEFAULT_READS_PER_20S = 1000
DEFAULT_WINDOW_S = 20.0
DEFAULT_TENANT_CONCURRENCY = 4


class Secret:
    """A credential value that never shows itself in repr/str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


class SecretCredential(Struct, frozen=True):
    secret: Secret
    source: str  # "env:NAME" or "file:PATH", for messages


class CertificateCredential(Struct, frozen=True):
    private_key_pem: Secret
    certificate_pem: str
    thumbprint: str
    source: str


class DeviceCodeCredential(Struct, frozen=True):
    token_cache_file: Path


class UnreadCredential(Struct, frozen=True):
    """A secret or certificate named but not read: ``validate`` and ``--dry-run`` send nothing, so need none."""

    source: str


Credential = SecretCredential | CertificateCredential | DeviceCodeCredential | UnreadCredential


class TenantConfig(Struct, frozen=True, kw_only=True):
    """Everything needed to reach one tenant."""

    alias: str
    tenant_id: str
    client_id: str
    credential: Credential
    cloud: Cloud
    graph_url: str
    authority_host: str
    scope: str
    api_version: str = "v1.0"
    ca_bundle: Path | None = None
    writes_per_20s: int = DEFAULT_WRITES_PER_20S
    reads_per_20s: int = DEFAULT_READS_PER_20S
    window_s: float = DEFAULT_WINDOW_S
    concurrency: int = DEFAULT_TENANT_CONCURRENCY

    @property
    def custom_authority(self) -> bool:
        """An authority host that is not one of Entra's own (the emulator, a proxy): skip instance discovery."""
        return self.authority_host not in {c.authority_host for c in CLOUDS.values()}

    @property
    def graph_root(self) -> str:
        return f"{self.graph_url}/{self.api_version}"


class Config(Struct, frozen=True):
    source: str
    tenants: Mapping[str, TenantConfig]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    problems: Mapping[str, ConfigError] = field(default_factory=dict)  # per_tenant_errors: alias -> its mistake


_KEYS = frozenset(
    {
        "tenant_id",
        "client_id",
        "client_secret_env",
        "client_secret_file",
        "certificate_file",
        "certificate_password_env",
        "auth",
        "cloud",
        "api_version",
        "graph_url",
        "authority_host",
        "scope",
        "ca_bundle",
        "writes_per_20s",
        "reads_per_20s",
        "window_s",
        "concurrency",
        "token_cache_file",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_LITERALS = frozenset({"client_secret", "secret", "password", "certificate_password", "private_key"})


def _readable_by_others(path: Path) -> bool:
    """Whether the mode bits let group or others at ``path``; never claimed where mode bits do not decide."""
    if not MODE_BITS_MEAN_ACCESS:
        log.debug("%s: access is not checked: on Windows, NTFS ACLs decide it (see docs/configuration.md)", path)
        return False
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


class _Reader:
    """Reads one tenant's merged table, raising errors that say where."""

    def __init__(
        self,
        file: str,
        base: Path,
        alias: str,
        table: Mapping[str, Any],
        warnings: list[str],
        *,
        read_secrets: bool = True,
    ) -> None:
        self.file, self.base, self.alias, self.table, self.warnings = file, base, alias, table, warnings
        self.read_secrets = read_secrets

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, tenant=self.alias, key=key)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value.strip()

    def number(self, key: str, default: float, *, minimum: float, integer: bool) -> Any:
        value = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            kind = "a whole number" if integer else "a number"
            shown = str(value).lower() if isinstance(value, bool) else repr(value)  # TOML's true, not Python's True
            raise self.fail(key, f"must be {kind} >= {minimum:g}, not {shown}")
        return value

    def path(self, key: str) -> Path:
        return _resolve(self.text(key), self.base, lambda message: self.fail(key, message))

    def private_file(self, key: str) -> bytes:
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self.fail(key, f"cannot read {path}: {exc.strerror or exc}") from exc
        except ValueError:  # a NUL byte in the name
            raise self.fail(key, "is not a usable file name") from None
        if _readable_by_others(path):
            self.warnings.append(
                f"{self.file}: tenant '{self.alias}': {path} is readable by other users; run: chmod 600 {path}"
            )
        return data

    def env_name(self, key: str) -> str:
        """The variable name in ``key``; a value that is no name is refused without being shown."""
        value = self.table.get(key)
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value.strip()):
            raise self.fail(
                key,
                "is not a valid environment variable name (it looks like a secret was pasted there; "
                "put the secret in the environment and name the variable)",
            )
        return value.strip()

    def env(self, key: str) -> str:
        name = self.env_name(key)
        value = os.environ.get(name)
        if not value:
            raise self.fail(key, f"environment variable {name} is not set")
        return value


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the OS cannot even look up (too long, NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _resolve(text: str, base: Path, fail: Callable[[str], ConfigError]) -> Path:
    """``text`` as a path: ``~`` expanded, relative to ``base``."""
    try:
        raw = Path(text).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist
        raise fail("names a home directory that does not exist") from None
    return raw if raw.is_absolute() else base / raw


_PEM_MARK = b"-----BEGIN"


def _load_pem(reader: _Reader, data: bytes, password: bytes | None) -> tuple[PrivateKeyTypes, x509.Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=password), x509.load_pem_x509_certificate(data)
    except TypeError as exc:  # cryptography: a password for a plain key, or none for an encrypted one
        needed = (
            "is encrypted: set certificate_password_env"
            if password is None
            else "is not encrypted: remove certificate_password_env"
        )
        raise reader.fail("certificate_file", f"the private key {needed} ({type(exc).__name__})") from None
    except ValueError:
        raise reader.fail(
            "certificate_file",
            "is not a PEM file holding both a private key and its certificate, or the password in "
            "certificate_password_env does not open its key",
        ) from None


def _load_pfx(reader: _Reader, data: bytes, password: bytes | None) -> tuple[PrivateKeyTypes, x509.Certificate]:
    # Windows exports (Export-PfxCertificate, certlm.msc) are PKCS#12; azure-identity reads them too.
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        why = "needs a password: set certificate_password_env" if password is None else "cannot be opened"
        raise reader.fail(
            "certificate_file",
            f"is neither a PEM file nor a PFX/PKCS#12 file that opens with the password given: the file {why} "
            "(the password is read from the environment variable named by certificate_password_env)",
        ) from None
    if key is None or cert is None:
        raise reader.fail("certificate_file", "the PFX file must hold both the private key and its certificate")
    return key, cert


def _certificate(reader: _Reader) -> CertificateCredential:
    """A certificate credential from a PEM or PFX file; the key is held decrypted in memory only."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = reader.private_file("certificate_file")
    password = reader.env("certificate_password_env").encode() if "certificate_password_env" in reader.table else None
    load = _load_pem if _PEM_MARK in data else _load_pfx
    key, cert = load(reader, data, password)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise reader.fail("certificate_file", "must hold an RSA key (Entra signs client assertions with RSA)")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return CertificateCredential(
        private_key_pem=Secret(key_pem),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - x5t is SHA-1 by spec
        source=f"file:{reader.path('certificate_file')}",
    )


def _credential(reader: _Reader, config_dir: Path) -> Credential:
    auth = reader.table.get("auth", "client-credentials")
    if auth not in ("client-credentials", "device-code"):
        raise reader.fail("auth", f"must be 'client-credentials' or 'device-code', not {auth!r}")
    given = [k for k in ("client_secret_env", "client_secret_file", "certificate_file") if k in reader.table]
    if auth == "device-code":
        cache = reader.table.get("token_cache_file", f"~/.bulkconn/tokens-{reader.alias}.json")
        return DeviceCodeCredential(_resolve(str(cache), config_dir, lambda m: reader.fail("token_cache_file", m)))
    if not given:
        raise reader.fail(
            "client_secret_env",
            "no credential: set client_secret_env, client_secret_file or certificate_file",
        )
    if len(given) > 1:
        raise reader.fail(given[1], f"two credentials for one tenant ({' and '.join(given)}); keep one")
    if not reader.read_secrets:
        where = f"env:{reader.env_name(given[0])}" if given[0].endswith("_env") else f"file:{reader.path(given[0])}"
        return UnreadCredential(where)
    if given[0] == "client_secret_env":
        return SecretCredential(Secret(reader.env("client_secret_env")), f"env:{reader.env_name('client_secret_env')}")
    if given[0] == "client_secret_file":
        secret = reader.private_file("client_secret_file").decode().strip()
        if not secret:
            raise reader.fail("client_secret_file", "the file is empty")
        return SecretCredential(Secret(secret), f"file:{reader.path('client_secret_file')}")
    return _certificate(reader)


def _tenant(
    file: str, base: Path, alias: str, table: Mapping[str, Any], warnings: list[str], *, read_secrets: bool = True
) -> TenantConfig:
    reader = _Reader(file, base, alias, table, warnings, read_secrets=read_secrets)
    for key in table:
        if key in _SECRET_LITERALS:
            raise reader.fail(
                key,
                "secrets are never written in the configuration file: put the secret in an environment variable "
                'and set client_secret_env = "NAME", or in a file readable only by you and set '
                'client_secret_file = "path"',
            )
        if key not in _KEYS:
            raise reader.fail(key, f"unknown key (known keys: {', '.join(sorted(_KEYS))})")
        if key.endswith("_env"):
            reader.env_name(key)  # even where unused: a pasted secret must never reach a later message
    cloud_name = reader.text("cloud", "global")
    cloud = CLOUDS.get(cloud_name)
    if cloud is None:
        raise reader.fail("cloud", f"unknown cloud {cloud_name!r} (one of: {', '.join(CLOUDS)})")
    api_version = reader.text("api_version", "v1.0")
    if api_version not in ("v1.0", "beta"):
        raise reader.fail("api_version", f"must be 'v1.0' or 'beta', not {api_version!r}")
    graph_url = reader.text("graph_url", cloud.graph_url).rstrip("/")
    authority = reader.text("authority_host", cloud.authority_host).rstrip("/")
    for key, url in (("graph_url", graph_url), ("authority_host", authority)):
        if not url.startswith("https://"):
            raise reader.fail(key, f"must be an https:// URL, not {url!r}")
    ca_bundle = reader.path("ca_bundle") if "ca_bundle" in table else None
    if ca_bundle is not None and not _is_file(ca_bundle):
        raise reader.fail("ca_bundle", f"file {ca_bundle} does not exist")
    return TenantConfig(
        alias=alias,
        tenant_id=reader.text("tenant_id"),
        client_id=reader.text("client_id"),
        credential=_credential(reader, base),
        cloud=cloud,
        graph_url=graph_url,
        authority_host=authority,
        scope=reader.text("scope", cloud.scope),
        api_version=api_version,
        ca_bundle=ca_bundle,
        writes_per_20s=reader.number("writes_per_20s", DEFAULT_WRITES_PER_20S, minimum=1, integer=True),
        reads_per_20s=reader.number("reads_per_20s", DEFAULT_READS_PER_20S, minimum=1, integer=True),
        window_s=float(reader.number("window_s", DEFAULT_WINDOW_S, minimum=0.001, integer=False)),
        concurrency=reader.number("concurrency", DEFAULT_TENANT_CONCURRENCY, minimum=1, integer=True),
    )


def parse_config(
    text: str, *, file: str, base: Path, read_secrets: bool = True, per_tenant_errors: bool = False
) -> Config:
    """Parse configuration text (``file`` names it in messages, ``base`` resolves relative paths).

    With ``read_secrets=False`` every check runs except reading the secrets themselves (environment variables,
    secret and certificate files): credentials are :class:`UnreadCredential`, enough to validate and plan a job.
    With ``per_tenant_errors=True`` a tenant's own mistake goes to :attr:`Config.problems` and the other tenants
    load (``auth check`` lists them all); a mistake in the file as a whole still raises.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from exc
    except RecursionError:
        raise ConfigError("not valid TOML: arrays or tables nested too deeply", file=file) from None
    unknown = set(data) - {"defaults", "tenants"}
    if unknown:
        raise ConfigError(
            f"unknown section [{sorted(unknown)[0]}] (expected [defaults] and [tenants.ALIAS])", file=file
        )
    defaults = data.get("defaults", {})
    tenants = data.get("tenants", {})
    if not isinstance(tenants, dict) or not tenants:
        raise ConfigError("no tenants: add a [tenants.ALIAS] table for each tenant", file=file)
    warnings: list[str] = []
    parsed: dict[str, TenantConfig] = {}
    problems: dict[str, ConfigError] = {}
    for alias, table in tenants.items():
        try:
            if not isinstance(table, dict):
                raise ConfigError("must be a table", file=file, tenant=alias)
            parsed[alias] = _tenant(file, base, alias, {**defaults, **table}, warnings, read_secrets=read_secrets)
        except ConfigError as exc:
            if not per_tenant_errors:
                raise
            problems[alias] = exc
    return Config(source=file, tenants=parsed, warnings=tuple(warnings), problems=problems)


def from_azure_environment(*, read_secrets: bool = True) -> Config | None:
    """A single-tenant configuration from azure-identity's environment variables, if they are set."""
    env = os.environ
    if not (env.get("AZURE_TENANT_ID") and env.get("AZURE_CLIENT_ID")):
        return None
    table: dict[str, Any] = {"tenant_id": env["AZURE_TENANT_ID"], "client_id": env["AZURE_CLIENT_ID"]}
    # Without secrets to read (validate, --dry-run), the variable that will hold one need not be set yet.
    if env.get("AZURE_CLIENT_SECRET") or not (read_secrets or env.get("AZURE_CLIENT_CERTIFICATE_PATH")):
        table["client_secret_env"] = "AZURE_CLIENT_SECRET"
    elif env.get("AZURE_CLIENT_CERTIFICATE_PATH"):
        table["certificate_file"] = env["AZURE_CLIENT_CERTIFICATE_PATH"]
        if env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD"):
            table["certificate_password_env"] = "AZURE_CLIENT_CERTIFICATE_PASSWORD"
    warnings: list[str] = []
    tenant = _tenant("environment (AZURE_*)", Path.cwd(), "default", table, warnings, read_secrets=read_secrets)
    return Config(source="environment (AZURE_*)", tenants={"default": tenant}, warnings=tuple(warnings))


def load_config(path: Path | None = None, *, read_secrets: bool = True, per_tenant_errors: bool = False) -> Config:
    """Load from ``path``, else ``$BULKCONN_CONFIG``, else ``./bulkconn.toml``, else the AZURE_* variables.

    ``read_secrets=False`` and ``per_tenant_errors=True``: see :func:`parse_config`.
    """
    explicit = path or (Path(os.environ["BULKCONN_CONFIG"]) if os.environ.get("BULKCONN_CONFIG") else None)
    candidate = explicit or DEFAULT_CONFIG
    if not candidate.exists():
        if explicit is None and (env_config := from_azure_environment(read_secrets=read_secrets)) is not None:
            return env_config
        raise ConfigError(
            "configuration file not found (pass --config PATH, set BULKCONN_CONFIG, or set the AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET environment variables)",
            file=str(candidate),
        )
    try:
        text = candidate.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(candidate)) from exc
    return parse_config(
        text,
        file=str(candidate),
        base=candidate.resolve().parent,
        read_secrets=read_secrets,
        per_tenant_errors=per_tenant_errors,
    )
