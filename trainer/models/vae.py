"""Autoencoder collaborative filtering: the seed's autoencoder and Mult-VAE (Liang et al. 2018).

Both read a user's positives as one vector over the catalogue and reconstruct
it through ``n_items -> hidden -> dim -> hidden -> n_items`` (2 encoder and 2
decoder layers, tanh inside):

* ``autoencoder`` (seed 004): binary input, sigmoid output, mean squared
  error, Adam.
* ``multvae``: L2-normalised input with dropout, a Gaussian latent (mean and
  log-variance from the encoder), multinomial log-likelihood (log-softmax
  over the catalogue), KL annealed linearly from 0 to ``beta`` over
  ``anneal_steps`` updates, Adam. Serving uses the latent mean.

The first layer is an ``embedding_bag`` over the user's items (cost ~ their
count, not the catalogue). Serving splits the network before its output
layer: ``query_vectors`` runs a history through everything else (encoder and
first decoder layer; a new user is served from history without retraining)
and appends a constant 1, ``index_vectors`` are the output layer's rows with
the bias as the last column. ``query @ index`` is the output logit, and the
sigmoid/softmax is monotone, so faiss's inner product ranks as the network
does. ``similar_vectors`` are the unit output rows.

Warm start keeps every layer, copies the item columns of known items (by id)
into the first and last layers, gives new items small random input columns
and zero output rows with the lowest old bias, and fine-tunes for
``warm_epochs``. Runs on CUDA when present (``device="auto"``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from trainer.fit import check_finite, plan_items, resolve_device, seeded, torch_threads
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History
from trainer.sampling import UserSets


@dataclasses.dataclass(frozen=True)
class AEConfig:
    dim: int = 200  # bottleneck (latent) size
    hidden: int = 600
    epochs: int = 50
    warm_epochs: int = 10
    lr: float = 1e-3
    batch: int = 256  # users per Adam step
    dropout: float = 0.5  # on the (normalised) input; multvae only
    beta: float = 0.2  # multvae: final KL weight
    anneal_steps: int = 2000  # multvae: updates over which the KL weight grows to ``beta``
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.dim, self.hidden, self.batch) < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("dim, hidden, batch must be >= 1 and dropout in [0, 1)")


class _Net(nn.Module):
    """``n_items -> hidden -> dim (x2 for a VAE) -> hidden -> n_items``."""

    def __init__(self, n_items: int, cfg: AEConfig, variational: bool) -> None:
        super().__init__()
        self.variational = variational
        self.enc1 = nn.EmbeddingBag(n_items, cfg.hidden, mode="sum")
        self.enc1_bias = nn.Parameter(torch.zeros(cfg.hidden))
        self.enc2 = nn.Linear(cfg.hidden, cfg.dim * (2 if variational else 1))
        self.dec1 = nn.Linear(cfg.dim, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, n_items)

    def encode(self, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.enc1(items, offsets, per_sample_weights=weights) + self.enc1_bias)
        return torch.as_tensor(self.enc2(h))

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The output layer's input for latent ``z``."""
        return torch.tanh(self.dec1(z))


