"""Event producers: realistic synthetic streams and dataset replays.

Synthetic users have clustered tastes (a home cluster of items, Zipf-like
popularity inside it), profiles that correlate with the cluster (so profile
segments carry signal for cold start), item catalogue attributes that name the
item's cluster (so attributes carry signal for new items), and a realistic mix
of event types. Everything is a deterministic function of the seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.catalogue import CatalogueEvent

TYPE_MIX = {
    "view": 0.55,
    "click": 0.25,
    "add_to_cart": 0.08,
    "purchase": 0.04,
    "rating": 0.04,
    "like": 0.02,
    "dislike": 0.01,
    "skip": 0.01,
}
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("F", "M", "X")
PRICE_BANDS = ("budget", "mid", "premium")
PRICE_IN_CLUSTER = 0.7
"""Share of items whose price band is their cluster's (the rest draw one at random)."""
CATALOGUE_STREAM = 1
"""Spawn key of the catalogue's random stream, apart from the streams of the events and profiles."""


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 2000
    items: int = 1000
    clusters: int = 10
    in_cluster: float = 0.85  # share of a user's events inside their home cluster
    zipf: float = 1.1  # popularity exponent inside a cluster
    seed: int = 0
    start_ms: int = 1_700_000_000_000
    step_ms: int = 10  # mean event spacing


class SyntheticWorld:
    """Users, items and clusters behind a synthetic stream."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.item_cluster = rng.integers(0, spec.clusters, spec.items)
        self.user_cluster = rng.integers(0, spec.clusters, spec.users)
        # items of each cluster in a fixed random popularity order
        self.members = [rng.permutation(np.flatnonzero(self.item_cluster == c)) for c in range(spec.clusters)]
        self.member_p = [self._zipf(len(m)) for m in self.members]
        self.global_p = self._zipf(spec.items)
        self.global_order = rng.permutation(spec.items)
        self.user_activity = rng.pareto(1.5, spec.users) + 1.0
        self.user_activity /= self.user_activity.sum()

    def _zipf(self, n: int) -> npt.NDArray[np.float64]:
        if n == 0:
            return np.zeros(0)
        p = 1.0 / np.arange(1, n + 1) ** self.spec.zipf
        return np.asarray(p / p.sum())

    def user_id(self, u: int) -> str:
        return f"u{u}"

    def item_id(self, i: int) -> str:
        return f"i{i}"

    def profile(self, u: int) -> dict[str, str]:
        """Attributes that lean on the user's cluster, so segments predict taste."""
        c = int(self.user_cluster[u])
        rng = np.random.default_rng((self.spec.seed, u))
        country = COUNTRIES[c % len(COUNTRIES)] if rng.random() < 0.8 else COUNTRIES[rng.integers(len(COUNTRIES))]
        age = AGE_BANDS[c % len(AGE_BANDS)] if rng.random() < 0.7 else AGE_BANDS[rng.integers(len(AGE_BANDS))]
        return {"country": country, "age_band": age, "gender": GENDERS[int(rng.integers(len(GENDERS)))]}

    def sample(self, n: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(users, items) of n events, vectorised per cluster."""
        users = rng.choice(self.spec.users, n, p=self.user_activity)
        items = np.empty(n, np.int64)
        home = rng.random(n) < self.spec.in_cluster
        clusters = self.user_cluster[users]
        for c, members in enumerate(self.members):
            idx = np.flatnonzero(home & (clusters == c))
            if len(members) == 0:
                home[idx] = False
            elif len(idx):
                items[idx] = members[rng.choice(len(members), len(idx), p=self.member_p[c])]
        rest = np.flatnonzero(~home)
        items[rest] = self.global_order[rng.choice(self.spec.items, len(rest), p=self.global_p)]
        return users, items


def synthetic_events(spec: SyntheticSpec, n: int, chunk: int = 20000) -> Iterator[dict[str, Any]]:
    """n interaction events (dicts following the event contract), in time order."""
    world = SyntheticWorld(spec)
    rng = np.random.default_rng((spec.seed, 1))
    types = list(TYPE_MIX)
    probs = np.array([TYPE_MIX[t] for t in types])
    ts = spec.start_ms
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        users, items = world.sample(size, rng)
        kinds = rng.choice(len(types), size, p=probs / probs.sum())
        gaps = rng.exponential(spec.step_ms, size).astype(np.int64)
        ratings = rng.integers(1, 6, size)
        for k in range(size):
            ts += int(gaps[k])
            event: dict[str, Any] = {
                "event_id": f"s{spec.seed}-{start + k}",
                "user_id": world.user_id(int(users[k])),
                "item_id": world.item_id(int(items[k])),
                "type": types[kinds[k]],
                "ts": ts,
            }
            if event["type"] == "rating":
                event["value"] = float(ratings[k]) if (items[k] % 3) else 5.0
            yield event


def synthetic_profiles(spec: SyntheticSpec, ts_ms: int) -> Iterator[dict[str, Any]]:
    world = SyntheticWorld(spec)
    for u in range(spec.users):
        yield {"user_id": world.user_id(u), "attributes": world.profile(u), "ts": ts_ms}


def synthetic_catalogue(spec: SyntheticSpec, ts_ms: int) -> Iterator[CatalogueEvent]:
    """A record for every synthetic item: ``genre`` names its taste cluster (``g3``) and ``price_band`` is the
    cluster's band for ``PRICE_IN_CLUSTER`` of the items, so item attributes predict who takes to an item."""
    world = SyntheticWorld(spec)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(CATALOGUE_STREAM,)))
    home = rng.random(spec.items) < PRICE_IN_CLUSTER
    drawn = rng.integers(0, len(PRICE_BANDS), spec.items)
    for i in range(spec.items):
        cluster = int(world.item_cluster[i])
        band = PRICE_BANDS[cluster % len(PRICE_BANDS) if home[i] else int(drawn[i])]
        attributes: dict[str, tuple[str, ...]] = {"genre": (f"g{cluster}",), "price_band": (band,)}
        yield CatalogueEvent(world.item_id(i), attributes, True, ts_ms)


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
