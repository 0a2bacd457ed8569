"""Reading from Graph: objects by id (one GET, or a ``$batch`` of GETs) and whole collections, page by page.

Reads use the same seams as writes: the :class:`~bulkconn.transport.Transport`, the tenant's pacer (through
:func:`bulkconn.pacing.acquire` with ``reads=n``, so they count against the tenant's any-request limit and Graph's
global one, not its writes, and it hears their answers), and :func:`bulkconn.retry.decide` for every answer (a GET
is idempotent: 429, 5xx and no answer are retried; 404 and other 4xx are final).

- :func:`get_objects` sends one request for up to 20 objects and returns one :class:`Read` per object; the
  engine settles each itself (its lanes own retries).
- :class:`Reads` does whole jobs of reading with its own retries: :meth:`Reads.list_pages` follows
  ``@odata.nextLink`` through a collection, :meth:`Reads.objects` reads objects in batches (``bulkconn plan``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from bulkconn.auth import TokenProvider
from bulkconn.batching import MAX_BATCH, SubResult, parse_single, unpack
from bulkconn.config import TenantConfig
from bulkconn.errors import AuthError, TransportError
from bulkconn.model import ErrorInfo
from bulkconn.pacing import Pacers, Pacing, acquire, heard
from bulkconn.retry import Answer, Attempt, Done, RetryPolicy, decide
from bulkconn.selectors import select_for
from bulkconn.targets import resolve_resource
from bulkconn.transport import Clock, HttpRequest, LoopClock, Transport


@dataclass(frozen=True, slots=True)
class Read:
    """The answer to one object's GET: the decision input, and the object when there was one."""

    answer: Answer
    body: Mapping[str, Any] | None = None
    request_id: str = ""


def object_url(resource: str, object_id: str, names: Sequence[str]) -> str:
    """Relative URL of one object of the job resource ``resource``, with ``$select`` of ``names`` when possible."""
    collection = resolve_resource(resource)
    fields = select_for(collection, names)
    path = f"/{collection.path}/{quote(object_id, safe='')}"
    return f"{path}?$select={','.join(fields)}" if fields else path


def _envelope(urls: Sequence[str]) -> bytes:
    return orjson.dumps({"requests": [{"id": str(i), "method": "GET", "url": u} for i, u in enumerate(urls, 1)]})


def _read(sub: SubResult, body: Any, request_id: str, *, whole_envelope: bool = False) -> Read:
    answer = Answer(status=sub.status, headers=sub.headers, error=sub.error, whole_envelope=whole_envelope)
    ok = sub.status is not None and 200 <= sub.status < 300
    if ok and not isinstance(body, Mapping):
        unreadable = ErrorInfo("ResponseInvalid", "the answer to a GET held no JSON object")
        return Read(Answer(status=None, error=unreadable), None, request_id)
    return Read(answer, body if ok else None, request_id)


async def get_objects(
    transport: Transport,
    tenant: TenantConfig,
    urls: Sequence[str],
    *,
    token: str,
    client_request_id: str,
    fresh_connection: bool = False,
) -> list[Read]:
    """GET ``urls`` (relative to the tenant's Graph root) in one request: one :class:`Read` per URL, in order."""
    if not 0 < len(urls) <= MAX_BATCH:
        raise ValueError(f"a read holds 1 to {MAX_BATCH} objects, not {len(urls)}")
    single = len(urls) == 1
    request = HttpRequest(
        method="GET" if single else "POST",
        url=f"{tenant.graph_root}{urls[0] if single else '/$batch'}",
        token=token,
        client_request_id=client_request_id,
        body=None if single else _envelope(urls),
        ca_bundle=tenant.ca_bundle,
        fresh_connection=fresh_connection,
    )
    try:
        resp = await transport.send(request)
    except TransportError as exc:
        return [Read(Answer(status=None, error=ErrorInfo(exc.code, exc.message)))] * len(urls)
    request_id = resp.headers.get("request-id", "")
    whole = parse_single(resp.status, resp.headers, resp.body)
    if single or resp.status != 200:
        body = _json(resp.body) if single else None
        return [_read(whole, body, request_id, whole_envelope=not single)] * len(urls)
    return [_read(sub, sub.body, sub.headers.get("request-id", request_id)) for sub in unpack(resp.body, len(urls))]


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


class ReadFailed(Exception):
    """A read that ended without the object: ``error`` says why (``status`` 404 when it does not exist)."""

    def __init__(self, error: ErrorInfo, status: int | None) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error, self.status = error, status


@dataclass(slots=True)
class _Pending:
    url: str
    attempts: int = 0
    started: float = 0.0
    reauthenticated: bool = False
    result: Mapping[str, Any] | ReadFailed | None = None


