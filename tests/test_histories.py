"""Serving's vectorised histories against the per-entry decoder and weight rule they replace."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from daemon.runtime.history import RATING_CODE, Entry, positive_weight_table
from daemon.runtime.history import entries as decode_history
from daemon.serve.histories import HistoryBatch, PositionMap

WEIGHTS = {"view": 0.2, "click": 1.0, "purchase": 4.0, "rating": 3.0, "dislike": -2.0}
PACK = struct.Struct(">IHBIB")


def blob(rng: np.random.Generator, n: int) -> bytes:
    return b"".join(
        PACK.pack(
            int(rng.integers(1_700_000_000, 1_700_100_000)),
            int(rng.integers(0, 1 << 16)),
            int(rng.integers(0, 256)),
            int(rng.integers(0, 1 << 32)),
            int(rng.integers(0, 256)),
        )
        for _ in range(n)
    )


def weight_of(entry: Entry, now_s: float, half_life_s: float) -> float:
    """The rule one entry at a time: type weight, a rating's only at >= 4, nothing negative, halved per half-life."""
    base = WEIGHTS.get(entry.type, 0.0)
    if entry.type == "rating" and entry.value < 4.0:
        base = 0.0
    return max(base, 0.0) * 2.0 ** (-max(0.0, now_s - entry.ts) / half_life_s)


def test_a_batch_decodes_like_the_per_entry_decoder() -> None:
    rng = np.random.default_rng(0)
    users = ["a", "b", "c", "d"]
    blobs = [blob(rng, 5), None, blob(rng, 1), blob(rng, 30)]
    batch = HistoryBatch.decode(users, blobs)
    assert batch.bounds.tolist() == [0, 5, 5, 6, 36]
    assert batch.owner().tolist() == [0] * 5 + [2] + [3] * 30
    for k, raw in enumerate(blobs):
        entries = decode_history(raw)
        lo, hi = batch.bounds[k], batch.bounds[k + 1]
        assert batch.ts[lo:hi].tolist() == [e.ts for e in entries]
        assert batch.item[lo:hi].tolist() == [e.item for e in entries]


def test_weights_follow_the_per_entry_rule_for_every_code() -> None:
    table = positive_weight_table(WEIGHTS, 4.0)
    assert table[RATING_CODE + 8] == 3.0 and table[RATING_CODE + 7] == 0.0  # rating 4.0 counts, 3.5 does not
    records = b"".join(PACK.pack(1_700_000_000 + code * 977, 0, 0, code, code) for code in range(256))
    batch = HistoryBatch.decode(["u"], [records])
    half_life = 86_400.0
    got = batch.decayed_weights(table, half_life)
    newest = max(e.ts for e in decode_history(records))  # ages count from the user's newest event
    want = [weight_of(e, newest, half_life) for e in decode_history(records)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_torn_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="history of 'b': 13 bytes"):
        HistoryBatch.decode(["a", "b"], [b"", b"x" * 13])


def test_positions_resolve_each_number_once_and_grow() -> None:
    asked: list[list[int]] = []

    def names(numbers: list[int]) -> dict[int, str]:
        asked.append(sorted(numbers))
        return {n: f"i{n}" for n in numbers if n != 7}  # 7 has no id (yet)

    positions = PositionMap("v1", {"i1": 0, "i5000": 1, "i3": 2})
    got = positions.lookup(np.array([1, 3, 3, 5000, 7, 2]), names)
    assert got.tolist() == [0, 2, 2, 1, -1, -1]  # 2 has an id the model lacks, 7 none at all
    assert positions.lookup(np.array([5000, 1, 2]), names).tolist() == [1, 0, -1]
    assert asked == [[1, 2, 3, 7, 5000]]  # the second lookup asked nothing
