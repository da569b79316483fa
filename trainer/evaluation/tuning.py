"""Choosing settings on a validation split inside train: the test split is never looked at.

``tune`` is the grid search every tuned model shares, ALS/BPR/gensim
(``trainer.baselines.tune_baseline``) and recd's presets alike, so a tuned
preset and a tuned baseline are compared on equal terms: both searches go up
to ``EXTRA_FITS`` fits past an edge of their grid while the best setting sits
at one (``beyond``), within ``BOUNDS``. ``tune_preset`` adds, for
tail-favouring presets, the Lit2Vec2 trade: the strongest tail setting whose
validation recall stays within 95% of the untilted model's.
A model that takes item attributes (``AttributeModel``: side_info) gets the
dataset's before every fit, candidates included (``give_attributes``).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from trainer.attributes import ItemAttributes
from trainer.evaluation.scoring import EmbeddingScorer, Scorer, evaluate
from trainer.evaluation.splits import leave_latest_out, random_holdout
from trainer.interactions import Interactions
from trainer.tilt import METRIC, Tilted, calibrate_tilt

log = logging.getLogger(__name__)

Trials = list[tuple[dict[str, Any], float]]
Bounds = dict[str, tuple[float, float]]
"""Per tuned setting, the (lowest, highest) value a search may try beyond its grid."""
EXTRA_FITS = 6
"""Fits a preset's or a baseline's search may add beyond its grid while its best sits at an edge."""
BOUNDS: Bounds = {
    **dict.fromkeys(("dim", "factors", "vector_size", "ideal_dim"), (4.0, 1024.0)),  # memory grows with them
    **dict.fromkeys(("epochs", "iterations"), (1.0, 300.0)),  # so does fit time
}
"""How far a search may go beyond its grid, by setting name; settings not named are bounded only by > 0."""
AttributeLoader = Callable[[], "ItemAttributes | None"]
"""The dataset's item attributes aligned to the training split's item rows, or None (read on the first call)."""
NO_ATTRIBUTES = "none: ids only (plain skip-gram)"
"""The ``attributes`` note of a model that takes attributes, fitted on a dataset that has none."""
FIELD_WEIGHTS_SHOWN = 6
"""Largest field weights a result row lists."""


@runtime_checkable
class AttributeModel(Protocol):
    """A model that uses item attributes given before ``fit`` (``trainer.models.side_info.SideInfo``)."""

    def set_attributes(self, attributes: ItemAttributes) -> None: ...

    def field_weights(self) -> dict[str, float]: ...


def give_attributes(model: object, attributes: AttributeLoader | None) -> str | None:
    """Hand ``model`` the dataset's attributes if it takes any: a note of what it got (``NO_ATTRIBUTES`` when the
    dataset has none: the model fits on ids alone); None for a model that takes no attributes."""
    if not isinstance(model, AttributeModel):
        return None
    given = attributes() if attributes is not None else None
    if given is None or not len(given.values):
        return NO_ATTRIBUTES
    model.set_attributes(given)
    described = int((given.lengths() > 0).sum())
    return f"{len(given.field_names)} fields, {len(given.value_names)} values, {described}/{given.n_items} items"


def field_weights(model: object) -> dict[str, float]:
    """The ``FIELD_WEIGHTS_SHOWN`` largest learned field weights of a fitted ``AttributeModel`` ({} otherwise)."""
    if not isinstance(model, AttributeModel):
        return {}
    ranked = sorted(model.field_weights().items(), key=lambda kv: -kv[1])
    return {name: round(weight, 4) for name, weight in ranked[:FIELD_WEIGHTS_SHOWN]}


def tune(
    make: Callable[[Interactions, dict[str, Any]], Scorer],
    train: Interactions,
    grid: dict[str, list[Any]],
    *,
    seed: int = 0,
    max_users: int = 5000,
    valid: Interactions | None = None,
    extend: int = 0,
    bounds: Bounds | None = None,
) -> tuple[dict[str, Any], Trials]:
    """Grid search by validation Recall@20 inside ``train``; the test split is never looked at.

    ``extend``: at most that many fits beyond the grid, while the best setting sits at an end of a numeric
    axis (``beyond``): one step further along that axis, the others at the best, until every axis's best is
    inside the values tried (or the budget is spent). ``bounds`` caps an axis's values (dims, by memory).

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
    fit_part, valid, users = validation_split(train, valid, seed, max_users)
    trials: Trials = []

    def trial(params: dict[str, Any]) -> None:
        scorer = make(fit_part, params)
        trials.append((params, evaluate(scorer, fit_part, valid, ks=(20,), users=users, seed=seed)["recall@20"]))

    for combo in itertools.product(*grid.values()):
        trial(dict(zip(grid, combo, strict=True)))
    _extend_edges(trial, trials, grid, extend, bounds or {})
    return max(trials, key=lambda t: t[1])[0], trials


