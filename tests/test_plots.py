"""trainer.evaluation.plots: PCA and valid PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer.evaluation.plots import pca_2d, plot_embedding_map, plot_training_curves
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FixedModel(EmbeddingModel):
    kind = "fixed"

    def __init__(self, item_ids: list[str], vectors: FloatArray) -> None:
        super().__init__()
        self.item_ids = item_ids
        self.vectors = vectors

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        return FitReport(self.kind, "cpu", 0, 0.0, 0, 0.0)

    def index_vectors(self) -> FloatArray:
        return self.vectors

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        return np.zeros((len(histories), self.vectors.shape[1]), np.float32)

    def similar_vectors(self) -> FloatArray:
        return (self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)).astype(np.float32)

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        return {}, {"vectors": self.vectors}

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> FixedModel:
        return cls(item_ids, arrays["vectors"])


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND" and len(data) > 1000


def test_pca_finds_the_main_axis() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    x = np.stack([t * 10, t * 10, rng.normal(size=200) * 0.1], axis=1) + 5.0  # spread along (1, 1, 0)
    coords = pca_2d(x)
    assert coords.shape == (200, 2)
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.999
    assert coords[:, 0].var() > 100 * coords[:, 1].var()
    assert pca_2d(np.ones((3, 1))).shape == (3, 2)
    with pytest.raises(ValueError):
        pca_2d(np.zeros((0, 4)))


def test_embedding_map_and_training_curves_are_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(60)]
    model = FixedModel(ids, rng.normal(size=(60, 8)).astype(np.float32))
    titles = {f"i{k}": f"Title {k}" for k in range(60)}
    popularity = {f"i{k}": float(60 - k) for k in range(60)}
    out = plot_embedding_map(model, titles, popularity, tmp_path / "maps" / "map.png", n_labels=5)
    assert out == tmp_path / "maps" / "map.png" and _is_png(out)
    aligned = plot_embedding_map(model, titles, np.arange(60.0), tmp_path / "aligned.png")
    assert _is_png(aligned)
    with pytest.raises(ValueError, match="aligned"):
        plot_embedding_map(model, titles, np.arange(5.0), tmp_path / "bad.png")
    reports = [
        FitReport("mf", "cpu", 3, 1.0, 30, 30.0, losses=[0.9, 0.5, 0.4]),
        FitReport("mf", "cpu", 2, 1.0, 20, 20.0, losses=[0.8, 0.6]),
    ]
    curves = plot_training_curves(reports, tmp_path / "curves.png")
    assert _is_png(curves)
    assert _is_png(plot_training_curves({"item2vec": [3.0, 2.0, 1.5]}, tmp_path / "c2.png", log_scale=True))


def _saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every matplotlib Figure saved from now on (and still save it)."""
    from matplotlib.figure import Figure

    saved: list[Any] = []
    original = Figure.savefig

    def record(self: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def test_training_curves_keep_given_names_and_coinciding_curves_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = _saved_figures(monkeypatch)
    same = [0.9, 0.5, 0.4]
    curves: dict[str, FitReport | list[float]] = {  # ials and ials_tail: two presets of one kind, same curve
        "ials": FitReport("ials", "cpu", 3, 1.0, 30, 30.0, losses=same),
        "ials_tail": FitReport("ials", "cpu", 3, 1.0, 30, 30.0, losses=list(same)),
        "item2vec": list(same),
    }
    assert _is_png(plot_training_curves(curves, tmp_path / "curves.png"))
    (ax,) = saved[-1].axes
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["ials", "ials_tail", "item2vec"]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["ials", "ials_tail", "item2vec"]
    styles = [(line.get_linestyle(), line.get_marker()) for line in lines]
    assert len({s[0] for s in styles}) == 3 and len({s[1] for s in styles}) == 3  # all told apart
    assert styles[0][0] == "-" and all(s[0] != "-" for s in styles[1:])  # later curves dashed ...
    assert [line.get_zorder() for line in lines] == sorted({line.get_zorder() for line in lines})  # ... and on top
