"""Neural collaborative filtering (He et al. 2017): GMF, MLP and NeuMF, item-based.

The paper's user tower is a user-id embedding. recd must serve a user from
their history alone (a new user after one event, no retraining), so here the
user is the *weighted mean of history-item embeddings* (an item-based user
tower, as in FISM): each tower has a history table ``*_hist`` and a candidate
table ``*_item``. In training the positive being predicted is left out of its
own user's pooled history.

* GMF: ``h_gmf . (p ⊙ q_i)`` - an inner product, so ``index_vectors`` are
  ``[q_i ⊙ h_gmf, b_i]`` and ``query_vectors`` are ``[p, 1]``;
* MLP: ``h_mlp . MLP([p_m, q_m])`` - not an inner product;
* NeuMF: the sum of both plus the item bias ``b_i``.

``score_all(histories)`` gives the exact score of the variant. ANN retrieval
(``index_vectors``/``query_vectors``) uses the GMF tower and the item bias for
``gmf`` and ``neumf``; for ``mlp`` it is a coarse proxy (mean history
MLP-embedding . item MLP-embedding, plus bias) and ``score_all`` should rerank.

Training: binary cross-entropy, ``negatives`` (4, as in the paper) items
sampled per positive, Adam; L2 ``weight_decay`` on the rows a batch touches.
On warm start the previous items the data does not name are frozen: drawn as
negatives, never updated. ``similar_vectors`` are the unit GMF item rows (MLP rows for ``mlp``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from trainer.fit import check_finite, grow_table, plan_items, resolve_device, seeded, torch_threads
from trainer.interactions import FloatArray, IntArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History
from trainer.models.negatives import (
    PairSet,
    UserCsr,
    frozen_rows,
    history_chunks,
    lookup,
    pad_histories,
    run_epochs,
    sample_negatives,
    weighted_mean,
)

VARIANTS = ("neumf", "gmf", "mlp")
TABLES = ("gmf_hist", "gmf_item", "mlp_hist", "mlp_item", "item_bias")
SCORE_BUDGET = 1 << 23  # floats of one (users x items x hidden) block in score_all


class NeuMF(nn.Module):
    """Item tables and towers of one variant; ``forward`` scores (pooled user, item) pairs."""

    def __init__(self, tables: dict[str, FloatArray], layers: Sequence[int], variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.tables = nn.ParameterDict(
            {name: nn.Parameter(torch.as_tensor(np.array(values, np.float32))) for name, values in tables.items()}
        )
        dim = tables["gmf_item"].shape[1] if "gmf_item" in tables else 0
        self.h_gmf = nn.Parameter(torch.ones(dim))
        self.frozen: torch.Tensor | None = None  # (n_items,) bool: rows used as negatives, never updated
        blocks: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(layers):
            blocks += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*blocks) if variant != "gmf" else nn.Sequential()
        self.h_mlp = nn.Linear(layers[-1], 1, bias=False) if variant != "gmf" else nn.Identity()

    def table(self, name: str) -> torch.Tensor:
        weight = self.tables[name]
        assert isinstance(weight, torch.Tensor)
        return weight

    def forward(self, context: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """Scores (N, k) of ``items`` (N, k) for pooled users ``context[tower]`` (N, d_tower)."""
        score = lookup(self.table("item_bias"), items, self.frozen)  # (N, k)
        if self.variant != "mlp":
            q = lookup(self.table("gmf_item"), items, self.frozen)  # (N, k, d)
            score = score + ((context["gmf"] * self.h_gmf)[:, None, :] * q).sum(-1)
        if self.variant != "gmf":
            q_m = lookup(self.table("mlp_item"), items, self.frozen)  # (N, k, d_m)
            p_m = context["mlp"][:, None, :].expand_as(q_m)
            score = score + self.h_mlp(self.mlp(torch.cat([p_m, q_m], dim=-1)))[..., 0]
        return score

    def towers(self) -> list[str]:
        return [t for t in ("gmf", "mlp") if f"{t}_hist" in self.tables]


class NCF(EmbeddingModel):
    """GMF / MLP / NeuMF with an item-based (pooled history) user tower; see the module docstring."""

    kind: ClassVar[str] = "ncf"

    def __init__(
        self,
        *,
        variant: str = "neumf",
        dim: int = 32,
        layers: Sequence[int] = (64, 32, 16),
        epochs: int = 15,
        lr: float = 0.003,
        weight_decay: float = 0.0,
        negatives: int = 4,
        batch: int = 1024,
        init_scale: float = 0.05,
        seed: int = 0,
        device: str = "auto",
        threads: int = 2,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: use one of {VARIANTS}")
        if len(layers) < 2 or layers[0] % 2:
            raise ValueError("layers: >= 2 widths, layers[0] even (the concatenated user and item MLP embedding)")
        self.variant, self.dim, self.layers = variant, dim, tuple(int(x) for x in layers)
        self.epochs, self.lr = epochs, lr
        self.weight_decay, self.negatives, self.batch, self.init_scale = weight_decay, negatives, batch, init_scale
        self.seed, self.device, self.threads = seed, device, threads
        self.net: NeuMF | None = None

    def _table_dims(self) -> dict[str, int]:
        dims = {"item_bias": 0}  # 0: a vector, one bias per item
        if self.variant != "mlp":
            dims |= {"gmf_hist": self.dim, "gmf_item": self.dim}
        if self.variant != "gmf":
            dims |= {"mlp_hist": self.layers[0] // 2, "mlp_item": self.layers[0] // 2}
        return dims

    # ------------------------------------------------------------ training

    def planned_epochs(self, warm: bool) -> int:
        return self.epochs

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        prev = self._previous(warm_from)
        device = resolve_device(self.device)
        started = time.perf_counter()
        with torch_threads(self.threads):
            seeded(self.seed, device)
            rng = np.random.default_rng(self.seed)
            plan = plan_items(data.item_ids, prev.item_ids if prev else None)
            net = self._build(len(plan.item_ids), prev, rng).to(device)
            net.frozen = torch.as_tensor(frozen_rows(len(plan.item_ids), plan.data_to_model), device=device)
            pos = data.positives()
            if not len(pos) or not np.isfinite(pos.weights).all():
                raise ValueError("ncf: the data has no positive rows, or non-finite weights")
            users, rows = pos.users.astype(np.int64), plan.data_to_model[pos.items]
            weights = (pos.weights / pos.weights.mean()).astype(np.float32)
            csr = UserCsr.build(users, rows, weights, data.n_users)
            step = self._step_fn(net, csr, users, rows, weights, np.arange(len(plan.item_ids)), rng, device)
            losses, samples = run_epochs(len(users), self.epochs, self.batch, rng, step, on_epoch, "ncf")
            for name in TABLES:
                if name in net.tables:
                    check_finite(f"ncf {name}", net.table(name).detach())
        net.frozen = None
        self.net, self.item_ids = net.cpu(), plan.item_ids
        seconds = time.perf_counter() - started
        return FitReport(
            self.kind,
            str(device),
            self.epochs,
            seconds,
            samples,
            samples / max(seconds, 1e-9),
            losses,
            plan.n_new if prev else 0,
        )

    def _previous(self, warm_from: EmbeddingModel | None) -> NCF | None:
        if warm_from is None or not warm_from.n_items:
            return None
        if not isinstance(warm_from, NCF) or warm_from.net is None:
            raise TypeError(f"ncf cannot warm-start from a {warm_from.kind!r} model")
        if (warm_from.variant, warm_from.dim, warm_from.layers) != (self.variant, self.dim, self.layers):
            raise ValueError("warm start: previous ncf has another variant, dim or layers")
        return warm_from

    def _build(self, n_items: int, prev: NCF | None, rng: np.random.Generator) -> NeuMF:
        """A network with ``n_items`` rows: previous rows and dense weights kept, new rows random."""
        old = prev.net if prev is not None else None
        tables = {}
        for name, width in self._table_dims().items():
            before = old.table(name).detach().cpu().numpy() if old is not None else None
            if width == 0:  # the item bias: a vector
                tables[name] = grow_table(None if before is None else before[:, None], n_items, 1, 0.0, rng)[:, 0]
            else:
                tables[name] = grow_table(before, n_items, width, self.init_scale, rng)
        net = NeuMF(tables, self.layers, self.variant)
        if old is not None:
            dense = {k: v for k, v in old.state_dict().items() if not k.startswith("tables.")}
            net.load_state_dict(dense, strict=False)
        return net

    def _step_fn(
        self,
        net: NeuMF,
        csr: UserCsr,
        users: IntArray,
        rows: IntArray,
        weights: FloatArray,
        pool: IntArray,
        rng: np.random.Generator,
        device: torch.device,
    ) -> Any:
        optim = torch.optim.Adam(net.parameters(), lr=self.lr)
        positives = PairSet.build(users, rows, len(net.table("item_bias")))
        totals = csr.totals()
        bce = nn.functional.binary_cross_entropy_with_logits

        def step(batch: IntArray) -> tuple[float, int]:
            neg = sample_negatives(users[batch], pool, self.negatives, positives, rng)  # (N, k)
            items = torch.as_tensor(np.concatenate([rows[batch][:, None], neg], axis=1), device=device)
            context = _left_out_context(net, csr, totals, users[batch], rows[batch], weights[batch], device)
            scores = net(context, items)  # (N, 1 + k)
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            w = torch.as_tensor(weights[batch], device=device)
            loss = (w * bce(scores, labels, reduction="none").mean(-1)).mean()
            reg = sum((c.pow(2).sum(-1).mean() for c in context.values()), torch.zeros((), device=device))
            for name in ("gmf_item", "mlp_item", "item_bias"):
                if name in net.tables:
                    looked = lookup(net.table(name), items, net.frozen)  # (N, 1 + k[, d])
                    reg = reg + (looked.pow(2).sum(-1) if looked.dim() == 3 else looked.pow(2)).mean()
            optim.zero_grad()
            (loss + self.weight_decay * reg).backward()  # type: ignore[no-untyped-call]
            optim.step()
            return float(loss.detach()) * scores.numel(), int(scores.numel())

        return step

    # ------------------------------------------------------------ serving

    def _fitted(self) -> NeuMF:
        if self.net is None:
            raise RuntimeError("ncf model is not fitted")
        return self.net

    def pooled(self, histories: Sequence[History]) -> dict[str, torch.Tensor]:
        """Per tower, (B, d_tower) weighted mean of each history's ``*_hist`` rows (zeros when empty)."""
        net = self._fitted()
        parts: dict[str, list[torch.Tensor]] = {tower: [] for tower in net.towers()}
        for part in history_chunks(histories):
            items, weights = pad_histories(histories[part])
            for tower in parts:
                parts[tower].append(weighted_mean(net.table(f"{tower}_hist").detach(), items, weights))
        return {
            tower: torch.cat(chunks) if chunks else torch.zeros(0, net.table(f"{tower}_hist").shape[1])
            for tower, chunks in parts.items()
        }

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        tower = "gmf" if self.variant != "mlp" else "mlp"
        user = _numpy(self.pooled(histories)[tower])  # (B, d)
        ones = np.array([[1.0 if len(h.items) else 0.0] for h in histories], np.float32).reshape(-1, 1)
        return np.concatenate([user, ones], axis=1).astype(np.float32)

    def index_vectors(self) -> FloatArray:
        net = self._fitted()
        with torch.no_grad():
            items = net.table("gmf_item") * net.h_gmf if self.variant != "mlp" else net.table("mlp_item")
            return _numpy(torch.cat([items, net.table("item_bias")[:, None]], dim=1))

    def similar_vectors(self) -> FloatArray:
        net = self._fitted()
        items = _numpy(net.table("gmf_item" if self.variant != "mlp" else "mlp_item"))
        return _numpy(torch.as_tensor(items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)))

    def score_all(self, histories: Sequence[History]) -> FloatArray:
        """(len(histories), n_items) float32: the exact score of the variant for every item."""
        net = self._fitted()
        context = self.pooled(histories)
        with torch.no_grad():
            out = net.table("item_bias").expand(len(histories), -1).clone()  # (B, n)
            if self.variant != "mlp":
                out += (context["gmf"] * net.h_gmf) @ net.table("gmf_item").T
            if self.variant != "gmf":
                out += _mlp_scores(net, context["mlp"])
        return _numpy(out)

    # ------------------------------------------------------------ persistence

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        config = {
            "variant": self.variant,
            "dim": self.dim,
            "layers": list(self.layers),
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "negatives": self.negatives,
            "batch": self.batch,
            "init_scale": self.init_scale,
            "seed": self.seed,
        }
        state = self._fitted().state_dict()
        return config, {name: _numpy(t) for name, t in state.items()}

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> NCF:
        model = cls(**config)
        tables = {name: np.asarray(arrays[f"tables.{name}"], np.float32) for name in model._table_dims()}
        net = NeuMF(tables, model.layers, model.variant)
        net.load_state_dict({name: torch.as_tensor(np.asarray(a, np.float32)) for name, a in arrays.items()})
        if any(len(t) != len(item_ids) for t in tables.values()):
            raise ValueError(f"ncf arrays do not match {len(item_ids)} items")
        model.net, model.item_ids = net, list(item_ids)
        return model


