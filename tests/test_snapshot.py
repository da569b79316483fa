"""trainer.snapshot: snapshot files without pickle, atomic writes, the store's publish/rollback/prune."""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.records import ModelManifest
from trainer import snapshot
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History
from trainer.snapshot import ModelStore, load_snapshot, read_manifest, save_snapshot


class TinyModel(EmbeddingModel):
    """A fixed table of item vectors; queries are the weighted mean of a history's rows."""

    kind = "tiny"

    def __init__(self, vectors: FloatArray | None = None, item_ids: Sequence[str] = (), scale: float = 1.0) -> None:
        super().__init__()
        self.item_ids = list(item_ids)
        self.vectors = np.zeros((len(self.item_ids), 3), np.float32) if vectors is None else vectors
        self.scale = scale

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        raise NotImplementedError

    def index_vectors(self) -> FloatArray:
        return self.vectors

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        out = np.zeros((len(histories), self.vectors.shape[1]), np.float32)
        for row, h in enumerate(histories):
            if len(h.items):
                out[row] = h.weights @ self.vectors[h.items] / h.weights.sum()
        return out

    def similar_vectors(self) -> FloatArray:
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        out: FloatArray = (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        return {"scale": self.scale, "dim": np.int64(self.vectors.shape[1])}, {
            "vectors": self.vectors,
            "bias": np.arange(len(self.item_ids), dtype=np.float32),
        }

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> TinyModel:
        return cls(arrays["vectors"], item_ids, float(config["scale"]))


CLASSES: dict[str, type[EmbeddingModel]] = {"tiny": TinyModel}


def tiny(n: int = 5, seed: int = 0) -> TinyModel:
    vectors = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    return TinyModel(vectors, [f"item-{i}" for i in range(n)], scale=0.5)


def save(folder: Path, version: str = "v1", parent: str | None = None, seed: int = 0) -> ModelManifest:
    return save_snapshot(
        tiny(seed=seed),
        folder,
        version=version,
        data_watermark={"applied_events": 42},
        metrics={"recall@20": np.float32(0.25)},
        parent_version=parent,
    )  # type: ignore[dict-item]


# ---------------------------------------------------------------- snapshots


def test_round_trip_without_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "versions" / "v1"
    model = tiny()
    manifest = save_snapshot(
        model,
        folder,
        version="v1",
        data_watermark={"applied_events": 42},
        metrics={"recall@20": 0.25},
        parent_version="v0",
    )
    assert sorted(p.name for p in folder.iterdir()) == ["item_ids.json", "manifest.json", "weights.npz"]
    assert not [p for p in folder.rglob("*") if p.suffix in {".pkl", ".pickle", ".pt", ".pth"}]
    with np.load(folder / "weights.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["bias", "vectors"]
        np.testing.assert_array_equal(npz["vectors"], model.vectors)
    loaded, read = load_snapshot(folder, CLASSES)
    assert isinstance(loaded, TinyModel)
    np.testing.assert_array_equal(loaded.index_vectors(), model.index_vectors())
    assert loaded.item_ids == model.item_ids and loaded.scale == 0.5
    assert read == manifest == ModelManifest.from_json((folder / "manifest.json").read_text())
    assert (read.model_type, read.item_count, read.dim, read.parent_version) == ("tiny", 5, 3, "v0")
    assert read.config == {"scale": 0.5, "dim": 3} and read.metrics == {"recall@20": 0.25}
    assert read.data_watermark == {"applied_events": 42}
    assert set(read.files) == {"weights.npz", "item_ids.json"}
    assert abs(read.trained_at - time.time() * 1000) < 60_000
    assert [p.name for p in folder.parent.iterdir()] == ["v1"]  # no temp folder left beside


def test_save_refuses_object_arrays_and_leaves_nothing(tmp_path: Path) -> None:
    model = tiny()
    model.to_arrays = lambda: ({}, {"vectors": np.array([{"a": 1}], dtype=object)})  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="pickle"):
        save_snapshot(model, tmp_path / "v1", version="v1", data_watermark={}, metrics={}, parent_version=None)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_an_existing_folder(tmp_path: Path) -> None:
    save(tmp_path / "v1")
    with pytest.raises(FileExistsError, match="v1"):
        save(tmp_path / "v1")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "v1"
    seen: list[list[str]] = []
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        assert not Path(dst).exists()  # readers see nothing until the one rename
        seen.append(sorted(p.name for p in Path(src).iterdir()))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    save(target)
    assert seen == [["item_ids.json", "manifest.json", "weights.npz"]]

    def broken(path: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snapshot, "_write_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "v2")
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "manifest.json"))):
        load_snapshot(tmp_path / "empty", CLASSES)


