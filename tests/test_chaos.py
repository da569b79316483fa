"""The chaos replay (bench/chaos.py) at CI size: SIGKILLs of ingest and serve, a Redis restart and a broker
outage during a replay with duplicates and out-of-order events; nothing lost, nothing doubled, every user
served by the model. It starts its own broker and redis-server (it restarts that one); the replay runs once
for the module and each test checks a part of its figures."""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CI_SIZE = ChaosConfig(
    events=100_000, kills=5, users=2_000, items=500, seed=3, broker_pause_s=5.0, shards=16, drain_timeout_s=120.0
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_chaos(CI_SIZE, tmp_path_factory.mktemp("chaos"))


def test_faults_happened(result: dict[str, Any]) -> None:
    assert result["kills"] >= 5, result
    assert result["kills_ingest"] >= 1 and result["kills_serve"] >= 1, result
    assert result["redis_restarts"] == 1 and result["broker_outages"] == 1, result
    assert result["duplicates_sent"] > 0 and result["out_of_order"] > 0, result
    assert result["redelivered"] > 0, result  # kills and the outage made ingest consume messages again


def test_nothing_lost_or_doubled(result: dict[str, Any]) -> None:
    assert result["lost"] == 0, result
    assert result["doubled"] == 0, result
    assert result["histories_match"] and result["popularity_match"] and result["segments_match"], result
    assert result["applied"] == result["expected_applied"], result
    assert result["committed"] == result["messages"], result
    assert result["lists_missing"] == 0, result  # every user with events has a list (of whichever model)


def test_every_user_has_a_list_of_the_current_model(result: dict[str, Any]) -> None:
    assert result["users_without_list"] == 0, result