def validation_split(
    train: Interactions, valid: Interactions | None, seed: int, max_users: int = 5000
) -> tuple[Interactions, Interactions, npt.NDArray[np.int64]]:
    """(fit part, validation part, the users scored) of a search: ``valid`` itself beside all of ``train`` when
    the dataset gives one, else leave-latest-out inside ``train`` when it has timestamps, else a seeded random
    80/20 per-user holdout; up to ``max_users`` users with validation positives (a seeded sample)."""
    if valid is not None:
        fit_part = train
    elif bool((train.ts > 0).any()):
        fit_part, valid = leave_latest_out(train)
    else:
        fit_part, valid = random_holdout(train, 0.2, seed + 1)
    users = np.unique(valid.users[valid.weights > 0]).astype(np.int64)
    if len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, max_users, replace=False)
    return fit_part, valid, users


def _extend_edges(
    trial: Callable[[dict[str, Any]], None], trials: Trials, grid: dict[str, list[Any]], budget: int, bounds: Bounds
) -> None:
    """Up to ``budget`` more trials, each one step past the end of the first axis whose best value is an end."""
    tried = {name: list(values) for name, values in grid.items()}
    for _ in range(budget):
        best = max(trials, key=lambda t: t[1])[0]
        step = next(((n, v) for n in tried if (v := beyond(tried[n], best[n], bounds.get(n))) is not None), None)
        if step is None:
            return
        log.info("tuning: best %s at the edge of %s; trying %s", best, step[0], step[1])
        tried[step[0]].append(step[1])
        trial({**best, step[0]: step[1]})


