"""One owner per format and rule: the history record and the segment chain as Python defines them are what
the Lua scripts on a real Redis write and count."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.ingest.store import RedisStore, StoreOptions
from daemon.runtime.history import LUA_FORMATS, RECORD, RECORD_SIZE, code_of, decode_code, entries, pack
from daemon.runtime.keys import Keys
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.state import StateReader
from schemas.events import EVENT_TYPES, InteractionEvent, ProfileEvent

pytestmark = pytest.mark.integration

LUA_PACK = "return struct.pack(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))"
T0 = 1_700_000_000_000


@pytest.mark.parametrize("record", [(0, 0, 0, 0), (1_700_000_123, 0xABCDEF, 4_000_000_000, 255), (7, 1, 2, 9)])
def test_lua_packs_the_record_python_defines(rclient: RedisClient, record: tuple[int, int, int, int]) -> None:
    packed = rclient.eval(LUA_PACK, 0, LUA_FORMATS["record"], *record)
    assert isinstance(packed, bytes) and len(packed) == RECORD_SIZE
    assert packed == pack(*record)
    row = np.frombuffer(packed, RECORD)[0]
    assert (int(row["ts"]), int(row["crc_hi"]) << 8 | int(row["crc_lo"]), int(row["item"]), int(row["code"])) == record
    key = rclient.eval("return {struct.unpack(ARGV[1], ARGV[2])}", 0, LUA_FORMATS["key_item"], packed)
    assert isinstance(key, list) and key[:3] == list(record[:3])


def test_every_code_round_trips() -> None:
    for kind in EVENT_TYPES:
        if kind != "rating":
            assert decode_code(code_of(kind, None)) == (kind, 0.0)
    for half_steps in range(11):
        assert decode_code(code_of("rating", half_steps / 2)) == ("rating", half_steps / 2)


def test_ingest_writes_records_and_segments_as_python_reads_them(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    segs = ("country", "age", "gender")
    store = RedisStore(
        topology,
        keys,
        StoreOptions(
            history_len=10,
            history_ttl_s=0,
            trending_half_life_s=86400,
            rating_threshold=4.0,
            weights={"purchase": 5.0, "rating": 4.0},
            segment_keys=segs,
        ),
    )
    odd = {"country": "U|S", "age": "25\n34", "gender": ""}  # separators in values; the chain stops at a gap
    store.apply_profiles([(ProfileEvent("u1", odd, T0), T0)])
    events = [
        (InteractionEvent("e1", "u1", "i1", "purchase", T0 + 1000, None), T0),
        (InteractionEvent("e2", "u1", "i2", "rating", T0 + 2000, 4.5), T0),
    ]
    assert store.apply_events(events, T0).applied == 2
    got = entries(rclient.get(keys.history("u1")))  # type: ignore[arg-type]
    assert [(e.ts, e.type, e.value) for e in got] == [
        (T0 // 1000 + 1, "purchase", 0.0),
        (T0 // 1000 + 2, "rating", 4.5),
    ]
    reader = StateReader(topology, keys)
    assert reader.segment_names() == {finest_segment(odd, segs)}
    shard = keys.shard_of("u1")  # the user's shard holds the count, under the name Python gives the segment
    assert rclient.zscore(keys.segment(shard, finest_segment(odd, segs)), "i1") == 5.0
    assert reader.segment_scores(finest_segment(odd, segs)) == {"i1": 5.0, "i2": 4.0}
