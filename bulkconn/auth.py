"""Token providers: MSAL off the event loop, one app and one lock per tenant.

* One ``ConfidentialClientApplication`` per tenant, built lazily in a worker thread (its constructor
  does network I/O), every call bounded by a timeout.
* One ``asyncio.Lock`` per tenant: concurrent workers cause one token request, not one each.
* MSAL's own cache is reused; it refreshes 5 minutes before expiry by itself. Device-code tokens are kept
  between runs by :mod:`bulkconn.tokencache` (the OS's encrypted store, else an owner-only file).
* A custom authority host (the emulator, a proxy) skips instance discovery, which would otherwise go
  to login.microsoftonline.com.
* Every tenant's app sends its requests through the run's event loop (:mod:`bulkconn.authhttp`): one aiohttp
  session per CA bundle, so one connection pool and TLS setup for the identity service, not one per tenant, and
  the same trust and proxy rules as Graph's. With ``ca_bundle`` it trusts exactly that bundle and no proxy.
  Without a running loop (``bulkconn login``) a shared ``requests`` session does the same, with ``trust_env`` off
  for a ``ca_bundle`` (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` would override ``verify=``; docs/service-facts.md §5).
* MSAL calls run in the provider's own pool of up to :data:`TOKEN_THREADS` threads, not asyncio's default executor
  (a handful of threads): 1,000 tenants whose identity answers take 200 ms each get their tokens in seconds. How many
  run at once starts small and grows while calls wait on the service (:mod:`bulkconn.callgate`): threads that all
  run at once against a quick service cost more CPU handing the GIL around than MSAL spends working.
* An identity service that does not answer at all (name not found, connection refused or reset, timeout) is
  tried :data:`CONNECT_ATTEMPTS` times, :data:`CONNECT_BACKOFF_S` then twice that apart, and then reported as
  :class:`IdentityUnreachable`: not a refused credential. Callers waiting on the same tenant share that one
  failure instead of each trying again.

msal, msal-extensions, requests and (wrapped in :class:`~bulkconn.authhttp.NoAnswer`) aiohttp exceptions are
translated to :class:`AuthError` here and nowhere else. Error texts carry Entra's code and description, never a
secret, assertion or token.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import msal
import requests
from requests.adapters import HTTPAdapter

from bulkconn.authhttp import LoopClosed, LoopHttp, NoAnswer
from bulkconn.callgate import CallGate
from bulkconn.config import (
    CertificateCredential,
    Config,
    DeviceCodeCredential,
    SecretCredential,
    TenantConfig,
)
from bulkconn.errors import AuthError, IdentityUnreachable

log = logging.getLogger(__name__)
REFRESH_MARGIN_S = 300.0  # as MSAL: a token with less than 5 minutes left is renewed
CONNECT_ATTEMPTS = 3  # tries to reach the identity service before saying it cannot be reached
CONNECT_BACKOFF_S = 1.0  # wait before the second try, doubled before each next one (a VPN or proxy coming back)
TOKEN_THREADS = 128  # identity calls in flight at once (each a blocking MSAL call in its own thread, made on demand)


class TokenProvider(Protocol):
    """Where the engine gets bearer tokens."""

    async def token(self, tenant: str) -> str: ...

    async def invalidate(self, tenant: str, token: str) -> None: ...

    def token_requests(self, tenant: str) -> int: ...


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout (msal ignores ``timeout=`` when given a session)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(method, url, *args, **kwargs)


def _cache_errors() -> tuple[type[Exception], ...]:
    """What using the token cache raises; evaluated only while matching an error, so the cache's store (msal-extensions)
    is imported only by device-code tenants or a failure, not before every run's first request."""
    from bulkconn.tokencache import CACHE_ERRORS

    return CACHE_ERRORS


def _cache_error(tenant: TenantConfig, exc: Exception) -> AuthError:
    """The token cache could not be read or locked (another user's file, a locked Keychain)."""
    cred = tenant.credential
    where = cred.token_cache_file if isinstance(cred, DeviceCodeCredential) else "the token cache"
    return AuthError(
        tenant.alias,
        "token_cache_unreadable",
        f"cannot use the token cache {where} ({type(exc).__name__}); sign in again with `bulkconn login {tenant.alias}`",
    )


