"""Named model presets and the model class behind each kind.

A preset is ``{"model": kind, **constructor kwargs}``. A preset's name starts
with its model kind, followed by ``_`` or nothing (``item2vec``, ``mf_bpr``):
the daemon reads the kind of a configured preset as ``name.split("_")[0]``.

Model modules are imported lazily, on the first ``model_class`` call, so that
importing this module (``recd model presets``, config checks) never imports torch.

Constructor kwargs every model class takes: ``seed``, ``device``, ``threads``,
``dim``, ``epochs``; item2vec also ``context, negatives, sampler, tied, lr,
batch``; mf ``loss, rating_range, negatives, lr, weight_decay``; ncf
``variant, layers, negatives, lr``; ials ``reg, unobserved, nu, alpha, tail_weight``;
gfcf ``ideal_dim, alpha, beta``; side (preset ``side_info``) item2vec's and ``id_dropout``.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from trainer.models.base import EmbeddingModel

# kind -> (module, class name); imported on first use
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "item2vec": ("trainer.models.item2vec", "Item2Vec"),
    "mf": ("trainer.models.mf", "MatrixFactorization"),
    "ncf": ("trainer.models.ncf", "NCF"),
    "ials": ("trainer.models.ials", "ImplicitALS"),
    "gfcf": ("trainer.models.gfcf", "SpectralFilter"),
    "autoencoder": ("trainer.models.vae", "Autoencoder"),
    "multvae": ("trainer.models.vae", "MultVAE"),
    "deepwalk": ("trainer.models.deepwalk", "DeepWalk"),
    "node2vec": ("trainer.models.deepwalk", "Node2Vec"),
    "side": ("trainer.models.side_info", "SideInfo"),
}

# Tail-favouring settings (measured on ML-100K: docs/benchmarks.md): log-uniform negatives
# (Lit2Vec2) and a smaller popularity correction in the serving vectors.
ITEM2VEC_TAIL: dict[str, Any] = {"sampler": "log_uniform", "pop_weight": 0.4}

PRESETS: dict[str, dict[str, Any]] = {
    "item2vec": {"model": "item2vec"},
    "item2vec_tail": {"model": "item2vec", **ITEM2VEC_TAIL},
    "item2vec_loguniform": {"model": "item2vec", "sampler": "log_uniform"},
    "mf_bpr": {"model": "mf", "loss": "bpr"},
    "mf_mse": {"model": "mf", "loss": "mse", "epochs": 10, "weight_decay": 1e-2},
    "mf_bce": {"model": "mf", "loss": "bce", "epochs": 20, "weight_decay": 1e-2, "negatives": 8},
    "ncf": {"model": "ncf", "variant": "neumf"},
    "ncf_gmf": {"model": "ncf", "variant": "gmf"},
    "ials": {"model": "ials"},
    "ials_tail": {"model": "ials", "tail_weight": 0.05},
    "gfcf": {"model": "gfcf"},
    "autoencoder": {"model": "autoencoder"},
    "multvae": {"model": "multvae"},
    "deepwalk": {"model": "deepwalk"},
    "node2vec": {"model": "node2vec"},
    "side_info": {"model": "side"},  # needs ``set_attributes`` before ``fit`` to use item attributes
}

# Presets ``run_evaluation(tune=True)`` / ``bench.quality --tune`` tune like the ALS baseline: validation
# Recall@20 inside train over a grid of the same shape (ALS: factors 64/128/256 x confidence alpha 2/10/50/250
# x regularisation 5/20; iALS: dims 64-512 x unobserved weight a0 = 1 / (1 + alpha), 0.33-0.001 x reg 0.5-3).
TUNING_GRIDS: dict[str, dict[str, list[Any]]] = {
    # 4 x 5 x 3 = 60 fits; sparse data's optimum sat at the old edge (dim 256, a0 0.004, reg 1.5)
    "ials": {"dim": [64, 128, 256, 512], "unobserved": [0.33, 0.09, 0.02, 0.004, 0.001], "reg": [0.5, 1.5, 3.0]},
    # 3 x 3 x 3 = 27 closed-form fits (one SVD each). Last.fm validation: dim 512 beat 128/256 and alpha 1
    # beat 0.3/3 (a side grid); at dim 512 ideal_dim 256 beat 128 (recall@20 0.2297 vs 0.2208)
    "gfcf": {"dim": [512, 768, 1024], "ideal_dim": [128, 256, 512], "alpha": [0.3, 1.0, 3.0]},
}
# Tail presets tuned as (base preset, tail setting, values): the base's grid first, then the largest tail
# value whose validation recall is >= TAIL_RECALL_FLOOR x the untilted one's (``trainer.tuning.tune_preset``).
TAIL_SWEEPS: dict[str, tuple[str, str, list[float]]] = {
    "ials_tail": ("ials", "tail_weight", [0.005, 0.01, 0.02, 0.05, 0.1])
}
TAIL_RECALL_FLOOR = 0.95


def tilt_candidates(preset: str, params: dict[str, Any]) -> list[float]:
    """The tilts the trainer chooses among after each fit of ``preset`` (``trainer.tilt``): its tail sweep's
    values, unless ``params`` fixes the tail setting ([] then, and for a preset without a sweep)."""
    sweep = TAIL_SWEEPS.get(preset)
    if sweep is None or sweep[1] in params:
        return []
    return list(sweep[2])


def search_grid(preset: str) -> dict[str, list[Any]]:
    """The grid a search sweeps for ``preset``: its own, or for a tail preset its base preset's ({} if none)."""
    sweep = TAIL_SWEEPS.get(preset)
    return copy.deepcopy(TUNING_GRIDS.get(sweep[0] if sweep else preset, {}))


def kind_of(preset: str) -> str:
    """The model kind a preset name stands for (its part before the first ``_``)."""
    return preset.split("_")[0]


def model_class(kind: str) -> type[EmbeddingModel]:
    """The ``EmbeddingModel`` subclass of a model kind (``item2vec``, ``mf``, ``ncf``); KeyError if unknown."""
    try:
        module_name, class_name = MODEL_CLASSES[kind]
    except KeyError:
        raise KeyError(f"unknown model kind {kind!r}; known kinds: {sorted(MODEL_CLASSES)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, EmbeddingModel)):
        raise TypeError(f"{module_name}.{class_name} is not an EmbeddingModel subclass")
    return cls


def preset_config(name: str) -> dict[str, Any]:
    """A copy of preset ``name`` (``{"model": kind, **kwargs}``); KeyError listing the presets if unknown."""
    try:
        return copy.deepcopy(PRESETS[name])
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}") from None


def typed_overrides(params: Mapping[str, float]) -> dict[str, Any]:
    """Numeric overrides (``RECD_MODEL_PARAMS``, a search's choice) as constructor kwargs: whole numbers as int."""
    return {k: int(v) if float(v).is_integer() else v for k, v in params.items()}


def build_preset(
    name: str, *, seed: int = 0, device: str = "auto", threads: int = 2, **overrides: Any
) -> EmbeddingModel:
    """A fresh, unfitted model of preset ``name``; ``overrides`` replace or add constructor kwargs."""
    config = preset_config(name)
    kind = config.pop("model")
    kwargs = {**config, **overrides, "seed": seed, "device": device, "threads": threads}
    factory: Callable[..., EmbeddingModel] = model_class(kind)  # subclasses take keyword settings
    return factory(**kwargs)