def beyond(values: list[Any], best: Any, limits: tuple[float, float] | None = None) -> Any | None:
    """The next value past ``best`` when it is the largest or smallest of ``values`` (>= 2 positive numbers):
    the end's value times the ratio of the two outermost values there (integers rounded); None when ``best``
    is inside, the axis is not numeric, or the next value is tried already or outside ``limits`` (low, high)."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values)
    if len(set(values)) < 2 or not numeric:
        return None
    ordered = sorted(set(values))
    if best == ordered[-1]:
        nxt = best * best / ordered[-2]
    elif best == ordered[0]:
        nxt = best * best / ordered[1]
    else:
        return None
    if all(isinstance(v, int) for v in values):
        nxt = round(nxt)
    low, high = limits or (0.0, float("inf"))
    if nxt in values or nxt <= 0 or not low <= nxt <= high:
        return None
    return nxt


def tune_preset(
    name: str,
    train: Interactions,
    seed: int,
    valid: Interactions | None = None,
    attributes: AttributeLoader | None = None,
) -> dict[str, Any]:
    """Overrides for registry preset ``name`` chosen on validation ({} when it has no grid or tail sweep).

    A preset in ``registry.TAIL_SWEEPS`` first tunes its base preset's grid,
    then fits the tail preset once at those base settings and chooses its
    tilt on validation by the trainer's own rule (``trainer.tilt.calibrate_tilt``:
    the largest value whose validation Recall@20 is at least
    ``TAIL_RECALL_FLOOR`` times the untilted model's, else 0). Each candidate of a
    preset that takes item attributes gets ``attributes`` (``give_attributes``).
    """
    from trainer.models import registry

    sweep = registry.TAIL_SWEEPS.get(name)
    base_name = sweep[0] if sweep else name
    grid = registry.TUNING_GRIDS.get(base_name, {})
    data = _fingerprint(train) + ("" if valid is None else _fingerprint(valid))
    memo = (base_name, seed, repr(grid), data + _attributes_fingerprint(base_name, attributes))
    if memo not in _TUNED:  # a tail preset reuses its base's search from the same run
        make = preset_maker(base_name, seed, attributes=attributes)
        _TUNED[memo] = tune(make, train, grid, seed=seed, valid=valid, extend=EXTRA_FITS, bounds=BOUNDS)
        log.info("%s tuning: %s", base_name, _TUNED[memo][1])
    best = _TUNED[memo][0]
    if sweep is None:
        return best
    _, key, values = sweep
    return {**best, key: _tilt(name, best, values, train, valid, seed, attributes)}


def _tilt(
    name: str,
    params: dict[str, Any],
    values: list[float],
    train: Interactions,
    valid: Interactions | None,
    seed: int,
    attributes: AttributeLoader | None,
) -> float:
    """Tail preset ``name`` fitted once with ``params``; the tilt among ``values`` the trainer's rule keeps."""
    from trainer.models import registry

    fit_part, held, users = validation_split(train, valid, seed)
    scorer = preset_maker(name, seed, attributes=attributes)(fit_part, params)
    model = scorer.model if isinstance(scorer, EmbeddingScorer) else None
    if not isinstance(model, Tilted):
        raise TypeError(f"tail preset {name!r} does not build a model with a tilt")

    def score() -> dict[str, float]:  # a new scorer each time: it keeps the index vectors of its first call
        now = EmbeddingScorer(model, fit_part, name=name)
        return evaluate(now, fit_part, held, ks=(20,), users=users, seed=seed)

    found = calibrate_tilt(model, score, values, registry.TAIL_RECALL_FLOOR)
    log.info("%s tilt %g: validation %s %.4f, untilted %.4f", name, found.weight, METRIC, found.chosen, found.untilted)
    return found.weight


_TUNED: dict[tuple[str, int, str, str], tuple[dict[str, Any], Trials]] = {}


def _fingerprint(data: Interactions) -> str:
    """Identity of a training set's contents, for reusing a search within one process."""
    digest = zlib.crc32(np.ascontiguousarray(data.users).tobytes())
    digest = zlib.crc32(np.ascontiguousarray(data.items).tobytes(), digest)
    digest = zlib.crc32(np.ascontiguousarray(data.weights).tobytes(), digest)
    return f"{data.n_users}x{data.n_items}:{len(data)}:{digest:08x}"


def _attributes_fingerprint(preset: str, attributes: AttributeLoader | None) -> str:
    """Identity of the attributes a preset's candidates get ("" for a preset that takes none)."""
    from trainer.models import registry

    kind = registry.PRESETS.get(preset, {}).get("model")
    if attributes is None or kind is None or not issubclass(registry.model_class(kind), AttributeModel):
        return ""
    given = attributes()
    if given is None:
        return "+no attributes"
    digest = zlib.crc32(np.ascontiguousarray(given.offsets).tobytes())
    digest = zlib.crc32(np.ascontiguousarray(given.values).tobytes(), digest)
    digest = zlib.crc32("\n".join(given.value_names).encode(), digest)
    return f"+attributes {given.n_items}:{len(given.values)}:{digest:08x}"


def preset_maker(
    name: str, seed: int, *, attributes: AttributeLoader | None = None, **machine: Any
) -> Callable[[Interactions, dict[str, Any]], Scorer]:
    """``make(part, params)`` for ``tune``: preset ``name`` with ``params`` fitted on ``part``, as a scorer.

    ``machine`` (``device``, ``threads``) goes to ``build_preset`` unchanged; a preset that takes item
    attributes gets ``attributes`` (rows of ``part``'s item ids: a split of train keeps train's) before its fit.
    """
    from trainer.models import registry

    def make(part: Interactions, params: dict[str, Any]) -> Scorer:
        model = registry.build_preset(name, seed=seed, **machine, **params)
        give_attributes(model, attributes)
        model.fit(part)
        return EmbeddingScorer(model, part, name=name)

    return make
