"""item2vec: skip-gram with negative sampling over each user's set of positives.

Training pairs follow Lit2Vec2 (seed 000): every positive item of a user is a
target once per epoch, with ``context`` partners drawn from the user's other
positives (``trainer.sampling``). Negatives come from word2vec's
unigram^0.75 (default), Lit2Vec2's log-uniform over popularity ranks (draws
the head far more often, which pushes popular items down: the tail setting)
or uniform. The update is manual big-batch SGD with shared negatives
(``trainer.models.sgns``): ~1M pairs per CPU-second on the shared 2-core
build machine, on par with gensim's C loop, where autograd managed 0.27M/s.

Serving, measured on ML-100K (leave-latest-out, full-ranking Recall@20, 5
epochs): the query is the weighted mean of the history's *input* rows.
Scored against *input* rows (``scoring="in_in"``, gensim's way) it reaches
0.13; against raw *output* rows 0.002 (SGNS fits ``in.out = PMI - log k``,
which ranks one-off tail items first); against output rows plus the log of
the negative-sampling prior (``log_prior``, weight ``pop_weight``; index
rows are ``[out, prior]``, queries ``[mean in, 1]``) 0.18. So the default is
``"in_out"`` with ``pop_weight=0.75``; lowering ``pop_weight`` trades recall
for tail share, continuously and without retraining. ``similar_vectors`` are
unit input rows.

Warm start keeps every previous row, adds rows for new items, and fine-tunes
with ``warm_lr`` times the learning rate; negatives are drawn only among the
items the new data mentions, so old items it does not mention keep both of
their rows exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from trainer.fit import check_finite, grow_table, plan_items, resolve_device, seeded, torch_threads
from trainer.interactions import FloatArray, Interactions
from trainer.models import device_plan
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History
from trainer.models.device_plan import DeviceSets
from trainer.models.sgns import EpochPlan, StepSizes, Workspace, pad_to_groups, plan_epoch, train_epoch
from trainer.models.sgns_graph import StepGraph
from trainer.sampling import SAMPLERS, NegativeSampler, UserSets, negative_probs, sample_pairs

SCORING = ("in_out", "in_in")
EpochRunner = Callable[[EpochPlan, tuple[float, float]], "float | torch.Tensor"]  # (plan, lrs) -> mean loss
PLANS = ("auto", "host", "device")
PLAN_PAIRS = 1 << 23  # device planning lays out up to this many pairs of epochs at a time (~1 GB at peak)


@dataclasses.dataclass(frozen=True)
class Item2VecConfig:
    """Every constructor setting except ``device``/``threads`` (those describe the machine, not the model)."""

    dim: int = 64
    epochs: int = 5
    context: int = 4
    negatives: int = 5
    sampler: str = "unigram"
    tied: bool = False
    lr: float = 0.025
    min_lr: float = 0.0001
    batch: int = 4096  # targets per SGD step (pairs = batch * context)
    shared: int = 64  # negatives drawn per group of targets
    group: int = 256  # targets sharing one negative set
    cap: float = 64.0  # collision cap for target / context rows, see trainer.models.sgns (0 = off)
    neg_cap: float = 0.4  # collision cap, see trainer.models.sgns.collision_scale (0 = off)
    scoring: str = "in_out"
    pop_weight: float = 0.75  # in_out only: weight of the popularity prior, see ``log_prior``
    warm_epochs: int = 0  # epochs of a warm-start fine-tune (0 = ``epochs``)
    warm_lr: float = 0.5  # learning-rate factor of a warm-start fine-tune
    # threads >= 2: SGD on that many threads, lock-free (faster, not bit-reproducible; on a small catalogue the
    # threads' batches collide: on ML-100K at the default batch 3 of 4 bench runs diverged, caught by the loss check)
    hogwild: bool = False
    plan: str = "auto"  # where epochs are drawn: "host" (numpy), "device" (torch), "auto" = device on CUDA
    graph: bool = True  # on CUDA, replay each SGD step from one captured CUDA graph (trainer.models.sgns_graph)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {SAMPLERS}")
        if self.plan not in PLANS:
            raise ValueError(f"unknown plan {self.plan!r}; choose from {PLANS}")
        if self.scoring not in SCORING:
            raise ValueError(f"unknown scoring {self.scoring!r}; choose from {SCORING}")
        if min(self.dim, self.context, self.negatives, self.batch, self.shared, self.group) < 1:
            raise ValueError("dim, context, negatives, batch, shared and group must be >= 1")


class Item2Vec(EmbeddingModel):
    """Skip-gram item2vec with log-uniform (or unigram/uniform) negatives; see the module docstring."""

    kind: ClassVar[str] = "item2vec"

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        super().__init__()
        self.config = Item2VecConfig(**settings)
        self.device = device
        self.threads = threads
        self._in: torch.Tensor | None = None  # (n_items, dim) input (target) rows
        self._out: torch.Tensor | None = None  # (n_items, dim) output (context) rows; ``_in`` when tied
        self.counts = np.zeros(0, np.float32)  # (n_items,) positives seen per item, all fits

    # ------------------------------------------------------------ training

    def planned_epochs(self, warm: bool) -> int:
        return (self.config.warm_epochs or self.config.epochs) if warm else self.config.epochs

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and not isinstance(warm_from, Item2Vec):
            raise TypeError(f"item2vec cannot warm-start from a {warm_from.kind} model")
        cfg = self.config
        dev = resolve_device(self.device)
        seeded(cfg.seed, dev)
        rng = np.random.default_rng(cfg.seed)
        plan = plan_items(data.item_ids, warm_from.item_ids if warm_from else None)
        pos = data.positives()
        rows = plan.data_to_model[pos.items]
        self.counts = np.bincount(rows, minlength=len(plan.item_ids)).astype(np.float32)
        if warm_from is not None:
            self.counts[: plan.n_old] += warm_from.counts
        self._init_tables(warm_from, len(plan.item_ids), rng, dev)
        self.item_ids = plan.item_ids
        sets = UserSets.build(pos.users, rows, data.n_users)
        epochs = self.planned_epochs(warm_from is not None)
        lr = cfg.lr * (cfg.warm_lr if warm_from is not None else 1.0)
        # torch's intra-op threads on the CPU step's kernels: ML-100K fits ~10% faster on 2 threads than on 1, to
        # the same bits (checked on ML-100K; a test holds 1 and 2 threads equal); Hogwild's workers take a thread each
        with torch_threads(1 if cfg.hogwild else self.threads):
            losses, pairs, seconds = self._train(sets, epochs, lr, rng, on_epoch, np.flatnonzero(np.bincount(rows)))
        return FitReport(
            model=self.kind,
            device=str(dev),
            epochs=epochs,
            seconds=seconds,
            samples=pairs,
            samples_per_s=pairs / max(seconds, 1e-9),
            losses=losses,
            new_items=plan.n_new,
        )

    def _init_tables(self, prev: Item2Vec | None, n_rows: int, rng: np.random.Generator, dev: torch.device) -> None:
        """Copy the previous rows (if any) and add fresh ones: inputs ~U(+-0.5/dim), outputs 0 (word2vec)."""
        dim = self.config.dim
        if prev is None and dev.type == "cuda":  # a first fit on the GPU: drawn there, nothing to copy over
            gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**62)))
            self._in = torch.empty((n_rows, dim), dtype=torch.float32, device=dev)
            self._in.uniform_(-0.5 / dim, 0.5 / dim, generator=gen)
        else:
            old_in = prev.table("in") if prev is not None else None
            self._in = torch.from_numpy(grow_table(old_in, n_rows, dim, 0.5 / dim, rng)).to(dev).contiguous()
        if self.config.tied:
            self._out = self._in
            return
        if prev is None:  # all zeros: made on the device, nothing to copy over
            self._out = torch.zeros((n_rows, dim), dtype=torch.float32, device=dev)
            return
        self._out = torch.from_numpy(grow_table(prev.table("out"), n_rows, dim, 0.0, rng)).to(dev).contiguous()

    def _train(
        self,
        sets: UserSets,
        epochs: int,
        lr: float,
        rng: np.random.Generator,
        on_epoch: EpochCallback | None,
        active: npt.NDArray[np.int64],
    ) -> tuple[list[float], int, float]:
        """The SGD epochs: (mean loss per epoch, pairs trained, seconds).

        Negatives are drawn only among ``active`` rows (items with a positive
        in this data): on warm start, old items the new data does not mention
        keep their output rows too. With ``threads >= 2`` host planning runs a
        background thread (numpy releases the GIL) drawing from ``rng`` in
        epoch order, so the result does not depend on the thread count.
        """
        cfg = self.config
        assert self._in is not None and self._out is not None
        dev = self._in.device
        n_targets = sets.n_pairs(1)
        sizes = StepSizes(cfg.negatives, cfg.shared, max(1, min(cfg.group, n_targets)), cfg.batch, cfg.neg_cap, cfg.cap)
        rows = min(sizes.batch_targets, n_targets + sizes.group)
        workers = max(1, self.threads) if cfg.hogwild else 1
        spaces = [Workspace(rows, cfg.context, sizes, cfg.dim, dev) for _ in range(workers)]
        probs = np.zeros(len(self.counts))
        probs[active] = negative_probs(self.counts, cfg.sampler)[active]  # only items this data mentions
        on_device = cfg.plan == "device" or (cfg.plan == "auto" and dev.type == "cuda")
        prepare = (_device_planner if on_device else _host_planner)(sets, probs, sizes, cfg, rng, dev, epochs)
        started = time.perf_counter()
        ahead = self.threads >= 2 and not on_device  # device planning is queued on the GPU stream anyway
        plans = _plans(prepare, epochs if n_targets else 0, ahead)
        losses, pairs = self._epochs(plans, self._epoch_runner(sizes, spaces), lr, epochs, on_epoch)
        seconds = time.perf_counter() - started
        check_finite("item2vec input table", self._in)
        check_finite("item2vec output table", self._out)
        return losses, pairs, seconds

    def _epochs(
        self, plans: Iterator[EpochPlan], run_epoch: EpochRunner, lr: float, epochs: int, on_epoch: EpochCallback | None
    ) -> tuple[list[float], int]:
        """(checked mean loss per epoch, pairs). On a GPU the losses stay there until the end (one sync,
        so the host plans the next epoch while the GPU trains), unless ``on_epoch`` wants each as it comes."""
        pending: list[float | torch.Tensor] = []
        pairs = 0
        for epoch, plan in enumerate(plans):
            lrs = (_decay(lr, self.config.min_lr, epoch / epochs), _decay(lr, self.config.min_lr, (epoch + 1) / epochs))
            pending.append(run_epoch(plan, lrs))
            pairs += int(plan.contexts.shape[0])
            if on_epoch is not None:
                on_epoch(epoch, _check_loss(epoch, float(pending[-1]), self.config.negatives))
        return [_check_loss(e, float(x), self.config.negatives) for e, x in enumerate(pending)], pairs

    def _epoch_runner(self, sizes: StepSizes, spaces: list[Workspace]) -> EpochRunner:
        """(plan, learning rates) -> mean loss: ``train_epoch``, or on CUDA a ``StepGraph`` captured at first use."""
        win, wout = self._in, self._out
        assert win is not None and wout is not None
        if not (self.config.graph and win.device.type == "cuda"):
            return lambda plan, lrs: train_epoch(win, wout, plan, lrs, sizes, spaces)
        graphs: list[StepGraph] = []

        def run(plan: EpochPlan, lrs: tuple[float, float]) -> torch.Tensor:
            if not graphs:
                graphs.append(StepGraph(win, wout, plan, sizes, spaces[0], capture=True))
            return graphs[0].run_epoch(plan, lrs)

        return run

    # ------------------------------------------------------------ serving

    def table(self, name: str) -> FloatArray:
        """A copy of the ``"in"`` or ``"out"`` table as (n_items, dim) float32 numpy."""
        tensor = self._in if name == "in" else self._out
        if tensor is None:
            raise RuntimeError("item2vec model is not fitted")
        return np.ascontiguousarray(tensor.detach().cpu().numpy(), np.float32).copy()

    def input_rows(self) -> FloatArray:
        """(n_items, dim) the item vectors queries and similar-items are made of: the input table here."""
        return self.table("in")

    def output_rows(self) -> FloatArray:
        """(n_items, dim) the item vectors ``in_out`` scoring ranks by: the output table here."""
        return self.table("out")

    def index_vectors(self) -> FloatArray:
        if self.config.scoring == "in_in":
            return self.input_rows()
        return np.asarray(np.hstack([self.output_rows(), self.log_prior()[:, None]]), np.float32)  # (n, dim + 1)

    def log_prior(self) -> FloatArray:
        """(n_items,) ``pop_weight * log(negatives * q(item))``: the score term SGNS trains away.

        At the SGNS optimum ``in_t . out_c = log P(c | t) - log(k q(c))`` for
        negative distribution ``q``; adding ``log(k q(c))`` back turns the
        score into the log of the conditional probability (weight 1: best
        recall), leaving it out gives the PMI-like score (weight 0: strongly
        favours the tail). Rows ``q`` never draws get the smallest drawn ``q``.
        """
        q = negative_probs(self.counts, self.config.sampler)
        floor = float(q[q > 0].min()) if bool((q > 0).any()) else 1.0
        return np.asarray(self.config.pop_weight * np.log(self.config.negatives * np.maximum(q, floor)), np.float32)

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        win = self.input_rows()
        out = np.zeros((len(histories), self.config.dim + 1), np.float32)  # (B, dim + 1)
        for row, hist in enumerate(histories):
            w = np.asarray(hist.weights, np.float32)
            total = float(w.sum()) if len(hist.items) else 0.0
            if total > 0:
                out[row, :-1] = (w @ win[np.asarray(hist.items, np.int64)]) / total
                out[row, -1] = 1.0  # picks up ``log_prior``; an empty history stays an all-zero row
        return out[:, :-1].copy() if self.config.scoring == "in_in" else out

    def similar_vectors(self) -> FloatArray:
        win = self.input_rows()
        norms = np.linalg.norm(win, axis=1, keepdims=True)
        return np.asarray(win / np.maximum(norms, 1e-12), np.float32)

    # ------------------------------------------------------------ persistence

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        arrays: Arrays = {"in": self.table("in"), "counts": self.counts.astype(np.float32)}
        if not self.config.tied:
            arrays["out"] = self.table("out")
        return dataclasses.asdict(self.config), arrays

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> Item2Vec:
        model = cls(**config)
        dev = resolve_device(model.device)
        model._in = _tensor(arrays["in"], len(item_ids), dev)
        model._out = model._in if model.config.tied else _tensor(arrays["out"], len(item_ids), dev)
        model.counts = np.asarray(arrays.get("counts", np.zeros(len(item_ids))), np.float32).copy()
        model.item_ids = list(item_ids)
        return model


def _host_planner(
    sets: UserSets,
    probs: npt.NDArray[np.float64],
    sizes: StepSizes,
    cfg: Item2VecConfig,
    rng: np.random.Generator,
    dev: torch.device,
    epochs: int,
) -> Callable[[], EpochPlan]:
    """Epochs drawn with numpy on the host (``trainer.sampling``), then copied to ``dev``, one per call."""
    sampler = NegativeSampler(probs)

    def prepare() -> EpochPlan:
        targets, contexts = pad_to_groups(*sample_pairs(sets, cfg.context, rng), sizes.group, rng)
        negs = sampler.draw((len(targets) // sizes.group, cfg.shared), rng)
        return plan_epoch(targets, contexts, negs, sizes, dev)

    return prepare


def _device_planner(
    sets: UserSets,
    probs: npt.NDArray[np.float64],
    sizes: StepSizes,
    cfg: Item2VecConfig,
    rng: np.random.Generator,
    dev: torch.device,
    epochs: int,
) -> Callable[[], EpochPlan]:
    """The ``epochs`` epochs drawn with torch on ``dev`` (``trainer.models.device_plan``); seeded from ``rng``.

    Several epochs are drawn and laid out in one pass (up to ``PLAN_PAIRS``
    pairs): on a GPU each pass costs ~40 kernel launches whatever its size.
    """
    on_dev = DeviceSets.build(sets, dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(rng.integers(2**62)))
    cdf = torch.from_numpy(np.cumsum(probs) / probs.sum()).to(dev)
    per_pass = max(1, PLAN_PAIRS // max(1, on_dev.n_targets * cfg.context))
    ready: list[EpochPlan] = []
    left = [epochs]

    def prepare() -> EpochPlan:
        if not ready:
            n = max(1, min(per_pass, left[0]))
            targets, contexts = device_plan.sample_pairs(on_dev, cfg.context, sizes.group, gen, n)
            negs = device_plan.draw_negatives(cdf, (len(targets) // sizes.group, cfg.shared), gen)
            ready.extend(reversed(device_plan.plan_epochs(targets, contexts, negs, sizes, len(probs), n)))
            left[0] -= n
        return ready.pop()

    return prepare


def _plans(prepare: Callable[[], EpochPlan], epochs: int, ahead: bool) -> Iterator[EpochPlan]:
    """``epochs`` calls of ``prepare`` in order; with ``ahead`` each runs on a helper thread during the last epoch."""
    if not ahead:
        for _ in range(epochs):
            yield prepare()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(prepare) if epochs else None
        for epoch in range(epochs):
            assert upcoming is not None
            plan = upcoming.result()
            upcoming = pool.submit(prepare) if epoch + 1 < epochs else None
            yield plan


def _check_loss(epoch: int, loss: float, negatives: int) -> float:
    """Raise on NaN/inf, and on a loss far above its value at initialisation (``(1 + k) log 2`` per pair).

    Big-batch SGD at too high a learning rate can blow up while staying
    finite (measured: loss 1e25 on ML-100K); such tables must not be served.
    """
    check_finite(f"item2vec loss (epoch {epoch})", loss)
    if loss > 10 * (1 + negatives) * np.log(2.0):
        raise FloatingPointError(f"item2vec diverged (epoch {epoch}, loss {loss:.3g}); lower lr or batch")
    return loss


def _decay(lr: float, min_lr: float, progress: float) -> float:
    """word2vec's linear schedule: ``lr`` at the start of training, ``min_lr`` at the end."""
    return lr - (lr - min_lr) * progress


def _tensor(array: npt.NDArray[Any], n_rows: int, dev: torch.device) -> torch.Tensor:
    table = np.ascontiguousarray(array, np.float32)
    if table.ndim != 2 or table.shape[0] != n_rows:
        raise ValueError(f"item2vec table has shape {table.shape}, expected ({n_rows}, dim)")
    return torch.from_numpy(table.copy()).to(dev)
