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
# Loss curves to plot: label (preset / model name) -> its FitReport or its mean loss per epoch; or bare FitReports,
# labelled by model kind.
Curves = Mapping[str, FitReport | Sequence[float]] | Sequence[FitReport]


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
    vectors: npt.ArrayLike,
    item_ids: Sequence[str],
    titles: Mapping[str, str],
    popularity: Mapping[str, float] | npt.ArrayLike,
    path: str | Path,
    *,
    n_labels: int = 20,
    title: str = "",
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
    model: EmbeddingModel,
    titles: Mapping[str, str],
    popularity: Mapping[str, float] | npt.ArrayLike,
    path: str | Path,
    *,
    n_labels: int = 20,
    name: str | None = None,
) -> Path:
    """PCA map of ``model.similar_vectors()`` with the most popular items labelled by title.

    ``popularity`` is either a mapping item id -> count or an array aligned to
    ``model.item_ids``; ``name`` (the preset / model name, default the model's
    kind) titles the figure.
    """
    return plot_vector_map(
        model.similar_vectors(),
        model.item_ids,
        titles,
        popularity,
        path,
        n_labels=n_labels,
        title=f"{name or model.kind} item embeddings (PCA)",
    )


# Curve i's style: the first solid and thickest; each later one dashed, thinner, hollow-marked and drawn on top, so a
# curve that coincides with an earlier one (e.g. two presets of one model) still shows both.
_DASHES: tuple[Any, ...] = ("--", "-.", ":", (0, (5, 1, 1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _curve_style(i: int) -> dict[str, Any]:
    """matplotlib ``plot`` keywords of the i-th curve (see ``_DASHES``)."""
    return {
        "linestyle": "-" if i == 0 else _DASHES[(i - 1) % len(_DASHES)],
        "linewidth": max(3.0 - 0.8 * i, 1.0),
        "marker": _MARKERS[i % len(_MARKERS)],
        "markersize": max(8.0 - 1.5 * i, 3.5),
        "markerfacecolor": None if i == 0 else "none",
        "zorder": 2 + i,
    }


def _curve_series(curves: Curves) -> dict[str, Sequence[float]]:
    """Label -> losses. A mapping keeps its names (a preset or model name each, as the caller gave them); a bare
    sequence of FitReports has only each model's kind, so a repeated kind is numbered ("mf (2)")."""
    if isinstance(curves, Mapping):
        return {str(name): c.losses if isinstance(c, FitReport) else c for name, c in curves.items()}
    series: dict[str, Sequence[float]] = {}
    for report in curves:
        name, n = report.model, 2
        while name in series:
            name, n = f"{report.model} ({n})", n + 1
        series[name] = report.losses
    return series


def plot_training_curves(curves: Curves, path: str | Path, *, log_scale: bool = False) -> Path:
    """Mean loss per epoch, one line per curve, labelled by its name (name -> FitReport or losses).

    Each curve has its own line style and marker, later ones dashed over earlier ones (see ``_curve_style``).
    """
    series = _curve_series(curves)
    fig, ax = _new_figure(8, 5)
    for i, (name, losses) in enumerate(series.items()):
        ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, np.float64), label=name, **_curve_style(i))
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
