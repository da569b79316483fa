"""An epoch's full SGD batches replayed from captured CUDA graphs.

Eager PyTorch launches each of a step's ~25 kernels from Python. On the
datasets recd trains on, a batch's kernels take a few microseconds each on a
GPU, so an eager CUDA fit is bound by the host issuing them. Measured on a
lent H200 (5 epochs, whole ``fit``): eager 17-19 M pairs/s on ML-100K and
26-39 M on Beauty; replayed from graphs 29-36 M and 66-70 M.

``StepGraph`` captures the step once per fit and replays it for every full
batch. The step is position-free: it reads the batch number from a device
counter, gathers that batch's row of the epoch's plan (packed per epoch into
one integer and one float matrix, a row per full batch) into fixed buffers,
applies ``sgns.apply_step`` with the learning rate ``lrs[step]``, and
increments the counter, all inside the graph. ``unroll`` steps are captured
back to back in one graph (the first of them also adds its sampled loss to a
device total, as ``train_epoch`` samples every ``loss_every``-th batch), so
the host does one ``replay()`` per ``unroll`` batches. A last, partial batch
runs eagerly.

The arithmetic is ``apply_step``'s, batch for batch, and so is the loss
sampling. ``capture=False`` runs the same bodies eagerly: the CPU tests hold
them to ``train_epoch``.
"""

from __future__ import annotations

import dataclasses

import torch

from trainer.models.sgns import EpochPlan, StepBatch, StepSizes, Workspace, apply_step, sgd_step

FIELDS = [f.name for f in dataclasses.fields(StepBatch)]
FLOAT_FIELDS = ("n_scale", "t_scale", "t_scale_rep", "c_scale")  # the rest are int64 row indices
# ``recd run`` holds the serve and train roles in one process: serving may copy rows off the GPU while a fit
# captures (a few milliseconds per fit). "thread_local" checks only the capturing thread's calls; under
# PyTorch's default, "global", CUDA refuses potentially unsafe calls (a synchronising copy) from any thread
# during a capture. Either way another thread must not draw from the default CUDA generator meanwhile:
# PyTorch ties it to the capture (seen on an H200: "Offset increment outside graph capture"). Serving draws
# nothing at random.
CAPTURE_MODE = "thread_local"