class _AutoencoderBase(EmbeddingModel):
    variational: ClassVar[bool] = False

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        super().__init__()
        self.config = AEConfig(**settings)
        self.device = device
        self.threads = threads
        self.net: _Net | None = None

    # ------------------------------------------------------------ training

    def planned_epochs(self, warm: bool) -> int:
        return self.config.warm_epochs if warm else self.config.epochs

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and type(warm_from) is not type(self):
            raise TypeError(f"{self.kind} cannot warm-start from a {warm_from.kind} model")
        cfg, dev = self.config, resolve_device(self.device)
        gen = seeded(cfg.seed, torch.device("cpu"))
        plan = plan_items(data.item_ids, warm_from.item_ids if warm_from else None)
        pos = data.positives()
        sets = UserSets.build(pos.users, plan.data_to_model[pos.items], data.n_users)
        users = np.flatnonzero(sets.lengths() > 0)
        epochs = self.planned_epochs(warm_from is not None)
        started = time.perf_counter()
        with torch_threads(self.threads):
            self.net = self._grow(warm_from, len(plan.item_ids)).to(dev)
            losses = self._epochs(sets, users, epochs, gen, on_epoch)
        self.item_ids = plan.item_ids
        seconds = time.perf_counter() - started
        samples = len(users) * epochs
        return FitReport(
            self.kind, str(dev), epochs, seconds, samples, samples / max(seconds, 1e-9), losses, plan.n_new
        )

    def _grow(self, prev: EmbeddingModel | None, n_items: int) -> _Net:
        """A fresh network; with ``prev``, its layers and its items' columns copied in (new items appended)."""
        net = _Net(n_items, self.config, self.variational)
        if not isinstance(prev, _AutoencoderBase) or prev.net is None:
            return net
        old, n_old = prev.net.to("cpu"), prev.n_items
        with torch.no_grad():
            for name in ("enc1_bias", "enc2.weight", "enc2.bias", "dec1.weight", "dec1.bias"):
                net.get_parameter(name).copy_(old.get_parameter(name))
            net.enc1.weight[:n_old] = old.enc1.weight
            net.enc1.weight[n_old:] *= 0.01
            net.out.weight[:n_old] = old.out.weight
            net.out.weight[n_old:] = 0.0
            net.out.bias[:n_old] = old.out.bias
            net.out.bias[n_old:] = old.out.bias.min() if n_old else 0.0
        return net

    def _epochs(
        self, sets: UserSets, users: np.ndarray, epochs: int, gen: torch.Generator, on_epoch: EpochCallback | None
    ) -> list[float]:
        assert self.net is not None
        cfg = self.config
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        losses: list[float] = []
        step = 0
        self.net.train()
        for epoch in range(epochs):
            order = users[torch.randperm(len(users), generator=gen).numpy()]
            total = 0.0
            for lo in range(0, len(order), cfg.batch):
                loss = self._loss(sets, order[lo : lo + cfg.batch], step, gen)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += float(loss.detach()) * len(order[lo : lo + cfg.batch])
                step += 1
            losses.append(total / max(len(order), 1))
            check_finite(f"{self.kind} loss at epoch {epoch}", losses[-1])
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        self.net.eval()
        return losses

    def _batch(self, sets: UserSets, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat item rows, bag offsets, dense 0/1 targets (B, n_items)) on the model's device."""
        assert self.net is not None
        dev = self.net.out.weight.device
        lens = sets.lengths()[users]
        idx = np.concatenate([sets.items[sets.indptr[u] : sets.indptr[u + 1]] for u in users])
        items = torch.from_numpy(idx).to(dev)
        offsets = torch.from_numpy(np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)).to(dev)
        target = torch.zeros((len(users), self.n_items_net), device=dev)
        target[torch.repeat_interleave(torch.arange(len(users), device=dev), torch.from_numpy(lens).to(dev)), items] = 1
        return items, offsets, target

    @property
    def n_items_net(self) -> int:
        assert self.net is not None
        return int(self.net.out.weight.shape[0])

    def _loss(self, sets: UserSets, users: np.ndarray, step: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ serving

    def _latent(self, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        assert self.net is not None
        code = self.net.encode(items, offsets, weights)
        return code[:, : self.config.dim] if self.variational else code

    def _input_weights(self, lens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Per-item input values: 1 (autoencoder) or scaled to a unit-norm row (multvae)."""
        return weights

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        if self.net is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        out = np.zeros((len(histories), self.config.hidden + 1), np.float32)
        keep = [k for k, h in enumerate(histories) if len(h.items)]
        if not keep:
            return out
        dev = self.net.out.weight.device
        lens = torch.tensor([len(histories[k].items) for k in keep], dtype=torch.int64)
        items = torch.from_numpy(np.concatenate([np.asarray(histories[k].items, np.int64) for k in keep]))
        ones = torch.ones(len(items))
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)[:-1]])
        with torch.no_grad():
            w = self._input_weights(lens, ones).to(dev)
            h = self.net.hidden(self._latent(items.to(dev), offsets.to(dev), w))
        out[keep, :-1] = h.cpu().numpy()
        out[keep, -1] = 1.0
        return out

    def index_vectors(self) -> FloatArray:
        if self.net is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        w = self.net.out.weight.detach().cpu().numpy()
        b = self.net.out.bias.detach().cpu().numpy()
        return np.ascontiguousarray(np.hstack([w, b[:, None]]), np.float32)

    def similar_vectors(self) -> FloatArray:
        w = self.index_vectors()[:, :-1]
        return np.asarray(w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12), np.float32)

    # ------------------------------------------------------------ persistence

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        if self.net is None:
            raise RuntimeError(f"{self.kind} model is not fitted")
        arrays = {name: t.detach().cpu().numpy().copy() for name, t in self.net.state_dict().items()}
        return dataclasses.asdict(self.config), arrays

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> EmbeddingModel:
        model = cls(**config)
        net = _Net(len(item_ids), model.config, cls.variational)
        net.load_state_dict({name: torch.from_numpy(np.asarray(a)) for name, a in arrays.items()})
        model.net = net.to(resolve_device(model.device)).eval()
        model.item_ids = list(item_ids)
        return model


class Autoencoder(_AutoencoderBase):
    """The seed's autoencoder: binary input, sigmoid output, MSE, Adam."""

    kind: ClassVar[str] = "autoencoder"

    def _loss(self, sets: UserSets, users: np.ndarray, step: int, gen: torch.Generator) -> torch.Tensor:
        assert self.net is not None
        items, offsets, target = self._batch(sets, users)
        logits = self.net.out(
            self.net.hidden(self.net.encode(items, offsets, torch.ones_like(items, dtype=torch.float32)))
        )
        return torch.nn.functional.mse_loss(torch.sigmoid(logits), target, reduction="sum") / len(users)


class MultVAE(_AutoencoderBase):
    """Mult-VAE: multinomial likelihood, Gaussian latent, KL annealing, input dropout."""

    kind: ClassVar[str] = "multvae"
    variational: ClassVar[bool] = True

    def _input_weights(self, lens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        norms = torch.repeat_interleave(torch.sqrt(lens.to(torch.float32)), lens)
        return weights / norms.to(weights.device)

    def _loss(self, sets: UserSets, users: np.ndarray, step: int, gen: torch.Generator) -> torch.Tensor:
        assert self.net is not None
        cfg = self.config
        items, offsets, target = self._batch(sets, users)
        keep = (torch.rand(len(items), generator=gen) >= cfg.dropout).to(torch.float32).to(items.device)
        lens = torch.from_numpy(sets.lengths()[users])
        weights = self._input_weights(lens, keep / (1.0 - cfg.dropout))  # L2-normalised, then dropout
        code = self.net.encode(items, offsets, weights)
        mu, logvar = code[:, : cfg.dim], code[:, cfg.dim :]
        z = mu + torch.randn(mu.shape, generator=gen).to(mu.device) * torch.exp(0.5 * logvar)
        logp = torch.log_softmax(self.net.out(self.net.hidden(z)), dim=1)
        nll = -(logp * target).sum(1).mean()
        kl = 0.5 * (torch.exp(logvar) + mu**2 - 1.0 - logvar).sum(1).mean()
        return nll + min(cfg.beta, cfg.beta * step / max(cfg.anneal_steps, 1)) * kl
