"""Planted clusters for the models' known-answer tests: users who consume inside one cluster only."""

from __future__ import annotations

import numpy as np

from trainer.interactions import Interactions

CLUSTERS, PER_CLUSTER = 4, 12


def planted(n_users: int = 160, per_user: int = 6, clusters: range = range(CLUSTERS), seed: int = 0) -> Interactions:
    """Item ``i{c}_{k}`` is item k of cluster c (k < PER_CLUSTER); user ``u{seed}_{u}`` takes ``per_user`` items
    of cluster ``clusters[u % len(clusters)]``; event times in order."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        c = list(clusters)[u % len(clusters)]
        for k in rng.choice(PER_CLUSTER, per_user, replace=False):
            users.append(f"u{seed}_{u}")
            items.append(f"i{c}_{k}")
    return Interactions.from_ids(users, items, ts=list(range(len(users))))
