"""Send a lane's batch as one request (a single call or a ``$batch`` envelope) and get one answer per operation.

Both kinds of answer come back in the same shape (:class:`~bulkconn.retry.Answer`), in the order of the
operations, so that the engine settles them the same way. Parsing itself is pure and lives in
:mod:`bulkconn.batching`; a failure to get any HTTP answer arrives here as a ``TransportError`` and
becomes an answer without a status.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import orjson
from msgspec import Struct

from bulkconn.batching import SubResult, envelope, parse_single, request_for, unpack
from bulkconn.config import TenantConfig
from bulkconn.errors import TransportError
from bulkconn.model import ErrorInfo, Operation
from bulkconn.retry import Answer
from bulkconn.transport import HttpRequest, Transport

_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122's variant: 10xx
_IDS_PER_DRAW = 256
_random_hex: list[str] = []  # 32 random hex digits each, drawn from os.urandom in blocks: one system call per 256 ids
os.register_at_fork(after_in_child=_random_hex.clear)  # a forked child never repeats its parent's ids


def new_request_id() -> str:
    """A random UUID (version 4) as text, for ``client-request-id``: what ``str(uuid.uuid4())`` gives, in a sixth of
    its CPU (one per request)."""
    if not _random_hex:
        block = os.urandom(16 * _IDS_PER_DRAW).hex()
        _random_hex.extend([block[start : start + 32] for start in range(0, len(block), 32)])
    h = _random_hex.pop()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class Dispatched(Struct):  # not frozen: one per request on the hot path (a frozen __init__ costs more)
    """The answers to one request, one per operation, with the request's ids."""

    answers: list[Answer]
    request_ids: list[str]  # the service's request-id for each operation ("" when none came back)


async def dispatch(
    transport: Transport,
    tenant: TenantConfig,
    ops: Sequence[Operation],
    *,
    token: str,
    client_request_id: str,
    fresh_connection: bool,
) -> Dispatched:
    """Send ``ops`` (one: a single request; more: a ``$batch``) and return one answer per operation."""
    root = tenant.graph_root
    if len(ops) == 1:
        req = request_for(ops[0])
        method, url, body = req.method, f"{root}{req.url}", orjson.dumps(req.body)
    else:
        method, url, body = "POST", f"{root}/$batch", envelope(ops)
    request = HttpRequest(
        method=method,
        url=url,
        token=token,
        client_request_id=client_request_id,
        body=body,
        ca_bundle=tenant.ca_bundle,
        fresh_connection=fresh_connection,
        root=root,  # the path after it is percent-encoded already (registry.item_path)
    )
    try:
        resp = await transport.send(request)
    except TransportError as exc:
        failed = Answer(status=None, error=ErrorInfo(exc.code, exc.message), sent=exc.sent)
        return Dispatched([failed] * len(ops), [""] * len(ops))
    request_id = resp.headers.get("request-id", "")
    if len(ops) == 1 and 200 <= resp.status < 300:  # nearly every single answer: what parse_single gives, directly
        return Dispatched([Answer(status=resp.status, headers=resp.headers)], [request_id])
    whole = parse_single(resp.status, resp.headers, resp.body)
    if len(ops) == 1 or resp.status != 200:
        # A single answer, or an envelope that failed as a whole: every operation shares it.
        answer = _answer(whole, whole_envelope=len(ops) > 1)
        return Dispatched([answer] * len(ops), [request_id] * len(ops))
    subs = unpack(resp.body, len(ops))
    return Dispatched(
        [_answer(sub, whole_envelope=False) for sub in subs],
        [sub.headers.get("request-id", request_id) for sub in subs],
    )


def _answer(sub: SubResult, *, whole_envelope: bool) -> Answer:
    return Answer(status=sub.status, headers=sub.headers, error=sub.error, whole_envelope=whole_envelope)
