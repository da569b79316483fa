"""trainer.models.registry: preset names, lazy model classes, building presets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer.interactions import Interactions
from trainer.models import registry
from trainer.models.base import EmbeddingModel
from trainer.snapshot import load_snapshot, save_snapshot

ROOT = Path(__file__).resolve().parents[1]


def test_preset_names_start_with_their_kind() -> None:
    assert set(registry.PRESETS) >= {
        "item2vec",
        "item2vec_tail",
        "item2vec_loguniform",
        "mf_bpr",
        "mf_mse",
        "ncf",
        "ncf_gmf",
        "ials",
        "ials_tail",
    }
    for name, preset in registry.PRESETS.items():
        assert preset["model"] in registry.MODEL_CLASSES, name
        assert name.split("_")[0] == preset["model"] == registry.kind_of(name), name
        assert name == preset["model"] or name.startswith(preset["model"] + "_"), name


def test_presets_choose_the_documented_settings() -> None:
    p = registry.PRESETS
    assert p["item2vec_loguniform"]["sampler"] == "log_uniform" and p["item2vec_tail"]["sampler"] == "log_uniform"
    assert p["ials_tail"]["tail_weight"] > 0 and not p["ials"].get("tail_weight")
    assert (p["mf_bpr"]["loss"], p["mf_mse"]["loss"]) == ("bpr", "mse")
    assert (p["ncf"]["variant"], p["ncf_gmf"]["variant"]) == ("neumf", "gmf")


def test_importing_the_registry_does_not_import_torch() -> None:
    code = "import sys, trainer.models.registry as r; r.PRESETS; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(KeyError, match="mf_bpr"):
        registry.build_preset("nope")
    with pytest.raises(KeyError, match="item2vec"):
        registry.model_class("nope")


class Recorder:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def test_build_preset_passes_settings_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: list[str] = []

    def model_class(kind: str) -> type[Recorder]:
        kinds.append(kind)
        return Recorder

    monkeypatch.setattr(registry, "model_class", model_class)
    model: Any = registry.build_preset("mf_mse", seed=7, device="cpu", threads=3, dim=8, loss="bpr")
    assert kinds == ["mf"]
    assert model.kwargs == {
        "loss": "bpr",
        "dim": 8,
        "epochs": 10,
        "weight_decay": 1e-2,
        "seed": 7,
        "device": "cpu",
        "threads": 3,
    }
    assert registry.PRESETS["mf_mse"]["loss"] == "mse"  # the preset itself is untouched
    model = registry.build_preset("ncf")
    assert model.kwargs == {"variant": "neumf", "seed": 0, "device": "auto", "threads": 2}


# ---------------------------------------------------------------- the real model classes


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _kinds_present() -> list[str]:
    return [kind for kind, (module, _) in registry.MODEL_CLASSES.items() if _have(module)]


@pytest.mark.parametrize("name", sorted(registry.PRESETS))
def test_every_preset_builds(name: str) -> None:
    kind = registry.kind_of(name)
    if kind not in _kinds_present():
        pytest.skip(f"{registry.MODEL_CLASSES[kind][0]} is not written yet")
    model = registry.build_preset(name, seed=1, device="cpu", threads=1)
    assert isinstance(model, EmbeddingModel) and isinstance(model, registry.model_class(kind))
    assert model.kind == kind


def _tiny_data() -> Interactions:
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(30) for _ in range(8)]
    items = [f"i{int(i)}" for i in rng.integers(0, 20, len(users))]
    ts = list(range(len(users)))
    return Interactions.from_ids(users, items, ts=ts)


@pytest.mark.parametrize("name", ["item2vec", "mf_bpr", "ncf"])
def test_fitted_model_round_trips_through_a_snapshot(name: str, tmp_path: Path) -> None:
    kind = registry.kind_of(name)
    if kind not in _kinds_present():
        pytest.skip(f"{registry.MODEL_CLASSES[kind][0]} is not written yet")
    model = registry.build_preset(name, seed=0, device="cpu", threads=1, dim=8, epochs=1)
    model.fit(_tiny_data())
    folder = tmp_path / "v1"
    manifest = save_snapshot(model, folder, version="v1", data_watermark={}, metrics={}, parent_version=None)
    assert manifest.model_type == kind and manifest.item_count == model.n_items and manifest.dim >= 8
    loaded, _ = load_snapshot(folder)
    assert type(loaded) is type(model) and loaded.item_ids == model.item_ids
    np.testing.assert_array_equal(loaded.index_vectors(), model.index_vectors())
    np.testing.assert_array_equal(loaded.similar_vectors(), model.similar_vectors())
    from trainer.models.base import History

    histories = [
        History(np.array([0, 3], np.int64), np.array([1.0, 0.5], np.float32)),
        History(np.zeros(0, np.int64), np.zeros(0, np.float32)),
    ]
    np.testing.assert_array_equal(loaded.query_vectors(histories), model.query_vectors(histories))