@pytest.mark.parametrize("text", ["{not json", '{"version": "v1"}', "[]", json.dumps({"schema_version": 99})])
def test_corrupt_manifest_is_a_clear_error(tmp_path: Path, text: str) -> None:
    save(tmp_path / "v1")
    (tmp_path / "v1" / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=r"manifest\.json: corrupt manifest"):
        load_snapshot(tmp_path / "v1", CLASSES)


def test_missing_or_corrupt_weights_are_clear_errors(tmp_path: Path) -> None:
    save(tmp_path / "v1")
    weights = tmp_path / "v1" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"weights\.npz: corrupt weights"):
        load_snapshot(tmp_path / "v1", CLASSES)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"weights\.npz: listed in the manifest but missing"):
        load_snapshot(tmp_path / "v1", CLASSES)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    save(tmp_path / "v1")
    with zipfile.ZipFile(tmp_path / "v1" / "weights.npz", "w") as zf, zf.open("vectors.npy", "w") as fh:
        np.lib.format.write_array(fh, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"corrupt weights: .*allow_pickle=False"):
        load_snapshot(tmp_path / "v1", CLASSES)


def test_item_ids_must_match_the_manifest(tmp_path: Path) -> None:
    save(tmp_path / "v1")
    (tmp_path / "v1" / "item_ids.json").write_text('["a", "b"]')
    with pytest.raises(ValueError, match="2 item ids, manifest says item_count 5"):
        load_snapshot(tmp_path / "v1", CLASSES)


def test_unknown_model_type_is_a_clear_error(tmp_path: Path) -> None:
    save(tmp_path / "v1")
    with pytest.raises(ValueError, match=r"unknown model type 'tiny'"):
        load_snapshot(tmp_path / "v1")  # through the registry, which has no 'tiny'
    with pytest.raises(ValueError, match=r"unknown model type 'tiny'"):
        load_snapshot(tmp_path / "v1", {})


# ---------------------------------------------------------------- the store


def store_with(tmp_path: Path, *versions: str) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for i, version in enumerate(versions):
        save(store.root / "versions" / version, version, seed=i)
    return store


