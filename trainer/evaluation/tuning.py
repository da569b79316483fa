"""Choosing settings on a validation split inside train: the test split is never looked at.

``tune`` is the grid search every tuned model shares, ALS/BPR/gensim
(``trainer.baselines.tune_baseline``) and recd's presets alike, so a tuned
preset and a tuned baseline are compared on equal terms. ``tune_preset``
adds, for tail-favouring presets, the Lit2Vec2 trade: the strongest tail
setting whose validation recall stays within 95% of the untilted model's.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from trainer.evaluation.scoring import EmbeddingScorer, Scorer, evaluate
from trainer.evaluation.splits import leave_latest_out, random_holdout
from trainer.interactions import Interactions

log = logging.getLogger(__name__)

Trials = list[tuple[dict[str, Any], float]]


def tune(
    make: Callable[[Interactions, dict[str, Any]], Scorer],
    train: Interactions,
    grid: dict[str, list[Any]],
    *,
    seed: int = 0,
    max_users: int = 5000,
    valid: Interactions | None = None,
) -> tuple[dict[str, Any], Trials]:
    """Grid search by validation Recall@20 inside ``train``; the test split is never looked at.

    With ``valid`` (a dataset's own validation split) candidates fit on all of
    ``train`` and are scored on ``valid``. Otherwise the validation split is
    leave-latest-out when ``train`` has timestamps,
    else a seeded random 80/20 per-user holdout; scored on up to ``max_users``
    users. ``make(fit_part, params)`` fits one candidate. Returns (best
    params, [(params, recall@20), ...]); ({}, []) for an empty grid.
    """
    import itertools

    if not grid:
        return {}, []
    if valid is not None:
        fit_part = train
    elif bool((train.ts > 0).any()):
        fit_part, valid = leave_latest_out(train)
    else:
        fit_part, valid = random_holdout(train, 0.2, seed + 1)
    users = np.unique(valid.users[valid.weights > 0])
    if len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, max_users, replace=False)
    trials: Trials = []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        scorer = make(fit_part, params)
        trials.append((params, evaluate(scorer, fit_part, valid, ks=(20,), users=users, seed=seed)["recall@20"]))
    return max(trials, key=lambda t: t[1])[0], trials


def tune_preset(name: str, train: Interactions, seed: int, valid: Interactions | None = None) -> dict[str, Any]:
    """Overrides for registry preset ``name`` chosen on validation ({} when it has no grid or tail sweep).

    A preset in ``registry.TAIL_SWEEPS`` first tunes its base preset's grid,
    then sweeps its tail setting (0 = no tilt, the reference) at those base
    settings and keeps the largest value whose validation Recall@20 is at
    least ``TAIL_RECALL_FLOOR`` times the reference's.
    """
    from trainer.models import registry

    sweep = registry.TAIL_SWEEPS.get(name)
    base_name = sweep[0] if sweep else name
    grid = registry.TUNING_GRIDS.get(base_name, {})
    memo = (base_name, seed, repr(grid), _fingerprint(train) + ("" if valid is None else _fingerprint(valid)))
    if memo not in _TUNED:  # a tail preset reuses its base's search from the same run
        _TUNED[memo] = tune(preset_maker(base_name, seed), train, grid, seed=seed, valid=valid)
        log.info("%s tuning: %s", base_name, _TUNED[memo][1])
    best = _TUNED[memo][0]
    if sweep is None:
        return best
    _, key, values = sweep
    tilt = {**{k: [v] for k, v in best.items()}, key: [0.0, *values]}
    _, tilted = tune(preset_maker(name, seed), train, tilt, seed=seed, valid=valid)
    log.info("%s tail sweep: %s", name, tilted)
    floor = registry.TAIL_RECALL_FLOOR * tilted[0][1]
    return max((p for p, recall in tilted if recall >= floor), key=lambda p: float(p[key]))


_TUNED: dict[tuple[str, int, str, str], tuple[dict[str, Any], Trials]] = {}


def _fingerprint(data: Interactions) -> str:
    """Identity of a training set's contents, for reusing a search within one process."""
    digest = zlib.crc32(np.ascontiguousarray(data.users).tobytes())
    digest = zlib.crc32(np.ascontiguousarray(data.items).tobytes(), digest)
    digest = zlib.crc32(np.ascontiguousarray(data.weights).tobytes(), digest)
    return f"{data.n_users}x{data.n_items}:{len(data)}:{digest:08x}"


def preset_maker(name: str, seed: int, **machine: Any) -> Callable[[Interactions, dict[str, Any]], Scorer]:
    """``make(part, params)`` for ``tune``: preset ``name`` with ``params`` fitted on ``part``, as a scorer.

    ``machine`` (``device``, ``threads``) goes to ``build_preset`` unchanged.
    """
    from trainer.models import registry

    def make(part: Interactions, params: dict[str, Any]) -> Scorer:
        model = registry.build_preset(name, seed=seed, **machine, **params)
        model.fit(part)
        return EmbeddingScorer(model, part, name=name)

    return make
