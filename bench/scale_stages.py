"""The scale benchmark's measured stages, each run in a fresh child process of its own.

A stage gets its settings as ``load_settings`` overrides (the frozen Settings hold a mapping proxy, which does
not pickle), reads what it needs from Redis or the model store, and returns its figures with the child's peak
resident memory (``VmHWM``: the whole process, interpreter and imports included) and, where it matters, the
peak above the size the process had when the measured step began (``/proc/self/clear_refs`` restarts the
peak). Nothing here is held per interaction: the snapshot is numpy arrays, the index faiss's own memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import CollectorRegistry

from daemon.runtime.history import positive_weight_table, weight_table
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import index_spec, keys_of, serve_options, topology_of
from daemon.runtime.progress import Progress
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader
from daemon.serve.histories import HistoryBatch, PositionMap
from daemon.serve.index import ServingIndex, search
from daemon.train.source import Snapshot, read_snapshot
from trainer.models.base import EmbeddingModel, History
from trainer.models.registry import build_preset, typed_overrides
from trainer.snapshot import ModelStore, load_snapshot

log = logging.getLogger(__name__)

Figures = dict[str, Any]
F32 = npt.NDArray[np.float32]
RECALL_K = 10


def in_child(stage: Callable[..., Figures], *args: Any) -> Figures:
    """``stage(*args)`` in a fresh (spawned) process: its memory is its own, and is returned to the system."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_logging) as pool:
        return pool.submit(stage, *args).result()


def _child_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; 0 when the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Restart this process's peak RSS from its current size; returns that size in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmRSS")


def settings_of(overrides: dict[str, Any]) -> Settings:
    return load_settings(**overrides)


def timed_snapshot(settings: Settings) -> tuple[Snapshot, float]:
    """The trainer's snapshot read (``daemon.train.source.read_snapshot``) and its seconds."""
    log.info("snapshot: reading every history from Redis")
    started = time.perf_counter()
    weights = weight_table(settings.event_weights, settings.rating_threshold)
    snap = read_snapshot(topology_of(settings), keys_of(settings), weights)
    seconds = time.perf_counter() - started
    data = snap.data
    log.info("snapshot: %d records, %d users, %d items in %.1f s", len(data), data.n_users, data.n_items, seconds)
    return snap, seconds


def snapshot_stage(overrides: dict[str, Any]) -> Figures:
    """The snapshot read alone: seconds, records/s and the peak memory it takes."""
    settings = settings_of(overrides)
    before = reset_peak()
    snap, seconds = timed_snapshot(settings)
    data = snap.data
    return {
        "snapshot_records": len(data),
        "snapshot_users": data.n_users,
        "snapshot_items": data.n_items,
        "snapshot_s": round(seconds, 4),
        "snapshot_records_per_s": round(len(data) / max(seconds, 1e-9)),
        "snapshot_peak_rss_bytes": status_bytes("VmHWM"),
        "snapshot_rss_above_start_bytes": status_bytes("VmHWM") - before,
        "snapshot_bytes_per_record": round((status_bytes("VmHWM") - before) / max(1, len(data)), 1),
    }


def _epoch_logger(label: str, epochs: int) -> Callable[[int, float], None]:
    """An ``on_epoch`` reporting the fit's progress (rate and ETA) as the trainer does."""
    progress = Progress(Metrics(CollectorRegistry()), label, epochs, "epochs", log_every_s=0.0)
    return lambda epoch, _loss: progress.advance(epoch + 1)


def new_model(settings: Settings, preset: str, device: str) -> EmbeddingModel:
    """A fresh model of ``preset`` as the train role builds it (the settings' overrides for its own preset)."""
    params = settings.model_params if preset == settings.model_kind else {}
    return build_preset(preset, device=device, threads=settings.train_threads, **typed_overrides(params))