class StepGraph:
    """Replays ``apply_step`` over an epoch's full batches; see the module docstring."""

    def __init__(
        self,
        win: torch.Tensor,
        wout: torch.Tensor,
        plan: EpochPlan,
        sizes: StepSizes,
        ws: Workspace,
        capture: bool,
        unroll: int = 4,
    ) -> None:
        self.win, self.wout, self.sizes, self.ws, self.unroll = win, wout, sizes, ws, max(1, unroll)
        dev = win.device
        self.n_targets = int(plan.targets.shape[0])
        self.n_c = int(plan.contexts.shape[0]) // max(self.n_targets, 1)
        self.n_full = self.n_targets // sizes.batch_targets
        self.widths = self._widths()
        self.step = torch.zeros(1, dtype=torch.long, device=dev)
        self.lrs = torch.zeros(max(self.n_full, 1), dtype=torch.float32, device=dev)
        self.loss = torch.zeros((), dtype=torch.float32, device=dev)
        n_int = sum(w for name, w in self.widths.items() if name not in FLOAT_FIELDS)
        self.packed = (
            torch.zeros((self.n_full, n_int), dtype=torch.long, device=dev),
            torch.zeros((self.n_full, sum(self.widths.values()) - n_int), device=dev),
        )
        self.row = (self.packed[0].new_zeros((1, n_int)), self.packed[1].new_zeros((1, self.packed[1].shape[1])))
        self.buffers = self._buffers()
        q, r = divmod(self.n_full, self.unroll)
        self.runs = [(self.unroll, q), (r, 1 if r else 0)]  # (steps per replay, replays)
        self.graphs = self._capture() if capture and self.n_full else []

    def _widths(self) -> dict[str, int]:
        """Per-batch length of each ``StepBatch`` field (targets, pairs or groups' negatives)."""
        bt = self.sizes.batch_targets
        per = {"targets": bt, "t_scale": bt, "negs": bt // self.sizes.group * self.sizes.shared}
        per["n_scale"] = per["negs"]
        return {name: per.get(name, bt * self.n_c) for name in FIELDS}

    def _buffers(self) -> StepBatch:
        """The step's ``StepBatch``: views into the gathered row of the packed plan."""
        views, offsets = {}, [0, 0]
        for name in FIELDS:
            kind = int(name in FLOAT_FIELDS)
            views[name] = self.row[kind][0, offsets[kind] : offsets[kind] + self.widths[name]]
            offsets[kind] += self.widths[name]
        return StepBatch(**views)

    def _pack(self, plan: EpochPlan) -> None:
        """Lay ``plan``'s full batches out as rows of the two packed matrices (fixed addresses)."""
        n = self.n_full
        for kind, out in enumerate(self.packed):
            names = [name for name in FIELDS if int(name in FLOAT_FIELDS) == kind]
            rows = [getattr(plan, name).reshape(-1)[: n * self.widths[name]].view(n, -1) for name in names]
            torch.cat(rows, dim=1, out=out)

    def _steps(self, count: int) -> None:
        """``count`` batches from the device counter on; the first adds its sampled loss to ``self.loss``."""
        for k in range(count):
            for packed, row in zip(self.packed, self.row, strict=True):
                torch.index_select(packed, 0, self.step, out=row)
            lr = torch.index_select(self.lrs, 0, self.step)
            loss = apply_step(self.win, self.wout, self.buffers, lr, self.sizes, self.ws, int(k == 0))
            if loss is not None:
                self.loss.add_(loss)
            self.step.add_(1)

    def _capture(self) -> list[torch.cuda.CUDAGraph]:
        """One graph per run length; warmed up once at learning rate 0 (a no-op on the tables) on a side stream."""
        dev = self.win.device
        self.lrs.zero_()
        side = torch.cuda.Stream(dev)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            self.step.zero_()
            self._steps(1)
        torch.cuda.current_stream(dev).wait_stream(side)
        graphs: list[torch.cuda.CUDAGraph] = []
        pool = None  # the graphs replay one after another: they can share one memory pool
        for steps, replays in self.runs:
            graph = torch.cuda.CUDAGraph()
            if replays:
                with torch.cuda.graph(graph, pool=pool, capture_error_mode=CAPTURE_MODE):
                    self._steps(steps)
                pool = graph.pool()
            graphs.append(graph)
        return graphs

    def run_epoch(self, plan: EpochPlan, lrs: tuple[float, float]) -> torch.Tensor:
        """Train one epoch laid out like the first one; returns the mean sampled loss per pair (0-dim, no sync).

        The learning rate falls linearly from ``lrs[0]`` to ``lrs[1]`` over the
        epoch, as in ``sgns.train_epoch`` (computed on the device: no host copy
        to wait for).
        """
        n, bt = self.n_full, self.sizes.batch_targets
        slope = (lrs[1] - lrs[0]) * bt / max(self.n_targets, 1)
        self.loss.zero_()
        if n:
            self._pack(plan)
            torch.arange(n, dtype=torch.float32, device=self.lrs.device, out=self.lrs).mul_(slope).add_(lrs[0])
            self.step.zero_()
            for k, (steps, replays) in enumerate(self.runs):
                for _ in range(replays):
                    if self.graphs:
                        self.graphs[k].replay()
                    else:
                        self._steps(steps)
        total, sampled = self.loss.clone(), sum(replays for _, replays in self.runs)
        if n * bt < self.n_targets:
            tail = sgd_step(
                self.win,
                self.wout,
                plan,
                (n * bt, self.n_targets),
                lrs[0] + slope * n,
                self.sizes,
                self.ws,
                int(n % self.unroll == 0),
            )
            if tail is not None:
                total, sampled = total + tail, sampled + 1
        return total / max(sampled * self.sizes.group * self.n_c, 1)
