"""The exception tree. Only run-level failures are exceptions; a failed operation is data (an Outcome).

::

    BulkconnError                  anything bulkconn raises on purpose
    ├── UsageError                 the user's input is wrong; nothing was sent (exit code 2)
    │   ├── ConfigError            configuration file or environment (names file, tenant, key)
    │   ├── JobError               the job file as a whole, or a line under --strict (names file, line)
    │   │   └── JobChanged         the job file changed while a run was reading it (the run stops, resumable)
    │   └── ResumeError            a report that cannot be resumed (names the report and why)
    ├── AuthError                  a tenant's credentials or consent failed (quarantines that tenant)
    │   └── IdentityUnreachable    the identity service could not be reached (DNS, refused, TLS, timeout)
    └── TransportError             a request got no HTTP answer (connection, TLS, timeout); retryable

Third-party exceptions (aiohttp, msal, requests) are translated in ``transport`` and ``auth`` only.
Messages never contain secrets, tokens, assertions or Authorization headers.
"""

from __future__ import annotations


class BulkconnError(Exception):
    """Base of every error bulkconn raises on purpose."""


class UsageError(BulkconnError):
    """The user's input is wrong; nothing was sent."""


class ConfigError(UsageError):
    """A configuration mistake, with where it is."""

    def __init__(self, message: str, *, file: str = "", tenant: str = "", key: str = "") -> None:
        where = ", ".join(
            part for part in (file, f"tenant '{tenant}'" if tenant else "", f"key '{key}'" if key else "") if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.tenant, self.key, self.detail = file, tenant, key, message


class JobError(UsageError):
    """A job file that cannot be used, with where."""

    def __init__(self, message: str, *, file: str = "", line: int = 0) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.line = file, line


class JobChanged(JobError):
    """The job file changed while a run was reading it: the run stops starting anything new."""


class ResumeError(UsageError):
    """A report that cannot be resumed as asked."""


class AuthError(BulkconnError):
    """A tenant could not get a token (or lacks a permission); ``code`` is Entra's or Graph's."""

    def __init__(self, tenant: str, code: str, message: str) -> None:
        super().__init__(f"tenant '{tenant}': {code}: {message}")
        self.tenant, self.code, self.message = tenant, code, message

    def describe(self) -> str:
        """Why the tenant's operations fail, as the report and the terminal say it."""
        return f"authentication failed for tenant '{self.tenant}': {self.message}"


IDENTITY_UNREACHABLE = "identity_unreachable"


class IdentityUnreachable(AuthError):
    """The identity service did not answer at all (name not found, connection refused, TLS, timeout).

    Not a verdict on the credentials: they were never looked at. ``transient`` says whether trying again may
    help (an untrusted certificate fails the same way every time); ``attempts`` how many tries were made.
    """

    def __init__(self, tenant: str, host: str, reason: str, *, transient: bool = True, attempts: int = 1) -> None:
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        super().__init__(tenant, IDENTITY_UNREACHABLE, f"cannot reach the identity service at {host}: {reason}{tries}")
        self.host, self.reason, self.transient, self.attempts = host, reason, transient, attempts

    def after(self, attempts: int) -> IdentityUnreachable:
        """The same failure, saying how many attempts were made."""
        return IdentityUnreachable(self.tenant, self.host, self.reason, transient=self.transient, attempts=attempts)

    def describe(self) -> str:
        return f"tenant '{self.tenant}': {self.message}"


class TransportError(BulkconnError):
    """No usable HTTP answer: connection refused or reset, TLS failure, timeout, an answer cut off or too large.

    ``sent`` is False only when the request certainly never reached the service (the connection or its TLS
    handshake failed), so that even a non-idempotent action may be sent again.
    """

    def __init__(self, code: str, message: str, *, sent: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.sent = code, message, sent