def fit_stage(overrides: dict[str, Any], preset: str, device: str) -> Figures:
    """A full fit of ``preset`` on the whole snapshot: seconds, per epoch, samples/s, peak memory."""
    settings = settings_of(overrides)
    snap, _ = timed_snapshot(settings)
    model = new_model(settings, preset, device)
    epochs = model.planned_epochs(False) or 1
    before = reset_peak()
    _reset_cuda_peak(device)
    started = time.perf_counter()
    report = model.fit(snap.data, on_epoch=_epoch_logger(f"fit {preset}", epochs))
    seconds = time.perf_counter() - started
    return {
        "preset": preset,
        "fit_s": round(seconds, 2),
        "epochs": report.epochs,
        "fit_s_per_epoch": round(seconds / max(1, report.epochs), 2),
        "samples": report.samples,
        "samples_per_s": round(report.samples / max(seconds, 1e-9)),
        "loss": round(report.losses[-1], 6) if report.losses else None,
        "peak_rss_bytes": status_bytes("VmHWM"),
        "rss_above_start_bytes": status_bytes("VmHWM") - before,
        "cuda_peak_bytes": _cuda_peak(device),
    }


def _reset_cuda_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


def current_model(settings: Settings) -> tuple[str, EmbeddingModel]:
    """(version, model) the store's CURRENT names: the model the daemon published."""
    store = ModelStore(Path(settings.model_dir))
    version = store.current()
    if version is None:
        raise RuntimeError(f"no published model in {settings.model_dir}")
    model, _ = load_snapshot(store.root / "versions" / version)
    return version, model


def warm_stage(overrides: dict[str, Any], device: str, new_ids: list[str]) -> Figures:
    """A warm-start fine-tune from the published model on the grown data (``new_ids``: the catalogue's new
    items): seconds, and whether the old rows were kept (``rows_kept``)."""
    settings = settings_of(overrides)
    version, old = current_model(settings)
    snap, snap_s = timed_snapshot(settings)
    model = new_model(settings, settings.model_kind, device)
    started = time.perf_counter()
    report = model.fit(snap.data, warm_from=old, on_epoch=_epoch_logger("warm start", model.planned_epochs(True) or 1))
    seconds = time.perf_counter() - started
    before = old.similar_vectors()
    after = model.similar_vectors()[: old.n_items, : before.shape[1]]
    return {
        "warm_start_from": version,
        "warm_start_s": round(seconds, 2),
        "warm_start_snapshot_s": round(snap_s, 2),
        "warm_start_epochs": report.epochs,
        "warm_start_new_items": report.new_items,
        "warm_start_old_items": old.n_items,
        "warm_start_kept_old_rows": rows_kept(old, model, snap.data.item_ids, new_ids, report.new_items),
        "warm_start_row_cosine": round(float(np.mean(np.sum(before * after, axis=1))), 4),
        "warm_start_peak_rss_bytes": status_bytes("VmHWM"),
    }


def rows_kept(old: EmbeddingModel, new: EmbeddingModel, data_ids: list[str], new_ids: list[str], added: int) -> bool:
    """Whether the warm start kept the old table: every old item at its old position, the data's items the
    old model lacked (the catalogue's new ones among them) appended after, and the rows of old items the data
    no longer mentions unchanged."""
    n_old = old.n_items
    known, appended, in_data = set(old.item_ids), set(new.item_ids[n_old:]), set(data_ids)
    unseen = np.asarray([k for k, item in enumerate(old.item_ids) if item not in in_data], np.int64)
    same = np.array_equal(
        old.similar_vectors()[unseen], new.similar_vectors()[unseen, : old.similar_vectors().shape[1]]
    )
    log.info("warm start: %d old items, %d appended, %d old ones not in the data", n_old, len(appended), len(unseen))
    return (
        new.item_ids[:n_old] == old.item_ids
        and appended == in_data - known
        and added == len(appended)
        and set(new_ids) <= appended
        and same
    )


