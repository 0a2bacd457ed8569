"""Operations read ahead of sending: a few large trips per lane, within one budget shared by every lane."""

from __future__ import annotations

import pytest

from bulkconn.engine.lane import READ_AHEAD, READ_CHUNK, read_chunk


@pytest.mark.parametrize("lanes", [1, 4, 50, 64, 65, 1_000, 4_000, 100_000])
def test_lanes_together_read_ahead_at_most_the_budget(lanes: int) -> None:
    """Each lane reads at most READ_CHUNK per trip, and all lanes together at most READ_AHEAD (one each at least)."""
    chunk = read_chunk(lanes)
    assert 1 <= chunk <= READ_CHUNK
    assert chunk * lanes <= max(READ_AHEAD, lanes)


def test_a_few_lanes_read_full_chunks_and_many_lanes_share_the_budget() -> None:
    """Up to READ_AHEAD // READ_CHUNK tenants read whole chunks; beyond that each reads its share."""
    assert read_chunk(READ_AHEAD // READ_CHUNK) == READ_CHUNK
    assert read_chunk(1_000) == READ_AHEAD // 1_000


@pytest.mark.parametrize("configured", [1, 50, 64, 65, 1_000, 4_000])
def test_what_the_scan_keeps_per_tenant_fits_its_lanes_first_trip(configured: int) -> None:
    """The scan keeps read_chunk(configured tenants) per tenant; a run has at most that many lanes, each reading at
    least as much per trip: the kept operations are a lane's first read-ahead, within the same budget."""
    for lanes in {1, configured // 2 or 1, configured}:
        assert read_chunk(configured) <= read_chunk(lanes)
    assert read_chunk(configured) * configured <= max(READ_AHEAD, configured)