def _left_out_context(
    net: NeuMF,
    csr: UserCsr,
    totals: FloatArray,
    users: IntArray,
    items: IntArray,
    weights: FloatArray,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Per tower, (N, d): each user's weighted mean history row with the positive ``items`` left out."""
    uniq, inverse = np.unique(users, return_inverse=True)
    flat, offsets, bag_w = csr.bags(uniq)
    rest = torch.as_tensor(np.maximum(totals[users] - weights, 0.0), device=device)[:, None]  # (N, 1)
    w = torch.as_tensor(weights, device=device)[:, None]
    out = {}
    for tower in net.towers():
        table = net.table(f"{tower}_hist")
        sums = nn.functional.embedding_bag(
            torch.as_tensor(flat, device=device),
            table,
            torch.as_tensor(offsets, device=device),
            mode="sum",
            per_sample_weights=torch.as_tensor(bag_w, device=device),
        )  # (U, d)
        own = table[torch.as_tensor(items, device=device)] * w  # (N, d)
        out[tower] = (sums[torch.as_tensor(inverse, device=device)] - own) / rest.clamp_min(1e-6) * (rest > 1e-6)
    return out


def _mlp_scores(net: NeuMF, users: torch.Tensor) -> torch.Tensor:
    """(B, n_items) MLP-tower scores, the first layer split into user and item halves, in bounded blocks."""
    items = net.table("mlp_item")  # (n, d_m)
    first = net.mlp[0]
    assert isinstance(first, nn.Linear)
    d_m = items.shape[1]
    user_part = users @ first.weight[:, :d_m].T + first.bias  # (B, h1)
    item_part = items @ first.weight[:, d_m:].T  # (n, h1)
    rest = net.mlp[1:]
    out = torch.empty(len(users), len(items))
    step = max(1, SCORE_BUDGET // max(1, len(items) * item_part.shape[1]))
    for start in range(0, len(users), step):
        hidden = rest(user_part[start : start + step, None, :] + item_part[None, :, :])  # (b, n, h_last)
        out[start : start + step] = net.h_mlp(hidden)[..., 0]
    return out


def _numpy(t: torch.Tensor) -> FloatArray:
    """A float32 numpy copy of a (possibly GPU, possibly grad-tracking) tensor."""
    out: FloatArray = np.array(t.detach().cpu().numpy(), np.float32)
    return out
