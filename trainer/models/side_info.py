"""side_info: EGES-style skip-gram with item side information (Wang et al. 2018, "Billion-scale Commodity
Embedding for E-commerce Recommendation in Alibaba").

An item's vector combines its id row with the rows of its attribute values
(genre, year, brand, knowledge-graph links...), weighted by one learned logit
per field, softmax-normalised over the fields the item has
(``trainer.models.side_bags``). Unlike EGES, both skip-gram sides are built that
way: the input (target) vector and the output (context) vector each have an id
table, a value table and field logits. Serving is item2vec's (query = weighted
mean of the history's input vectors, index rows = ``[output vector, log prior]``),
so an item known only by its attributes gets an index row too.

Training uses item2vec's pairs (``trainer.sampling.sample_pairs`` over each
user's positives) and its unigram^0.75 negatives over the items the data
mentions, ``negatives`` per pair. The attribute combination needs gradients
through the field weights, so a step is autograd: tables updated by SparseAdam
(only rows a batch used move; on warm start rows the new data never reaches stay
exact), field logits by Adam, the learning rate falling linearly to ``min_lr``.
With probability ``id_dropout`` a row's id part is left out for a step, so the
attribute-only vectors (``vectors_for_attributes``: new items with no
interactions) are trained to stand in for the full ones.

Attributes come in through ``set_attributes(ItemAttributes)`` before ``fit``;
without any the model is item2vec with Adam. Warm start keeps the previous id
rows, value rows (by value name; new values get new rows) and field logits, and
the previous model's item attributes for items the new ones do not list.
Snapshots hold the tables, logits, the items' attributes and the vocabulary as
plain arrays (no pickle).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from trainer.attributes import ItemAttributes
from trainer.fit import check_finite, grow_table
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport
from trainer.models.item2vec import Item2Vec
from trainer.models.side_bags import Bags, combine, combine_all
from trainer.sampling import NegativeSampler, UserSets, negative_probs, sample_pairs

SIDE_DEFAULTS: dict[str, Any] = {"lr": 0.02, "batch": 1024, "epochs": 20}
"""Item2vec settings side_info defaults differently: Adam's step size and batch, not word2vec's SGD's. On
ML-100K's cold-item protocol (seed 0, ``bench.cold_items``) recall@20 was 0.159 at lr 0.01 / 10 epochs, 0.184
at 20 epochs, 0.187 at 40, 0.192 at lr 0.02 / 20 epochs; ``id_dropout`` 0 / 0.3 / 0.5 / 0.6 gave 0.127 /
0.184 / 0.180 / 0.161 (20 epochs; 0.6 at 10)."""
SIDES = ("in", "out")


@dataclasses.dataclass(frozen=True)
class SideConfig:
    """Settings of the attribute part (the skip-gram settings are ``Item2VecConfig``'s)."""

    id_dropout: float = 0.3  # chance that a row's id part is left out of a training step
    field_lr: float = (
        1.0  # the field logits' learning rate, as a multiple of ``lr`` (10 collapsed planted data onto noise)
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), not {self.id_dropout}")
        if self.field_lr <= 0:
            raise ValueError(f"field_lr must be > 0, not {self.field_lr}")


SIDE_FIELDS = {f.name for f in dataclasses.fields(SideConfig)}
Optimisers = tuple[torch.optim.Optimizer, torch.optim.Optimizer]


class SideInfo(Item2Vec):
    """Skip-gram over id and attribute embeddings; see the module docstring."""

    kind: ClassVar[str] = "side"

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        side = {k: settings.pop(k) for k in list(settings) if k in SIDE_FIELDS}
        super().__init__(device=device, threads=threads, **{**SIDE_DEFAULTS, **settings})
        if self.config.tied:
            raise ValueError("side_info keeps separate input and output tables (tied=False)")
        self.side = SideConfig(**side)
        self.attributes = ItemAttributes.empty()  # the model rows' attributes, in the model's vocabulary
        self._given: ItemAttributes | None = None
        self._warm: SideInfo | None = None
        self._values: dict[str, torch.Tensor] = {}  # side -> (n_values, dim)
        self._logits: dict[str, torch.Tensor] = {}  # side -> (1 + n_fields,), 0 = the id
        self._bags: Bags | None = None
        self._cache: dict[str, FloatArray] = {}

    def set_attributes(self, attributes: ItemAttributes) -> None:
        """Attributes the next ``fit`` uses (any item order; items the data lacks are ignored)."""
        self._given = attributes

    # ------------------------------------------------------------ training

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and not isinstance(warm_from, SideInfo):
            raise TypeError(f"side_info cannot warm-start from a {warm_from.kind} model")
        self._warm = warm_from
        self._cache.clear()
        try:
            return super().fit(data, warm_from=warm_from, on_epoch=on_epoch)
        finally:
            self._warm = None

    def _prepare_side(self, rng: np.random.Generator, dev: torch.device) -> None:
        """The rows' attributes, value tables and field logits: the previous model's first, then fresh ones."""
        prev = self._warm
        merged = prev.attributes if prev is not None else ItemAttributes.empty()
        if self._given is not None:
            merged = merged.updated(self._given)
        self.attributes = merged.align(self.item_ids)
        self._bags = Bags(self.attributes, dev)
        n_values, n_fields, dim = len(self.attributes.value_names), len(self.attributes.field_names), self.config.dim
        for side, scale in zip(SIDES, (0.5 / dim, 0.0), strict=True):
            old = prev.table(f"attr_{side}") if prev is not None else None
            self._values[side] = torch.from_numpy(grow_table(old, n_values, dim, scale, rng)).to(dev)
            logits = np.zeros(1 + n_fields, np.float32)
            if prev is not None:
                old_logits = prev.table(f"logits_{side}")
                logits[: len(old_logits)] = old_logits
            self._logits[side] = torch.from_numpy(logits).to(dev)

    def _train(
        self,
        sets: UserSets,
        epochs: int,
        lr: float,
        rng: np.random.Generator,
        on_epoch: EpochCallback | None,
        active: npt.NDArray[np.int64],
    ) -> tuple[list[float], int, float]:
        """Adam epochs over item2vec's pairs: (mean loss per pair per epoch, pairs, seconds)."""
        assert self._in is not None and self._out is not None
        dev = self._in.device
        self._prepare_side(rng, dev)
        probs = np.zeros(len(self.counts))
        probs[active] = negative_probs(self.counts, self.config.sampler)[active]
        gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**62)))
        tables = [self._in, self._out, *self._values.values()]
        logits = list(self._logits.values())
        for t in (*tables, *logits):
            t.requires_grad_(True)
        opts = (torch.optim.SparseAdam(tables, lr=lr), torch.optim.Adam(logits, lr=lr * self.side.field_lr))
        started = time.perf_counter()
        try:
            sampler = NegativeSampler(probs) if len(active) else None
            losses, pairs = self._epochs_of(sets, sampler, epochs, lr, (rng, gen), opts, on_epoch)
        finally:
            for t in (*tables, *logits):
                t.requires_grad_(False)
        for name, t in (("input", self._in), ("output", self._out), *self._values.items()):
            check_finite(f"side_info {name} table", t)
        self._cache.clear()
        return losses, pairs, time.perf_counter() - started

    def _epochs_of(
        self,
        sets: UserSets,
        sampler: NegativeSampler | None,
        epochs: int,
        lr: float,
        rngs: tuple[np.random.Generator, torch.Generator],
        opts: Optimisers,
        on_epoch: EpochCallback | None,
    ) -> tuple[list[float], int]:
        """``epochs`` checked epochs (none without pairs or negatives): (mean loss per epoch, pairs)."""
        losses: list[float] = []
        pairs = 0
        for epoch in range(epochs if sets.n_pairs(1) and sampler is not None else 0):
            assert sampler is not None
            lrs = (_decay(lr, self.config.min_lr, epoch / epochs), _decay(lr, self.config.min_lr, (epoch + 1) / epochs))
            loss, n = self._epoch(sets, sampler, *rngs, opts, lrs)
            losses.append(_check_loss(epoch, loss, self.config.negatives))
            pairs += n
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        return losses, pairs

    def _epoch(
        self,
        sets: UserSets,
        sampler: NegativeSampler,
        rng: np.random.Generator,
        gen: torch.Generator,
        opts: Optimisers,
        lrs: tuple[float, float],
    ) -> tuple[float, int]:
        """One epoch of pairs in batches of ``batch`` targets: (mean loss per pair, pairs)."""
        cfg = self.config
        assert self._in is not None
        dev = self._in.device
        targets, contexts = sample_pairs(sets, cfg.context, rng)  # (T,), (T, C)
        total = torch.zeros((), device=dev)
        for lo in range(0, len(targets), cfg.batch):
            hi = min(lo + cfg.batch, len(targets))
            for opt, factor in zip(opts, (1.0, self.side.field_lr), strict=True):
                for group in opt.param_groups:
                    group["lr"] = factor * (lrs[0] + (lrs[1] - lrs[0]) * lo / len(targets))
            negs = sampler.draw((hi - lo, cfg.context, cfg.negatives), rng)  # (B, C, k)
            t, c, n = (torch.from_numpy(a).to(dev) for a in (targets[lo:hi], contexts[lo:hi], negs))
            total += self._step(t, c, n, gen, opts) * (hi - lo)
        return float(total) / max(len(targets), 1), int(contexts.size)

    def _step(
        self, targets: torch.Tensor, contexts: torch.Tensor, negs: torch.Tensor, gen: torch.Generator, opts: Optimisers
    ) -> torch.Tensor:
        """One Adam step on targets (B,), contexts (B, C), negatives (B, C, k); the mean loss per pair (detached)."""
        b, c = contexts.shape
        h = self._rows("in", targets, gen)  # (B, d)
        o = self._rows("out", torch.cat([contexts.reshape(-1), negs.reshape(-1)]), gen)
        o_ctx, o_neg = o[: b * c].view(b, c, -1), o[b * c :].view(b, c, negs.shape[2], -1)  # (B, C, d), (B, C, k, d)
        pos = torch.einsum("bd,bcd->bc", h, o_ctx)
        neg = torch.einsum("bd,bckd->bck", h, o_neg)
        loss = (F.softplus(-pos).sum() + F.softplus(neg).sum()) / (b * c)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        for opt in opts:
            opt.step()
        return loss.detach()

    def _rows(self, side: str, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(len(rows), d) training vectors of ``rows`` on ``side``: each distinct row combined once, its id part
        dropped with probability ``id_dropout`` (never for a row without attributes)."""
        assert self._bags is not None
        unique, inverse = torch.unique(rows, return_inverse=True)
        keep = torch.rand(len(unique), generator=gen, device=unique.device) >= self.side.id_dropout
        keep |= self._bags.lengths[unique] == 0
        ids = self._in if side == "in" else self._out
        assert ids is not None
        return combine(self._bags, unique, self._values[side], self._logits[side], ids, keep)[inverse]

    # ------------------------------------------------------------ serving

    def table(self, name: str) -> FloatArray:
        """A copy of ``"in"``/``"out"`` (id rows), ``"attr_in"``/``"attr_out"`` (value rows) or
        ``"logits_in"``/``"logits_out"`` (field logits, id first)."""
        if name.startswith("attr_") or name.startswith("logits_"):
            kind, side = name.split("_", 1)
            tensor = (self._values if kind == "attr" else self._logits).get(side)
            if tensor is None:
                raise RuntimeError("side_info model is not fitted")
            return np.ascontiguousarray(tensor.detach().cpu().numpy(), np.float32).copy()
        return super().table(name)

    def input_rows(self) -> FloatArray:
        return self._combined("in")

    def output_rows(self) -> FloatArray:
        return self._combined("out")

    def _combined(self, side: str) -> FloatArray:
        """(n_items, dim) every item's full vector on ``side`` (cached until the next fit)."""
        if side not in self._cache:
            ids = self._in if side == "in" else self._out
            if ids is None or self._bags is None:
                raise RuntimeError("side_info model is not fitted")
            self._cache[side] = combine_all(self._bags, self._values[side], self._logits[side], ids)
        return self._cache[side].copy()

    def field_weights(self) -> dict[str, float]:
        """Input-side softmax weight of each field (``"<id>"`` for the id) for an item that has every field."""
        logits = self.table("logits_in").astype(np.float64)
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        return dict(zip(["<id>", *self.attributes.field_names], weights.tolist(), strict=True))

    def attribute_vectors(self, attributes: ItemAttributes, side: str = "in") -> FloatArray:
        """(n, dim) attribute-only vectors on ``side`` for ``attributes``' items; values the model never saw are
        ignored, an item with none known gets a zero row."""
        if self._bags is None:
            raise RuntimeError("side_info model is not fitted")
        bags = Bags(self._known(attributes), self._values[side].device)
        return combine_all(bags, self._values[side], self._logits[side])

    def _known(self, attributes: ItemAttributes) -> ItemAttributes:
        """``attributes`` in the model's vocabulary, values the model never saw left out."""
        vocab = self.attributes
        known = attributes.with_vocabulary(vocab.field_names, vocab.value_names)
        known = known.select_pairs(known.values < len(vocab.value_names))
        return ItemAttributes(
            known.item_ids, known.offsets, known.fields, known.values, vocab.field_names, vocab.value_names
        )

    def vectors_for_attributes(self, attributes: ItemAttributes) -> FloatArray:
        """(n, d) index rows (as ``index_vectors``) for items known only by their attributes: new items with no
        interactions. Their popularity prior is the smallest a trained item has: an estimate from the attributes
        (the mean prior of the trained items sharing each value) ranked cold items worse on ML-100K (recall@20
        0.095 against 0.159, ``bench.cold_items``), as it lets common values decide."""
        if self.config.scoring == "in_in":
            return self.attribute_vectors(attributes, "in")
        prior = np.full((attributes.n_items, 1), float(self.log_prior().min(initial=0.0)), np.float32)
        return np.asarray(np.hstack([self.attribute_vectors(attributes, "out"), prior]), np.float32)

    def similar_for_attributes(self, attributes: ItemAttributes) -> FloatArray:
        """(n, dim) unit rows (as ``similar_vectors``) for items known only by their attributes."""
        rows = self.attribute_vectors(attributes, "in")
        return np.asarray(rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12), np.float32)

    # ------------------------------------------------------------ persistence

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        config, arrays = super().to_arrays()
        attrs = self.attributes
        arrays.update({f"{kind}_{side}": self.table(f"{kind}_{side}") for kind in ("attr", "logits") for side in SIDES})
        arrays.update(
            attr_offsets=attrs.offsets,
            attr_fields=attrs.fields,
            attr_values=attrs.values,
            field_names=np.asarray(attrs.field_names, np.str_),
            value_names=np.asarray(attrs.value_names, np.str_),
        )
        return {**config, **dataclasses.asdict(self.side)}, arrays

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> SideInfo:
        model = super().from_arrays(config, arrays, item_ids)
        assert isinstance(model, SideInfo) and model._in is not None
        dev = model._in.device
        model.attributes = ItemAttributes(
            list(item_ids),
            np.asarray(arrays["attr_offsets"], np.int64),
            np.asarray(arrays["attr_fields"], np.int64),
            np.asarray(arrays["attr_values"], np.int64),
            [str(n) for n in arrays["field_names"]],
            [str(n) for n in arrays["value_names"]],
        )
        n_values, n_fields = len(model.attributes.value_names), len(model.attributes.field_names)
        for side in SIDES:
            values = np.asarray(arrays[f"attr_{side}"], np.float32).reshape(n_values, model.config.dim)
            model._values[side] = torch.from_numpy(values.copy()).to(dev)
            logits = np.asarray(arrays[f"logits_{side}"], np.float32).reshape(1 + n_fields)
            model._logits[side] = torch.from_numpy(logits.copy()).to(dev)
        model._bags = Bags(model.attributes, dev)
        return model


def _check_loss(epoch: int, loss: float, negatives: int) -> float:
    """Raise on NaN/inf and on a loss far above its value at initialisation (``(1 + k) log 2`` per pair)."""
    check_finite(f"side_info loss (epoch {epoch})", loss)
    if loss > 10 * (1 + negatives) * np.log(2.0):
        raise FloatingPointError(f"side_info diverged (epoch {epoch}, loss {loss:.3g}); lower lr")
    return loss


def _decay(lr: float, min_lr: float, progress: float) -> float:
    """Linear schedule: ``lr`` at the start of training, ``min_lr`` at the end."""
    return lr - (lr - min_lr) * progress
