"""A burst of ten times the steady rate: the daemons catch up, lose and double nothing, and their memory stays
near its steady size (a backlog waits in Kafka, not in recd). bench/burst.py at a size for CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.burst import BurstConfig, run_burst

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_tenfold_burst_is_caught_up_with_nothing_lost_and_memory_bounded(tmp_path: Path) -> None:
    config = BurstConfig(
        rate=400, factor=10, steady_s=5, burst_s=10, after_s=10, warmup=20_000, users=2_000, items=1_000
    )
    result = run_burst(config, tmp_path)
    assert result["events"] == 20_000 + 400 * 5 + 4_000 * 10 + 400 * 10
    assert (result["lost"], result["doubled"], result["users_without_list"]) == (0, 0, 0), result
    assert result["histories_match"] and result["popularity_match"] and result["segments_match"], result
    assert result["recovery_s"] is not None and result["exits_unprompted"] == 0, result
    for role in ("ingest", "serve"):
        assert 0 < result["rss_steady_mib"][role] <= result["rss_peak_mib"][role], result
        assert result["rss_peak_mib"][role] - result["rss_steady_mib"][role] < 200, result