def test_new_version_is_sortable_and_unique(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    names = {store.new_version("item2vec") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-item2vec-[0-9a-f]{8}", n) for n in names)
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
    assert min(names)[:13] <= stamp <= max(names)[:13]
    with pytest.raises(ValueError, match="bad model kind"):
        store.new_version("../x")


def test_publish_requires_a_complete_snapshot(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1")
    assert store.current() is None
    (store.root / "versions" / "half").mkdir()
    for bad in ("half", "missing", "../v1"):
        with pytest.raises(ValueError):
            store.publish(bad)
    assert store.current() is None and not (store.root / "CURRENT").exists()
    store.publish("v1")
    assert store.current() == "v1" and (store.root / "CURRENT").read_text() == "v1\n"
    assert read_manifest(store.path("v1")).version == "v1"


def test_publish_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_with(tmp_path, "v1", "v2")
    store.publish("v1")

    def broken(path: Path, data: bytes) -> None:
        path.write_bytes(data[:1])  # a torn write of the temp file, then the crash
        raise OSError("power cut")

    monkeypatch.setattr(snapshot, "_write_file", broken)
    with pytest.raises(OSError, match="power cut"):
        store.publish("v2")
    assert store.current() == "v1"
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "CURRENT", "HISTORY", "versions"]


def test_list_is_oldest_first_and_skips_broken_folders(tmp_path: Path) -> None:
    store = store_with(tmp_path, "b", "a", "c")
    (store.root / "versions" / "broken").mkdir()
    (store.root / "versions" / ".c.tmp-1234").mkdir()
    manifests = store.list()
    assert [m.version for m in manifests] == sorted(
        [m.version for m in manifests], key=lambda v: (read_manifest(store.path(v)).trained_at, v)
    )
    assert {m.version for m in manifests} == {"a", "b", "c"}
    assert ModelStore(tmp_path / "nothing").list() == []


def test_rollback_walks_back_the_publish_history(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1", "v2", "v3")
    with pytest.raises(ValueError, match="nothing to roll back to"):
        store.rollback()
    for v in ("v1", "v3", "v2"):  # publish order, not folder order
        store.publish(v)
    assert store.history() == ["v1", "v3", "v2"]
    assert store.rollback() == "v3" and store.current() == "v3"
    store.publish("v3")  # `recd model rollback` publishes the target again: no new history entry
    assert store.history() == ["v1", "v3"]
    assert store.rollback() == "v1" and store.current() == "v1"
    with pytest.raises(ValueError, match="nothing to roll back to"):
        store.rollback()
    assert store.current() == "v1"


def test_rollback_to_a_named_version(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1", "v2", "v3", "v4")
    for v in ("v1", "v2", "v3"):
        store.publish(v)
    with pytest.raises(ValueError, match="cannot roll back to 'nope'"):
        store.rollback("nope")
    assert store.rollback("v4") == "v4"  # never published: pushed, so a plain rollback undoes it
    assert store.rollback() == "v3"
    assert store.rollback("v1") == "v1" and store.history() == ["v1"]
    with pytest.raises(ValueError, match="nothing to roll back to"):
        store.rollback()


def test_rollback_skips_deleted_versions(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1", "v2", "v3")
    for v in ("v1", "v2", "v3"):
        store.publish(v)
    (store.root / "versions" / "v2" / "manifest.json").unlink()
    assert store.rollback_target() == "v1"
    assert store.rollback() == "v1"


def test_history_recovers_from_a_crash_between_writes(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1", "v2", "v3")
    store.publish("v1")
    store.publish("v2")
    (store.root / "CURRENT").write_text("v3\n")  # publish(v3) crashed after CURRENT, before HISTORY
    assert store.history() == ["v1", "v2", "v3"]
    assert store.rollback() == "v2"
    (store.root / "HISTORY").write_text("v1\n")  # rollback crashed after HISTORY, before CURRENT
    assert store.history() == ["v1", "v2"] and store.rollback() == "v1"


def test_prune_never_deletes_current_or_the_rollback_target(tmp_path: Path) -> None:
    names = [f"v{i}" for i in range(6)]
    store = store_with(tmp_path, *names)
    store.publish("v1")
    store.publish("v2")
    assert store.prune(2) == ["v0", "v3"]
    assert sorted(p.name for p in (store.root / "versions").iterdir()) == ["v1", "v2", "v4", "v5"]
    assert store.prune(0) == ["v4", "v5"]
    assert [m.version for m in store.list()] == ["v1", "v2"]
    assert store.rollback() == "v1"
    with pytest.raises(ValueError, match="keep"):
        store.prune(-1)


def test_prune_drops_pruned_versions_from_history(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v0", "v1", "v2", "v3")
    for v in ("v0", "v1", "v2", "v3"):
        store.publish(v)
    assert store.prune(1) == ["v0", "v1"]
    assert store.history() == ["v2", "v3"]
    assert store.rollback() == "v2"


def test_prune_removes_stale_temp_folders(tmp_path: Path) -> None:
    store = store_with(tmp_path, "v1")
    old, fresh = store.root / "versions" / ".v9.tmp-0001", store.root / "versions" / ".v8.tmp-0002"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store.prune(5)
    assert not old.exists() and fresh.exists() and store.path("v1").exists()
