"""The train role and the item catalogue: ``side_info`` trained by the daemon learns the attributes ingest keeps
in Redis, keeps them across warm starts, and saves what a brand-new item's vectors need; ``recd model inspect``
names items by their catalogue titles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from daemon.ingest.catalogue import CatalogueStore
from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_trainer
from daemon.runtime.cli import main
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.settings import Settings
from daemon.train.scheduler import TrainRole
from schemas.catalogue import CatalogueEvent
from schemas.events import InteractionEvent
from schemas.records import ModelManifest
from tests.conftest import RedisTarget, make_settings
from tests.planted import PER_CLUSTER, planted
from trainer.attributes import ItemAttributes
from trainer.inspect import catalogue_titles
from trainer.models.side_info import SideInfo
from trainer.snapshot import load_snapshot

pytestmark = pytest.mark.integration

GROUPS = 4
"""Attribute groups; interaction clusters ``2g`` and ``2g + 1`` share group ``g``'s ``cat`` value but no user."""
FAST = {"dim": 16, "epochs": 20, "batch": 256, "lr": 0.03, "seed": 3}


@pytest.fixture
def train_settings(redis_target: RedisTarget, prefix: str, tmp_path: Path) -> Settings:
    """This test's Redis prefix and model folder, training ``side_info`` on the CPU (no broker: nothing is
    consumed, ingest's stores are driven directly)."""
    base = make_settings(redis_target, "127.0.0.1:9", prefix, tmp_path)
    return base.replace(
        model_kind="side_info",
        model_params=FAST,
        device="cpu",
        train_threads=1,
        train_min_events=1,
        quality_tolerance=0.9,
    )


def group(item: str) -> int:
    """``i{c}_{k}`` -> its attribute group ``c // 2``."""
    return int(item[1:].split("_")[0]) // 2


def ingest(settings: Settings, clusters: range, seed: int) -> None:
    """Planted events of ``clusters`` (users take items inside one cluster) and every item's catalogue record:
    its group as ``cat`` and a ``title``."""
    data = planted(n_users=20 * len(clusters), clusters=clusters, seed=seed)
    now = int(time.time() * 1000)
    start = now - len(data) * 1000
    events = [
        (InteractionEvent(f"e{seed}_{n}", data.user_ids[u], data.item_ids[i], "purchase", start + n * 1000), now)
        for n, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True))
    ]
    topology, keys = topology_of(settings), keys_of(settings)
    RedisStore(topology, keys, store_options(settings)).apply_events(events, now)
    items = [f"i{c}_{k}" for c in clusters for k in range(PER_CLUSTER)]
    describe(settings, {item: {"cat": (f"g{group(item)}",), "title": (f"Title {item}",)} for item in items})


def describe(settings: Settings, attributes: dict[str, dict[str, tuple[str, ...]]]) -> None:
    records = [CatalogueEvent(item, attrs, True, int(time.time() * 1000)) for item, attrs in attributes.items()]
    CatalogueStore(topology_of(settings), keys_of(settings), 10_000).apply(records)


def train(settings: Settings) -> tuple[SideInfo, ModelManifest]:
    role = build_trainer(settings, Metrics(CollectorRegistry()))
    assert role.takes_attributes
    outcome = role.run_once()
    assert outcome.status == "published", outcome
    assert outcome.version is not None
    model, manifest = load_snapshot(role.store.path(outcome.version))
    assert isinstance(model, SideInfo)
    return model, manifest


def cosines(model: SideInfo) -> npt.NDArray[np.float32]:
    unit = model.similar_vectors()
    return np.asarray(unit @ unit.T, np.float32)