def _drop_access_tokens(cache: msal.TokenCache) -> None:
    for at in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        cache.remove_at(at)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests wraps urllib3, which wraps the socket or ssl error."""
    todo, seen = [exc], set[int]()
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        inner = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args[:1]]
        todo += [i for i in inner if isinstance(i, BaseException)]


_REASONS: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((LoopClosed,), "the run ended before it answered"),
    ((ssl.SSLCertVerificationError,), "its TLS certificate is not trusted; check the tenant's ca_bundle"),
    # Before the socket errors: a proxy that refuses the connection is the proxy's failure, not the service's.
    (
        (requests.exceptions.ProxyError, aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError),
        "the proxy failed",
    ),
    ((socket.gaierror,), "the name was not found (DNS)"),
    ((ConnectionRefusedError,), "connection refused"),
    ((ConnectionResetError, aiohttp.ServerDisconnectedError), "connection reset"),
    ((requests.exceptions.Timeout, TimeoutError), "no answer in {timeout_s:g} s"),
    ((ssl.SSLError,), "the TLS handshake failed"),
)
_NOT_TRANSIENT = (LoopClosed, ssl.SSLCertVerificationError)  # the same every time: not tried again
_NO_ANSWER = (requests.exceptions.RequestException, NoAnswer)


def unreachable(alias: str, authority_host: str, exc: BaseException, *, timeout_s: float) -> IdentityUnreachable:
    """The identity service did not answer ``exc``'s request: why, in a few words (never a URL's query)."""
    host = urlsplit(authority_host).netloc or authority_host
    causes = list(_causes(exc))
    for kinds, reason in _REASONS:
        if any(isinstance(cause, kinds) for cause in causes):
            transient = not issubclass(kinds[0], _NOT_TRANSIENT)
            return IdentityUnreachable(alias, host, reason.format(timeout_s=timeout_s), transient=transient)
    return IdentityUnreachable(alias, host, str(exc) if isinstance(exc, NoAnswer) else type(exc).__name__)


def _describe(result: dict[str, Any]) -> str:
    text = str(result.get("error_description", "")).split(" Trace ID:")[0].strip()
    return text or str(result.get("error", "unknown error"))


class MsalTokenProvider:
    """Client-credential (secret or certificate) and device-code tokens for every configured tenant."""

    def __init__(
        self,
        config: Config,
        *,
        timeout_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        threads: int = TOKEN_THREADS,
    ) -> None:
        self._config = config
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._backoff_s = CONNECT_BACKOFF_S  # read here, so that tests can turn the waiting off
        self._failures: dict[str, tuple[int, AuthError]] = {}  # tenant -> (how many so far, the latest)
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bulkconn-token")
        self._gate = CallGate(threads)
        self._apps: dict[str, msal.ClientApplication] = {}
        self._sessions: dict[str | None, requests.Session] = {}  # CA bundle (None: the system's) -> shared session
        self._http: LoopHttp | None = None  # the identity calls' aiohttp sessions, on the loop that first used this
        self._locks: dict[str, asyncio.Lock] = {}
        self._issued: dict[str, str] = {}
        self._fresh_until: dict[str, float] = {}  # tenant -> monotonic time until which _issued is served as is
        self._requests: dict[str, int] = {}

    def token_requests(self, tenant: str) -> int:
        """How many times this provider went to the identity service for ``tenant``."""
        return self._requests.get(tenant, 0)

    def _http_client(self, tenant: TenantConfig) -> Any:
        """What this tenant's app sends its requests with: the loop's aiohttp sessions once a coroutine has used
        this provider (a run, ``auth check``), else a ``requests`` session (``bulkconn login``, without a loop)."""
        if self._http is not None:
            return self._http.client(tenant.ca_bundle)
        return self._session(tenant)

    def _session(self, tenant: TenantConfig) -> requests.Session:
        """The session every app with this tenant's CA bundle shares when there is no event loop (created on first use).

        Without a bundle it is what MSAL would build for each app (one retry on a failed connection).
        """
        bundle = None if tenant.ca_bundle is None else str(tenant.ca_bundle)
        session = self._sessions.get(bundle)
        if session is None:
            session = self._sessions[bundle] = _TimeoutSession(self._timeout_s)
            adapter = HTTPAdapter(pool_maxsize=self._threads, max_retries=0 if bundle else 1)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            if bundle is not None:
                session.verify = bundle
                session.trust_env = False
        return session

    def _build(self, tenant: TenantConfig) -> msal.ClientApplication:
        cred = tenant.credential
        common: dict[str, Any] = {
            "authority": f"{tenant.authority_host}/{tenant.tenant_id}",
            "timeout": self._timeout_s,
        }
        if tenant.custom_authority:
            common["instance_discovery"] = False
        common["http_client"] = self._http_client(tenant)
        if isinstance(cred, DeviceCodeCredential):
            from bulkconn.tokencache import token_cache  # device-code tenants only

            cache = token_cache(cred.token_cache_file)
            return msal.PublicClientApplication(tenant.client_id, token_cache=cache, **common)
        credential: Any
        if isinstance(cred, SecretCredential):
            credential = cred.secret.reveal()
        else:
            assert isinstance(cred, CertificateCredential)
            credential = {"private_key": cred.private_key_pem.reveal(), "public_certificate": cred.certificate_pem}
        return msal.ConfidentialClientApplication(tenant.client_id, client_credential=credential, **common)

    def _app(self, tenant: TenantConfig) -> msal.ClientApplication:
        app = self._apps.get(tenant.alias)
        if app is None:
            try:
                app = self._apps[tenant.alias] = self._build(tenant)
            except ValueError as exc:
                # msal raises ValueError when discovery answers 4xx: the tenant is unknown at that authority.
                raise AuthError(
                    tenant.alias,
                    "invalid_tenant",
                    f"tenant '{tenant.tenant_id}' was not found at {tenant.authority_host} ({str(exc)[:120]})",
                ) from None
        return app

    def _acquire(self, tenant: TenantConfig) -> str:
        """Blocking: runs in a worker thread."""
        try:
            app = self._app(tenant)
            scopes = [tenant.scope]
            if isinstance(app, msal.ConfidentialClientApplication):
                result = app.acquire_token_for_client(scopes)
            else:
                accounts = app.get_accounts()
                result = app.acquire_token_silent(scopes, account=accounts[0]) if accounts else None
                if result is None:
                    raise AuthError(
                        tenant.alias, "login_required", f"no signed-in user: run `bulkconn login {tenant.alias}`"
                    )
        except _NO_ANSWER as exc:
            raise unreachable(tenant.alias, tenant.authority_host, exc, timeout_s=self._timeout_s) from None
        except msal.exceptions.MsalServiceError as exc:
            raise AuthError(tenant.alias, "identity_service_error", str(exc)[:200]) from None
        except _cache_errors() as exc:  # after requests' errors, which are OSErrors too
            raise _cache_error(tenant, exc) from None
        if result.get("token_source") != "cache":
            self._requests[tenant.alias] = self._requests.get(tenant.alias, 0) + 1
        if "access_token" not in result:
            raise AuthError(tenant.alias, str(result.get("error", "unknown_error")), _describe(result))
        token = str(result["access_token"])
        self._issued[tenant.alias] = token
        # Serve it from memory while it has more than MSAL's own 5-minute refresh margin left.
        lifetime_s = float(result.get("expires_in", 0))
        self._fresh_until[tenant.alias] = time.monotonic() + lifetime_s - REFRESH_MARGIN_S
        return token

    def _lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    def _tenant(self, alias: str) -> TenantConfig:
        try:
            return self._config.tenants[alias]
        except KeyError:
            raise AuthError(alias, "unknown_tenant", "not in the configuration") from None

    def _bind(self) -> None:
        """Send the identity calls on the running loop (the first one to use this provider: one loop per provider)."""
        loop = asyncio.get_running_loop()
        if self._http is None:
            self._http = LoopHttp(loop, timeout_s=self._timeout_s, pool=self._threads)
        elif self._http.loop is not loop:
            raise RuntimeError("a token provider serves the event loop that first used it, not another")

    async def _in_thread(self, fn: Callable[[], Any], alias: str) -> Any:
        self._bind()
        slot = await self._gate.enter()  # a few calls at once while they are quick, more while they wait (callgate)
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._executor, fn), self._timeout_s * 3
            )
        except TimeoutError:
            # Not tried again: this call already waited three request timeouts.
            host = urlsplit(self._tenant(alias).authority_host).netloc
            reason = f"no answer in {self._timeout_s * 3:g} s"
            raise IdentityUnreachable(alias, host, reason, transient=False) from None
        finally:
            self._gate.leave(slot)

    async def _fetch(self, cfg: TenantConfig) -> str:
        """A token from the identity service, trying again (with backoff) while it cannot be reached."""
        attempt = 1
        while True:
            try:
                token: str = await self._in_thread(lambda: self._acquire(cfg), cfg.alias)
                return token
            except IdentityUnreachable as exc:
                if not exc.transient or attempt >= CONNECT_ATTEMPTS:
                    raise exc.after(attempt) from None
                log.debug("tenant %s: %s; trying again", cfg.alias, exc.reason)
                await self._sleep(self._backoff_s * 2 ** (attempt - 1))
                attempt += 1

    async def token(self, tenant: str) -> str:
        """A valid access token for ``tenant`` (from MSAL's cache when it still has one).

        Raises:
            AuthError: the credentials were refused; :class:`IdentityUnreachable` when no answer came at all.
        """
        cfg = self._tenant(tenant)
        cached = self._fresh(tenant)
        if cached is not None:
            return cached  # the hot path: no thread hop, no lock
        failures_before, _ = self._failures.get(tenant, (0, None))
        async with self._lock(tenant):
            cached = self._fresh(tenant)  # another worker may have fetched it while this one waited
            if cached is not None:
                return cached
            count, latest = self._failures.get(tenant, (0, None))
            if latest is not None and count > failures_before:
                raise latest  # it failed while this caller waited: one failure, not one per waiting worker
            try:
                return await self._fetch(cfg)
            except AuthError as exc:
                self._failures[tenant] = (count + 1, exc)
                raise

    def _fresh(self, tenant: str) -> str | None:
        """The token last issued for ``tenant`` while it has more than the refresh margin left."""
        cached = self._issued.get(tenant)
        return cached if cached is not None and time.monotonic() < self._fresh_until.get(tenant, 0.0) else None

    async def invalidate(self, tenant: str, token: str) -> None:
        """Forget ``token`` (Graph said 401) so the next :meth:`token` call gets a fresh one."""
        async with self._lock(tenant):
            app = self._apps.get(tenant)
            if app is None or self._issued.get(tenant) != token:
                return  # another worker already replaced it
            self._issued.pop(tenant, None)
            self._fresh_until.pop(tenant, None)
            if isinstance(app, msal.ConfidentialClientApplication):
                await self._in_thread(app.remove_tokens_for_client, tenant)
            else:  # the cache reads and writes its store: not on the event loop
                await self._in_thread(lambda: _drop_access_tokens(app.token_cache), tenant)

    def close(self) -> None:
        """Stop: waiting MSAL calls fail at once, the sessions close (on the loop's next turn when there is one)."""
        if self._http is not None:
            self._http.close()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """:meth:`close`, and wait until the loop's sessions are closed."""
        self.close()
        if self._http is not None:
            await self._http.aclose()


def device_login(config: Config, alias: str, echo: Callable[[str], None], *, timeout_s: float = 30.0) -> str:
    """Run the device-code flow for ``alias`` (blocking) and persist the token cache; return the user name."""
    provider = MsalTokenProvider(config, timeout_s=timeout_s)
    tenant = provider._tenant(alias)
    if not isinstance(tenant.credential, DeviceCodeCredential):
        raise AuthError(alias, "not_device_code", 'set auth = "device-code" for this tenant to sign in interactively')
    try:
        app = provider._app(tenant)
        assert isinstance(app, msal.PublicClientApplication)
        flow = app.initiate_device_flow(scopes=[tenant.scope])
        if "user_code" not in flow:
            raise AuthError(alias, str(flow.get("error", "device_flow_failed")), _describe(flow))
        echo(str(flow["message"]))
        result = app.acquire_token_by_device_flow(flow)  # the cache saves itself to its store
        if "access_token" not in result:
            raise AuthError(alias, str(result.get("error", "unknown_error")), _describe(result))
        claims = result.get("id_token_claims", {})
        return str(claims.get("preferred_username", "signed in"))
    except requests.exceptions.RequestException as exc:
        raise unreachable(alias, tenant.authority_host, exc, timeout_s=timeout_s) from None
    except _cache_errors() as exc:  # after requests' errors, which are OSErrors too
        raise _cache_error(tenant, exc) from None
    finally:
        provider.close()