def index_stage(overrides: dict[str, Any], users: int, sample: int, seed: int) -> Figures:
    """The serving index of the published model, built as a serving process builds it: seconds, memory,
    recall@10 of the ANN index against exact search for ``sample`` of the ``users`` users' query vectors,
    single-query QPS."""
    from bench.ann import measure  # the ANN bench's one-query-per-call, one-thread loop

    settings = settings_of(overrides)
    version, model = current_model(settings)
    spec = index_spec(settings)
    before = reset_peak()
    log.info("index: building the %d-item serving indexes (%d threads)", model.n_items, spec.threads)
    built = ServingIndex.build(version, model, 0, spec)
    log.info("index: %s built in %.1f s", built.kind, built.build_seconds)
    memory = sum(int(faiss.serialize_index(i).nbytes) for i in (built.rec_index, built.sim_index))
    built_rss = status_bytes("VmRSS") - before
    queries = user_queries(settings, built, users, sample, seed)
    truth = exact_top(built.rec_vectors, queries, RECALL_K)
    found = search(built.rec_index, queries, RECALL_K)[1]
    timed = measure(built.rec_index, queries, truth, RECALL_K)
    by_ef = ef_sweep(built.rec_index, queries, truth)
    return {
        "index_kind": built.kind,
        "index_build_s": round(built.build_seconds, 2),
        "index_memory_bytes": memory,
        "index_rss_bytes": built_rss,
        "index_recall_at_10": round(recall(found, truth), 4),
        "index_queries": len(queries),
        "index_qps": round(timed["qps"]),
        "index_cpu_qps": round(timed["cpu_qps"]),
        "index_recall_by_ef_search": by_ef,
        "index_peak_rss_bytes": status_bytes("VmHWM"),
    }


EF_SWEEP = (64, 80, 96, 128, 160, 200)


def ef_sweep(index: Any, queries: F32, truth: npt.NDArray[np.int64]) -> dict[str, dict[str, float]]:
    """An HNSW index's recall@10 and one-thread QPS at each efSearch of ``EF_SWEEP`` (the setting restored
    after); empty for another index kind."""
    from bench.ann import measure

    hnsw = getattr(index, "hnsw", None)
    if hnsw is None:
        return {}
    chosen, out = hnsw.efSearch, {}
    try:
        for ef in EF_SWEEP:
            hnsw.efSearch = ef
            timed = measure(index, queries, truth, RECALL_K)
            out[str(ef)] = {"recall_at_10": round(timed["recall"], 4), "qps": round(timed["qps"])}
    finally:
        hnsw.efSearch = chosen
    return out


def recall(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    """Share of each row's true top-k that ``found`` holds, over every row."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / max(1, truth.size)


def exact_top(vectors: F32, queries: F32, k: int) -> npt.NDArray[np.int64]:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return np.asarray(flat.search(np.ascontiguousarray(queries), k)[1], np.int64)


def user_queries(settings: Settings, built: ServingIndex, n_users: int, sample: int, seed: int) -> F32:
    """Query vectors of up to ``sample`` random users warm enough for the model, made as serving makes
    them (their stored history, decayed weights, the model's fold-in: daemon/serve/lists.py)."""
    reader = StateReader(topology_of(settings), keys_of(settings))
    picked = np.random.default_rng(seed).choice(n_users, min(n_users, 2 * sample), replace=False)
    users = [f"u{k}" for k in picked.tolist()]
    opts = serve_options(settings)
    batch = HistoryBatch.decode(users, reader.history_blobs(users))
    weight = batch.decayed_weights(positive_weight_table(opts.weights, opts.rating_threshold), opts.recency_half_life_s)
    pos = PositionMap(built.version, built.item_pos).lookup(batch.item, reader.item_ids)
    useful = (pos >= 0) & (weight > 0)
    counts = np.bincount(batch.owner()[useful], minlength=len(batch.users))
    starts = np.cumsum(counts) - counts
    kept_pos, kept_w = pos[useful], weight[useful].astype(np.float32)
    warm = np.flatnonzero(counts >= max(1, opts.cold_min_history))[:sample].tolist()
    histories = [
        History(kept_pos[starts[r] : starts[r] + counts[r]], kept_w[starts[r] : starts[r] + counts[r]]) for r in warm
    ]
    return np.ascontiguousarray(built.model.query_vectors(histories), np.float32)