def test_side_info_trained_by_the_daemon_learns_the_catalogue_and_serves_a_new_item(train_settings: Settings) -> None:
    ingest(train_settings, range(2 * GROUPS), seed=0)
    describe(train_settings, {"unsold": {"cat": ("g1",), "title": ("Never sold",)}})  # in no history
    model, manifest = train(train_settings)
    assert "unsold" not in model.item_ids and manifest.data_watermark["attributed_items"] == 2 * GROUPS * PER_CLUSTER
    vocabulary = set(model.attributes.value_names)
    assert {f"cat=g{g}" for g in range(GROUPS)} <= vocabulary and "title=Title i3_7" in vocabulary
    assert "title=Never sold" not in vocabulary  # only the snapshot's items' attributes are trained
    assert model.attributes.align(["i5_2"]).to_mapping() == {"i5_2": {"cat": ["g2"], "title": ["Title i5_2"]}}
    sims, ids = cosines(model), model.item_ids
    cluster = np.array([int(i[1:].split("_")[0]) for i in ids])
    sibling = (cluster[:, None] // 2 == cluster[None, :] // 2) & (cluster[:, None] != cluster[None, :])
    unrelated = cluster[:, None] // 2 != cluster[None, :] // 2
    # items of sibling clusters share a cat value and no user: the attribute alone brings them together
    assert sims[sibling].mean() > sims[unrelated].mean() + 0.3, (sims[sibling].mean(), sims[unrelated].mean())
    # a brand-new item, known only by its attributes (one value the model never saw), lands in its group
    new = ItemAttributes.from_mapping({"new": {"colour": "red", "cat": "g2"}})
    near = np.argsort(-(model.similar_for_attributes(new) @ model.similar_vectors().T)[0])[:10]
    assert [group(ids[j]) for j in near] == [2] * 10
    assert model.vectors_for_attributes(new).shape == (1, model.index_vectors().shape[1])


def test_warm_start_in_the_daemon_keeps_the_vocabulary_and_adds_new_values(train_settings: Settings) -> None:
    ingest(train_settings, range(4), seed=0)
    first, _ = train(train_settings)
    ingest(train_settings, range(4, 6), seed=1)  # new items with a new cat value (g2)
    describe(train_settings, {"i0_0": {"cat": ("g0",), "title": ("Renamed",)}})  # an old item's new record
    second, manifest = train(train_settings)
    assert manifest.parent_version is not None
    old = first.attributes.value_names
    assert second.attributes.value_names[: len(old)] == old and "cat=g2" in second.attributes.value_names[len(old) :]
    assert second.item_ids[: first.n_items] == first.item_ids
    assert second.attributes.align(["i0_0"]).to_mapping()["i0_0"]["title"] == ["Renamed"]
    for side in ("in", "out"):
        assert second.table(f"attr_{side}").shape == (len(second.attributes.value_names), FAST["dim"])
    unused = old.index("title=Title i0_0")  # no item carries it any more: its row is left as it was
    np.testing.assert_array_equal(second.table("attr_in")[unused], first.table("attr_in")[unused])


def test_inspect_names_items_by_their_catalogue_titles(
    train_settings: Settings,
    redis_target: RedisTarget,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest(train_settings, range(2), seed=0)
    train(train_settings)
    describe(train_settings, {"i1_4": {"cat": ("g0",), "name": ("Named only",)}})
    for name, value in {
        "RECD_MODEL_DIR": train_settings.model_dir,
        "RECD_REDIS_URL": redis_target.url,
        "RECD_REDIS_CLUSTER": "true" if redis_target.cluster else "false",
        "RECD_REDIS_PREFIX": train_settings.redis_prefix,
        "RECD_REDIS_SHARDS": str(train_settings.redis_shards),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["model", "inspect", "--items", "i0_3,i1_4", "-k", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    near = doc["neighbours"]["i0_3"]
    assert len(near) == 3 and all(n["title"] == f"Title {n['item_id']}" or n["item_id"] == "i1_4" for n in near)
    assert main(["model", "inspect", "--items", "i0_3,i1_4", "-k", "3"]) == 0
    text = capsys.readouterr().out
    assert "nearest to i0_3 (Title i0_3):" in text and "nearest to i1_4 (Named only):" in text


def test_titles_come_from_a_title_or_else_a_name_attribute() -> None:
    got = catalogue_titles({"a": {"name": ("N",), "title": ("T",)}, "b": {"name": ("N2", "x")}, "c": {"genre": ("g",)}})
    assert got == {"a": "T", "b": "N2"}


def test_a_model_without_attributes_reads_no_catalogue(train_settings: Settings) -> None:
    role: TrainRole = build_trainer(
        train_settings.replace(model_kind="ials", model_params={}), Metrics(CollectorRegistry())
    )
    assert not role.takes_attributes
