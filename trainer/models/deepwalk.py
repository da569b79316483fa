"""DeepWalk and node2vec: skip-gram over random walks on the item co-interaction graph.

The graph and walks are ``trainer.models.walks`` (CSR arrays, walkers in
lockstep, node2vec by rejection sampling: memory O(edges)). Each epoch draws
fresh walks (``walks_per_node`` from every item with an edge, ``walk_length``
steps), turns each position into a target with ``context`` partners inside
``walk_window`` positions, and trains them with item2vec's skip-gram kernel
(``trainer.models.sgns``: shared negatives, batched SGD, CUDA-graph replay on
a GPU). Everything else is item2vec's: two tables, the unigram^0.75 negatives
over the data's positives, serving (query = weighted mean of the history's
input rows, scored against output rows plus the log prior), snapshots and
warm start (old rows kept by id, new rows appended, graph built from the new
data only, so items it does not mention keep their rows exactly).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from trainer.fit import check_finite
from trainer.interactions import Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport
from trainer.models.item2vec import Item2Vec
from trainer.models.sgns import EpochPlan, StepSizes, Workspace, pad_to_groups, plan_epoch
from trainer.models.walks import Graph, cooccurrence_graph, walk_starts, walks, window_pairs
from trainer.sampling import NegativeSampler, UserSets, negative_probs


@dataclasses.dataclass(frozen=True)
class WalkConfig:
    """How the graph is built and walked (the skip-gram settings are ``Item2VecConfig``'s)."""

    edge_window: int = 5  # items at most this many positions apart in a user's time-ordered positives
    max_weight: float = 10.0  # cap on an edge's co-occurrence count
    walks_per_node: int = 10  # per epoch
    walk_length: int = 20
    walk_window: int = 5  # skip-gram window along a walk
    p: float = 1.0  # node2vec return parameter (1 with q = 1: DeepWalk)
    q: float = 1.0  # node2vec in-out parameter

    def __post_init__(self) -> None:
        if min(self.edge_window, self.walks_per_node, self.walk_window) < 1 or self.walk_length < 2:
            raise ValueError("edge_window, walks_per_node, walk_window must be >= 1 and walk_length >= 2")
        if self.p <= 0 or self.q <= 0 or self.max_weight <= 0:
            raise ValueError("p, q and max_weight must be > 0")


WALK_FIELDS = {f.name for f in dataclasses.fields(WalkConfig)}


class DeepWalk(Item2Vec):
    """Skip-gram on first-order random walks over the item graph; see the module docstring."""

    kind: ClassVar[str] = "deepwalk"

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        walk = {k: settings.pop(k) for k in list(settings) if k in WALK_FIELDS}
        settings.setdefault("context", 4)
        super().__init__(device=device, threads=threads, **settings)
        self.walk = WalkConfig(**walk)
        self._source: Interactions | None = None

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and not isinstance(warm_from, DeepWalk):
            raise TypeError(f"{self.kind} cannot warm-start from a {warm_from.kind} model")
        self._source = data
        try:
            return super().fit(data, warm_from=warm_from, on_epoch=on_epoch)
        finally:
            self._source = None

    def graph(self, data: Interactions) -> Graph:
        """The co-interaction graph of ``data``'s positives over this model's rows (after ``plan_items``)."""
        index = self.item_index()
        to_model = np.fromiter((index[i] for i in data.item_ids), np.int64, data.n_items)
        pos = data.positives()
        cfg = self.walk
        return cooccurrence_graph(
            pos.users.astype(np.int64), to_model[pos.items], pos.ts, self.n_items, cfg.edge_window, cfg.max_weight
        )

    def _train(
        self,
        sets: UserSets,
        epochs: int,
        lr: float,
        rng: np.random.Generator,
        on_epoch: EpochCallback | None,
        active: npt.NDArray[np.int64],
    ) -> tuple[list[float], int, float]:
        """item2vec's SGD epochs, with pairs from fresh walks each epoch instead of users' sets."""
        cfg = self.config
        assert self._in is not None and self._out is not None and self._source is not None
        graph = self.graph(self._source)
        n_targets = int((graph.degrees() > 0).sum()) * self.walk.walks_per_node * self.walk.walk_length
        sizes = StepSizes(cfg.negatives, cfg.shared, max(1, min(cfg.group, n_targets)), cfg.batch, cfg.neg_cap, cfg.cap)
        rows = min(sizes.batch_targets, n_targets + sizes.group)
        spaces = [Workspace(rows, cfg.context, sizes, cfg.dim, self._in.device)]
        probs = np.zeros(len(self.counts))
        probs[active] = negative_probs(self.counts, cfg.sampler)[active]
        started = time.perf_counter()
        plans = self._walk_plans(graph, probs, sizes, rng, epochs if n_targets else 0)
        losses, pairs = self._epochs(plans, self._epoch_runner(sizes, spaces), lr, epochs, on_epoch)
        check_finite(f"{self.kind} input table", self._in)
        check_finite(f"{self.kind} output table", self._out)
        return losses, pairs, time.perf_counter() - started

    def _walk_plans(
        self, graph: Graph, probs: npt.NDArray[np.float64], sizes: StepSizes, rng: np.random.Generator, epochs: int
    ) -> Iterator[EpochPlan]:
        """One ``EpochPlan`` per epoch from that epoch's walks (drawn on the host, laid out on the device)."""
        cfg, walk = self.config, self.walk
        assert self._in is not None
        sampler = NegativeSampler(probs)
        for _ in range(epochs):
            starts = walk_starts(graph, walk.walks_per_node, rng)
            parts = [
                window_pairs(block, walk.walk_window, cfg.context, rng)
                for block in walks(graph, starts, walk.walk_length, rng, p=walk.p, q=walk.q)
            ]
            targets, contexts = pad_to_groups(
                np.concatenate([t for t, _ in parts]), np.concatenate([c for _, c in parts]), sizes.group, rng
            )
            negs = sampler.draw((len(targets) // sizes.group, cfg.shared), rng)
            yield plan_epoch(targets, contexts, negs, sizes, self._in.device)

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        config, arrays = super().to_arrays()
        return {**config, **dataclasses.asdict(self.walk)}, arrays


class Node2Vec(DeepWalk):
    """DeepWalk with node2vec's second-order walks (return ``p``, in-out ``q``; defaults favour exploring)."""

    kind: ClassVar[str] = "node2vec"

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        settings.setdefault("p", 1.0)
        settings.setdefault("q", 0.5)
        super().__init__(device=device, threads=threads, **settings)
