"""PNG figures: a 2-D PCA map of item embeddings and training-loss curves.

matplotlib (the optional ``plots`` extra) is imported inside the functions,
and only its object-oriented API with the Agg canvas is used, so no pyplot
state or backend choice leaks into the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.models.base import EmbeddingModel, FitReport

F64 = npt.NDArray[np.float64]


def pca_2d(vectors: npt.ArrayLike) -> F64:
    """(n, 2) projection of (n, d) rows on their first two principal axes (numpy SVD)."""
    x = np.asarray(vectors, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"pca_2d needs a non-empty (n, d) array, got shape {x.shape}")
    centred = x - x.mean(axis=0, keepdims=True)  # (n, d)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(n, d), d)
    coords = centred @ vt[:2].T  # (n, <=2)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return np.asarray(coords, np.float64)


def _aligned_popularity(popularity: Mapping[str, float] | npt.ArrayLike, item_ids: Sequence[str]) -> F64:
    if isinstance(popularity, Mapping):
        return np.array([float(popularity.get(i, 0.0)) for i in item_ids], np.float64)
    pop = np.asarray(popularity, np.float64)
    if pop.shape != (len(item_ids),):
        raise ValueError(f"popularity has shape {pop.shape}, expected ({len(item_ids)},) aligned to item_ids")
    return pop


def _new_figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_vector_map(
    vectors: npt.ArrayLike, item_ids: Sequence[str], titles: Mapping[str, str],
    popularity: Mapping[str, float] | npt.ArrayLike, path: str | Path, *, n_labels: int = 20, title: str = "",
) -> Path:
    """Scatter of the PCA map, coloured by log popularity, the ``n_labels`` most popular labelled."""
    coords = pca_2d(vectors)  # (n, 2)
    pop = _aligned_popularity(popularity, item_ids)
    fig, ax = _new_figure(10, 8)
    points = ax.scatter(coords[:, 0], coords[:, 1], c=np.log1p(pop), s=6, cmap="viridis", alpha=0.6)
    fig.colorbar(points, ax=ax, label="log(1 + popularity)")
    for i in np.argsort(-pop, kind="stable")[:n_labels].tolist():
        label = titles.get(item_ids[i], item_ids[i])[:32]
        ax.annotate(label, (coords[i, 0], coords[i, 1]), fontsize=7, alpha=0.9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "item embeddings (PCA)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_embedding_map(
    model: EmbeddingModel, titles: Mapping[str, str], popularity: Mapping[str, float] | npt.ArrayLike,
    path: str | Path, *, n_labels: int = 20,
) -> Path:
    """PCA map of ``model.similar_vectors()`` with the most popular items labelled by title.

    ``popularity`` is either a mapping item id -> count or an array aligned to
    ``model.item_ids``.
    """
    return plot_vector_map(
        model.similar_vectors(), model.item_ids, titles, popularity, path,
        n_labels=n_labels, title=f"{model.kind} item embeddings (PCA)",
    )


def plot_training_curves(
    curves: Sequence[FitReport] | Mapping[str, Sequence[float]], path: str | Path, *, log_scale: bool = False,
) -> Path:
    """Mean loss per epoch, one line per model (FitReports or name -> losses)."""
    series: dict[str, Sequence[float]] = {}
    if isinstance(curves, Mapping):
        series = dict(curves)
    else:
        for report in curves:
            name, n = report.model, 2
            while name in series:
                name, n = f"{report.model} ({n})", n + 1
            series[name] = report.losses
    fig, ax = _new_figure(8, 5)
    for name, losses in series.items():
        ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, np.float64), marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss")
    if log_scale:
        ax.set_yscale("log")
    if series:
        ax.legend()
    ax.set_title("training curves")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