@dataclass(slots=True, kw_only=True)
class Reads:
    """Reads with retries, paced per tenant; for the runner's selector listings and ``bulkconn plan``."""

    transport: Transport
    auth: TokenProvider
    tenants: Mapping[str, TenantConfig]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Clock = field(default_factory=LoopClock)
    # The pacer a lane would make for a tenant (reads count against ``reads_per_20s``).
    pacer_factory: Callable[[TenantConfig, Clock], Pacing] = field(default_factory=Pacers)
    rng: random.Random = field(default_factory=random.Random)
    pacers: dict[str, Pacing] = field(default_factory=dict)
    requests: int = 0  # HTTP requests sent (a $batch counts once)

    def pacer(self, alias: str) -> Pacing:
        if alias not in self.pacers:
            self.pacers[alias] = self.pacer_factory(self.tenants[alias], self.clock)
        return self.pacers[alias]

    async def list_pages(
        self, alias: str, path: str, on_page: Callable[[list[Mapping[str, Any]]], None]
    ) -> ErrorInfo | None:
        """Every page of the listing at ``path``, in order, to ``on_page``; ``None``, or why it stopped.

        A ``@odata.nextLink`` is followed only to the tenant's own Graph root: the token goes nowhere else.
        """
        root = self.tenants[alias].graph_root
        url: str | None = path
        while url is not None:
            try:
                page = await self._one(alias, _Pending(url))
            except ReadFailed as exc:
                return exc.error
            values = page.get("value")
            if not isinstance(values, list):
                return ErrorInfo("ResponseInvalid", f"the listing of {path} held no 'value' list")
            on_page([v for v in values if isinstance(v, Mapping)])
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                url = None
            elif not link.startswith(f"{root}/"):
                return ErrorInfo("NextLinkRefused", f"the listing of {path} pointed outside {root}; not followed")
            else:
                url = link.removeprefix(root)
        return None

    async def objects(self, alias: str, urls: Sequence[str]) -> list[Mapping[str, Any] | ReadFailed]:
        """Each object at ``urls`` (or why it could not be read), in order; batched by 20, paced as reads."""
        pending = [_Pending(u) for u in urls]
        for start in range(0, len(pending), MAX_BATCH):
            await self._batch(alias, pending[start : start + MAX_BATCH])
        return [_result(p) for p in pending]

    async def _one(self, alias: str, item: _Pending) -> Mapping[str, Any]:
        await self._batch(alias, [item])
        result = _result(item)
        if isinstance(result, ReadFailed):
            raise result
        return result

    async def _batch(self, alias: str, items: list[_Pending]) -> None:
        """Read ``items`` until each has a result: retry what the decision says, after the longest wait asked."""
        todo = items
        while todo:
            pacer = self.pacer(alias)
            sent_at = await acquire(pacer, writes=0, reads=len(todo))
            try:
                token = await self.auth.token(alias)
            except AuthError as exc:
                for item in todo:
                    item.result = ReadFailed(ErrorInfo(exc.code, exc.describe()), None)
                return
            self.requests += 1
            now = self.clock.now()
            for item in todo:
                item.started = item.started or now
                item.attempts += 1
            reads = await get_objects(
                self.transport, self.tenants[alias], [i.url for i in todo], token=token, client_request_id=_id()
            )
            answers = [read.answer for read in reads]
            pacer.heard(heard(answers, sent_at=sent_at, reads=True, retry_after_cap_s=self.policy.retry_after_cap_s))
            todo, wait_s = await self._settle(alias, todo, reads, token)
            if todo and wait_s:
                await self.clock.sleep(wait_s)

    async def _settle(
        self, alias: str, items: list[_Pending], reads: list[Read], token: str
    ) -> tuple[list[_Pending], float]:
        again: list[_Pending] = []
        wait_s = 0.0
        invalidated = False
        for item, read in zip(items, reads, strict=True):
            attempt = Attempt(
                number=item.attempts,
                elapsed_s=self.clock.now() - item.started,
                idempotent=True,
                reauthenticated=item.reauthenticated,
            )
            decision = decide(read.answer, attempt, tenant=alias, policy=self.policy, rng=self.rng)
            if isinstance(decision, Done):
                error = decision.error or ErrorInfo("ReadFailed", "the read failed")
                item.result = (
                    read.body if decision.succeeded and read.body is not None else ReadFailed(error, read.answer.status)
                )
                continue
            if decision.reauthenticate:
                item.reauthenticated = True
                if not invalidated:  # one refused token is dropped once, however many reads it refused
                    await self.auth.invalidate(alias, token)
                    invalidated = True
            wait_s = max(wait_s, decision.after_s)
            again.append(item)
        return again, wait_s


def _result(item: _Pending) -> Mapping[str, Any] | ReadFailed:
    assert item.result is not None, "every item of a batch ends with a result"
    return item.result


def _id() -> str:
    return str(uuid.uuid4())
