"""bench/scale.py at a size for CI: snapshot -> daemon train and serve -> fits -> index -> warm start, end to end,
and the lists it leaves in Redis; the warm-start check and the event draw on their own."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from bench import scale
from bench.common import drop_prefix
from bench.scale import ScaleConfig, run_scale
from bench.scale_load import POSITIVE_TYPES, Draw, draws, with_new_items
from bench.scale_stages import rows_kept
from daemon.dev.synthetic import SyntheticSpec, SyntheticWorld
from daemon.runtime.history import decode
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader
from trainer.models.ials import ImplicitALS

CONFIG = ScaleConfig(
    users=5_000,
    items=10_000,
    positives=100_000,
    sample=500,
    settings=(("index_kind", "hnsw"),),  # the index a large catalogue gets ("auto" picks flat at this size)
    keep=True,
)
REQUIRED = (
    "users",
    "items",
    "positives",
    "snapshot_records_per_s",
    "snapshot_s",
    "snapshot_peak_rss_bytes",
    "fit_s",
    "fit_s_per_epoch",
    "item2vec_pairs_per_s",
    "warm_start_s",
    "warm_start_kept_old_rows",
    "index_build_s",
    "index_memory_bytes",
    "index_recall_at_10",
    "index_qps",
    "serve_users_per_s",
    "serve_cpu_us_per_user",
    "serve_rss_bytes",
    "peak_rss_bytes",
    "time_to_first_rec_s",
)


pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_settings(redis_url: str, figures: dict[str, Any]) -> Settings:
    return load_settings(environ={}, redis_url=redis_url, redis_prefix=figures["redis_prefix"])


@pytest.fixture(scope="module")
def result(redis_url: str) -> Iterator[dict[str, Any]]:
    """One run of the benchmark, its keys and models kept for the checks and removed after them."""
    started_ms = int(time.time() * 1000)
    figures = run_scale(ScaleConfig(**{**CONFIG.__dict__, "redis_url": redis_url}))
    try:
        yield {**figures, "started_ms": started_ms, "ended_ms": int(time.time() * 1000)}
    finally:
        drop_prefix(topology_of(run_settings(redis_url, figures)).client, figures["redis_prefix"])
        shutil.rmtree(figures["model_dir"], ignore_errors=True)


def test_every_figure_is_reported_and_sane(result: dict[str, Any]) -> None:
    for key in REQUIRED:
        assert key in result, key
        assert isinstance(result[key], bool) or math.isfinite(result[key]), (key, result[key])
    assert (result["users"], result["items"], result["positives"]) == (5_000, 10_000, 100_000)
    assert result["load_applied"] == CONFIG.positives  # every event distinct and positive: all applied
    assert 0 < result["snapshot_records"] <= CONFIG.positives and result["snapshot_users"] <= CONFIG.users
    assert result["snapshot_records"] / result["snapshot_s"] == pytest.approx(result["snapshot_records_per_s"], 0.05)
    assert result["fit_preset"] == load_settings(environ={}).model_kind and result["fit_epochs"] >= 1
    assert result["fit_s_per_epoch"] * result["fit_epochs"] == pytest.approx(
        result["fit_s"], abs=0.02 * result["fit_epochs"]
    )
    assert result["item2vec_pairs"] > result["snapshot_records"] and result["item2vec_pairs_per_s"] > 0
    peaks = [v for k, v in result.items() if k.endswith("_peak_rss_bytes") and k != "peak_rss_bytes"]
    assert len(peaks) >= 8 and result["peak_rss_bytes"] == max(peaks) > 0


def test_the_index_is_the_ann_kind_asked_for_and_close_to_exact(result: dict[str, Any]) -> None:
    assert result["index_kind"] == "hnsw"
    assert 0.8 <= result["index_recall_at_10"] <= 1.0
    assert 0 < result["index_queries"] <= CONFIG.sample and result["index_qps"] > 0
    assert result["index_memory_bytes"] > 2 * CONFIG.items * 4 * 16  # two indexes of >= 16-dim float32 rows


def test_the_daemon_published_a_model_and_served_every_user(result: dict[str, Any]) -> None:
    assert result["watched_users_with_model_list"] >= 0.95
    assert result["serve_users"] == result["snapshot_users"]  # every user with a history has a list
    assert result["serve_users_per_s"] > 0 and result["serve_cpu_us_per_user"] > 0
    assert 0 < result["serve_rss_bytes"] <= result["serve_peak_rss_bytes"]
    parts = result["load_s"] + result["train_once_s"] + result["serve_first_list_s"]
    assert result["time_to_first_rec_s"] == pytest.approx(parts, abs=0.05)
    assert result["serve_first_list_s"] <= result["serve_all_lists_s"]


def test_the_warm_start_kept_the_old_rows_and_added_the_new_items(result: dict[str, Any]) -> None:
    assert result["warm_start_kept_old_rows"] is True
    assert result["warm_start_from"] == result["model_version"]
    assert result["warm_start_new_items"] >= CONFIG.world().new_items
    assert result["warm_start_old_items"] == result["snapshot_items"]
    assert result["warm_start_row_cosine"] > 0.5  # refined from the old rows, not drawn afresh


def test_the_lists_left_in_redis_are_whole_fresh_and_unseen(redis_url: str, result: dict[str, Any]) -> None:
    settings = run_settings(redis_url, result)
    topology, keys = topology_of(settings), keys_of(settings)
    reader = StateReader(topology, keys)
    users = [f"u{k}" for k in np.random.default_rng(3).choice(CONFIG.users, 200, replace=False).tolist()]
    lists = dict(zip(users, topology.client.mget([keys.rec(u) for u in users]), strict=True))
    blobs = dict(zip(users, reader.history_blobs(users), strict=True))
    checked = 0
    for user, raw in lists.items():
        if raw is None:
            assert not blobs[user], user  # only a user without events has no list
            continue
        doc = orjson.loads(raw)
        assert doc["model_version"] == result["model_version"] and doc["user_id"] == user
        assert result["started_ms"] <= doc["updated_at"] <= result["ended_ms"]
        assert len(doc["items"]) == settings.top_k == len(set(doc["items"]))
        assert all(item.startswith("i") for item in doc["items"])
        records = decode(blobs[user] or b"")  # the load's events: older than any list by 120 s at least
        before = records["item"][records["ts"] <= doc["updated_at"] // 1000 - 120].tolist()
        names = reader.item_ids(before)  # (the reader's cache: every name it knows)
        seen = {names[n] for n in before}
        assert seen and not seen & set(doc["items"]), (user, seen & set(doc["items"]))
        checked += 1
    assert checked >= 190


def test_the_command_line_prints_one_json_line_last(
    result: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[ScaleConfig] = []
    monkeypatch.setattr(scale, "run_scale", lambda config: asked.append(config) or dict(result))
    monkeypatch.setattr(scale, "python_loop_seconds", lambda: 0.25)
    scale.main(["--users", "5000", "--items", "10000", "--positives", "100000", "--device", "cpu", "--seed", "4"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert asked == [ScaleConfig(5_000, 10_000, 100_000, "cpu", 4)]
    assert set(REQUIRED) <= set(last) and last["python_loop_s"] == [0.25, 0.25]


# ---------------------------------------------------------------- the parts on their own, without Redis


def small_ials(ids: list[str], rows: np.ndarray) -> ImplicitALS:
    model = ImplicitALS(dim=rows.shape[1])
    model.items, model.item_ids, model.counts = rows.astype(np.float32), list(ids), np.ones(len(ids), np.float32)
    return model


def test_rows_kept_catches_a_moved_or_changed_old_row() -> None:
    rng = np.random.default_rng(0)
    old = small_ials(["a", "b", "c"], rng.normal(size=(3, 4)))
    refined = old.items.copy()
    refined[:2] += 0.1  # a and b are in the new data: refined; c is not: unchanged
    grown = np.vstack([refined, rng.normal(size=(1, 4))])
    data_ids = ["a", "b", "n"]
    assert rows_kept(old, small_ials(["a", "b", "c", "n"], grown), data_ids, ["n"], 1)
    assert not rows_kept(old, small_ials(["b", "a", "c", "n"], grown), data_ids, ["n"], 1)  # moved
    changed = grown.copy()
    changed[2] += 1.0
    assert not rows_kept(old, small_ials(["a", "b", "c", "n"], changed), data_ids, ["n"], 1)  # c changed
    assert not rows_kept(old, small_ials(["a", "b", "c", "m"], grown), data_ids, ["n"], 1)  # n missing


def test_the_draw_is_positive_time_ordered_and_gives_every_new_item_an_event() -> None:
    world = SyntheticWorld(SyntheticSpec(users=300, items=500, clusters=10, seed=1))
    parts = list(draws(world, 250_000, 1_000_000, 2_000_000, seed=1))
    ts = np.concatenate([d.ts for d in parts])
    assert len(ts) == 250_000 and (np.diff(ts) >= 0).all() and ts[0] >= 1_000_000 and ts[-1] <= 2_000_000
    assert all(d.kinds.min() >= 0 and d.kinds.max() < len(POSITIVE_TYPES) for d in parts)
    counts = np.bincount(np.concatenate([d.items for d in parts]), minlength=500)
    assert counts.max() > 20 * np.median(counts)  # a head far above the typical item: Zipf-like popularity
    grown = with_new_items(parts[0], 500, 40, 0.1, np.random.default_rng(2))
    assert isinstance(grown, Draw) and set(range(500, 540)) <= set(grown.items.tolist())
    assert 0.05 < float(np.mean(grown.items >= 500)) < 0.2


def test_the_full_size_fit_draws_arrays_and_reports_its_epochs() -> None:
    size = ["--users", "300", "--items", "500", "--positives", "6000", "--epochs", "2"]
    done = subprocess.run(
        [sys.executable, "bench/scale_fit.py", *size, "--device", "cpu"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["users"], figures["items"], figures["positives"], figures["epochs"]) == (300, 500, 6000, 2)
    assert figures["device"] == "cpu" and figures["pairs"] > 6000 and figures["pairs_per_s"] > 0
    assert figures["peak_rss_bytes"] > 0 and figures["cuda_peak_bytes"] is None
    assert done.stderr.count("epoch ") == 2


def test_the_scale_world_as_training_arrays_matches_its_draws() -> None:
    from bench.scale_fit import interactions

    data = interactions(200, 400, 5000, seed=3)
    assert len(data) == 5000 and data.n_users == 200 and data.n_items == 400
    assert np.all(np.diff(data.ts) >= 0) and data.users.dtype == np.int32
    counts = np.bincount(data.items, minlength=400)
    assert counts.max() > 10 * max(1, int(np.median(counts)))  # a popular head and a long tail
