"""Records recd writes for others to read: recommendation lists, similar-item
lists, model manifests and the model search's choice. Each carries the model version or time that made it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

MANIFEST_SCHEMA_VERSION = 1
SOURCES = ("ann", "popular")  # plus "coldstart:<segment>"


@dataclass(frozen=True)
class RecommendationList:
    """Value of ``rec:{user_id}``: a user's top-K with where it came from."""

    user_id: str
    items: list[str]
    scores: list[float]
    source: str  # "ann" | "coldstart:<segment>" | "popular"
    model_version: str
    updated_at: int  # epoch ms

    def __post_init__(self) -> None:
        if len(self.items) != len(self.scores):
            raise ValueError("items and scores differ in length")
        if self.source not in SOURCES and not self.source.startswith("coldstart:"):
            raise ValueError(f"unknown source {self.source!r}")

    def to_json(self) -> bytes:
        """Compact JSON (built field by field: ``dataclasses.asdict`` deep-copies and was 15% of serving)."""
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "items": self.items,
                "scores": self.scores,
                "source": self.source,
                "model_version": self.model_version,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RecommendationList:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class SimilarList:
    """Value of ``sim:{item_id}``: the items most like one item."""

    item_id: str
    items: list[str]
    scores: list[float]
    model_version: str
    updated_at: int  # epoch ms

    def __post_init__(self) -> None:
        if len(self.items) != len(self.scores):
            raise ValueError("items and scores differ in length")

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "item_id": self.item_id,
                "items": self.items,
                "scores": self.scores,
                "model_version": self.model_version,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> SimilarList:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class ModelManifest:
    """The JSON file beside a model's weights (``manifest.json``); never pickled.

    ``files`` names the weight files (npz) relative to the snapshot folder;
    ``data_watermark`` says what data the model saw (event count, last event ms);
    ``metrics`` holds held-out quality figures the quality gate compares;
    ``setting`` the preset and settings it was trained with and what chose them
    (``ModelChoice.as_setting``).
    """

    version: str
    model_type: str
    config: dict[str, Any]
    item_count: int
    dim: int
    trained_at: int  # epoch ms
    files: list[str]
    data_watermark: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_version: str | None = None
    schema_version: int = MANIFEST_SCHEMA_VERSION
    setting: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelManifest:
        data = json.loads(raw)
        if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise ValueError(f"manifest schema_version {data.get('schema_version')!r} is not supported")
        return cls(**data)


@dataclass(frozen=True)
class ModelChoice:
    """Value of ``model:choice``: the preset and settings the train role fine-tunes with, and the search that
    chose them. ``metrics`` are the winner's held-out figures, ``baseline`` those of the configured setting
    (``RECD_MODEL_KIND`` with ``RECD_MODEL_PARAMS``) on the same held-out events."""

    preset: str
    params: dict[str, float]
    metric: str  # the figure compared (the quality gate's)
    metrics: dict[str, float]
    baseline: dict[str, float]
    trials: int
    seconds: float
    searched_at: int  # epoch ms
    data_users: int  # users in the data searched on

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelChoice:
        return cls(**json.loads(raw))

    def as_setting(self) -> dict[str, Any]:
        """What a manifest records of a model trained with this choice."""
        return {
            "preset": self.preset,
            "params": dict(self.params),
            "chosen_by": "search",
            "searched_at": self.searched_at,
            "validation": {self.metric: self.metrics.get(self.metric), "baseline": self.baseline.get(self.metric)},
        }
