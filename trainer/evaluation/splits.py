"""Hold-out protocols: which interactions a model trains on and which it is tested on."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trainer.datasets import Dataset
from trainer.interactions import Interactions


def leave_latest_out(data: Interactions, users: npt.ArrayLike | None = None) -> tuple[Interactions, Interactions]:
    """(train, test): each user's latest positive (by ts, then file order) is held out.

    Only users with >= 2 positives give one up; ``users`` restricts which users do.
    """
    pos_rows = np.flatnonzero(data.weights > 0)
    owners = data.users[pos_rows]
    order = np.lexsort((pos_rows, data.ts[pos_rows], owners))  # by user, ts, file order
    sorted_users = owners[order]
    last = np.r_[sorted_users[1:] != sorted_users[:-1], True] if len(order) else np.zeros(0, np.bool_)
    counts = np.bincount(owners, minlength=data.n_users)
    eligible = counts >= 2
    if users is not None:
        chosen = np.zeros(data.n_users, np.bool_)
        chosen[np.asarray(users, np.int64)] = True
        eligible &= chosen
    held = pos_rows[order][last & eligible[sorted_users]]
    mask = np.zeros(len(data), np.bool_)
    mask[held] = True
    return data.select(~mask), data.select(mask)


def random_holdout(data: Interactions, frac: float = 0.2, seed: int = 0) -> tuple[Interactions, Interactions]:
    """(train, test): a seeded ``frac`` of each user's positives (>= 1, and >= 1 kept) held out."""
    pos_rows = np.flatnonzero(data.weights > 0)
    owners = data.users[pos_rows]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pos_rows)), owners))  # by user, random within user
    sorted_users = owners[order]
    counts = np.bincount(owners, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(order)) - starts[sorted_users]  # 0-based rank inside the user's group
    n_hold = np.maximum(1, np.round(frac * counts)).astype(np.int64)
    hold = (counts[sorted_users] >= 2) & (position < n_hold[sorted_users])
    mask = np.zeros(len(data), np.bool_)
    mask[pos_rows[order][hold]] = True
    return data.select(~mask), data.select(mask)


def protocol_split(data: Dataset, seed: int = 0) -> tuple[Interactions, Interactions, str]:
    """The split this dataset is evaluated with: given split, leave-latest-out, or random holdout."""
    if data.test is not None:  # a given valid split is for tuning only (``Dataset.valid``), never trained on
        name = (
            "given split (train / test; valid for tuning)" if data.valid is not None else "given split (train / test)"
        )
        return data.train, data.test, name
    if data.has_timestamps:
        train, test = leave_latest_out(data.train)
        return train, test, "leave-latest-out by timestamp"
    train, test = random_holdout(data.train, 0.2, seed)
    return train, test, f"random 80/20 per-user holdout, seed {seed} (no timestamps)"


def holdout_users(data: Interactions) -> npt.NDArray[np.int64]:
    """Users with at least two positives: those ``holdout_split`` draws its sample from."""
    counts = np.bincount(data.users[data.weights > 0], minlength=data.n_users)
    return np.flatnonzero(counts >= 2)


def holdout_split(data: Interactions, max_users: int = 2000, seed: int = 0) -> tuple[Interactions, Interactions]:
    """Leave-latest-out for a seeded sample of up to ``max_users`` users with >= 2 positives."""
    eligible = holdout_users(data)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, min(max_users, len(eligible)), replace=False) if len(eligible) else eligible
    return leave_latest_out(data, chosen)
