"""An object id never changes a request's path: single requests and $batch sub-requests alike."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkconn.batching import envelope, request_for
from bulkconn.jobscan import scan_job
from bulkconn.model import Action, Operation

ROOT = "https://graph.example/v1.0"
COLLECTION = ("/", "v1.0", "deviceManagement", "exchangeConnectors")
HOSTILE = ["../../users", "a/../b", "a?b=1", "a#frag", "100%", "%2E%2E", "%2F", "a b", "é", "..\\x", "a;b", "~", "./a"]
IDS = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=40)).filter(lambda s: s not in (".", ".."))


def _ops(object_id: str) -> tuple[Operation, Operation]:
    update = Operation("1", 1, "contoso", "exchangeConnector", object_id, Action.UPDATE, {"serverName": "x"})
    sync = Operation("2", 2, "contoso", "exchangeConnector", object_id, Action.SYNC, sync_type="fullSync")
    return update, sync


def _assert_one_segment(url: yarl.URL, object_id: str, tail: tuple[str, ...]) -> None:
    assert url.host == "graph.example"
    assert url.raw_parts[: len(COLLECTION)] == COLLECTION
    assert url.parts[len(COLLECTION) :] == (object_id, *tail)
    assert url.query_string == "" and url.fragment == ""


@settings(max_examples=300, deadline=None, database=None)
@given(object_id=IDS)
def test_single_requests_keep_the_id_in_one_segment(object_id: str) -> None:
    """PATCH and sync URLs, parsed as aiohttp parses them, hold the id as exactly one path segment."""
    update, sync = _ops(object_id)
    _assert_one_segment(yarl.URL(ROOT + request_for(update).url), object_id, ())
    _assert_one_segment(yarl.URL(ROOT + request_for(sync).url), object_id, ("sync",))


@settings(max_examples=300, deadline=None, database=None)
@given(object_id=IDS)
def test_batch_sub_requests_keep_the_id_in_one_segment(object_id: str) -> None:
    """$batch sub-request URLs (relative to the version root, as Graph resolves them) keep the id in one segment."""
    update, sync = _ops(object_id)
    requests = orjson.loads(envelope([update, sync]))["requests"]
    _assert_one_segment(yarl.URL(ROOT + requests[0]["url"]), object_id, ())
    _assert_one_segment(yarl.URL(ROOT + requests[1]["url"]), object_id, ("sync",))


@pytest.mark.parametrize("object_id", [".", ".."])
def test_dot_segments_are_refused(object_id: str) -> None:
    """`.` and `..` cannot be made safe by encoding (servers resolve them): building the request refuses them."""
    update, _ = _ops(object_id)
    with pytest.raises(ValueError, match="is not an object id"):
        request_for(update)


@pytest.mark.parametrize("object_id", [*HOSTILE, ".", ".."])
def test_job_reader_refuses_ids_with_path_characters(tmp_path: Path, object_id: str) -> None:
    """The job reader refuses such ids before anything is sent, naming the line."""
    job = tmp_path / "job.jsonl"
    job.write_bytes(orjson.dumps({"tenant": "contoso", "id": object_id, "patch": {"serverName": "x"}}) + b"\n")
    problems: list[str] = []
    scan = scan_job(job, ["contoso"], on_invalid=lambda p: problems.append(p.message))
    assert scan.valid == 0
    assert problems == [f"line 1: 'id' {orjson.dumps(object_id).decode()} is not a valid object id"]
