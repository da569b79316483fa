"""Model snapshots on disk and the versioned model store (publish, rollback, prune).

A snapshot is one folder, never pickled::

    manifest.json   ModelManifest (schemas.records): type, config, sizes, metrics, files
    weights.npz     the model's named arrays (``np.load(..., allow_pickle=False)`` reads it)
    item_ids.json   the external item ids, row order of every per-item array

``save_snapshot`` writes into a hidden temp folder beside the target, fsyncs
every file and renames the folder into place, so a reader sees a complete
snapshot or none.

``ModelStore(root)`` keeps snapshots in ``root/versions/<version>/``.
``root/CURRENT`` names the published version (replaced atomically);
``root/HISTORY`` is the stack of published versions, oldest first, whose top
is CURRENT: ``publish`` pushes, ``rollback`` pops back to the version published
before. Both files are written so that a crash between the two writes leaves a
state ``_stack`` reconciles (CURRENT wins). Mutations hold ``root/.lock``.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas.records import ModelManifest
from trainer.models.base import Arrays, EmbeddingModel

log = logging.getLogger(__name__)


class ModelStoreError(ValueError):
    """A model store operation that cannot be done as asked (no such version, nothing to roll back to)."""


MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
ITEM_IDS = "item_ids.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a version / kind usable as one path component
_STALE_TMP_S = 3600.0  # prune removes temp folders of crashed saves older than this
_HISTORY_MAX = 1000


# ---------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _replace_file(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        _write_file(tmp, text.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _plain(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` as plain JSON types (numpy scalars/arrays converted); TypeError for anything else."""
    out: dict[str, Any] = json.loads(json.dumps(dict(doc), default=_json_default))
    return out


# ---------------------------------------------------------------- snapshots


def _write_weights(path: Path, arrays: Arrays) -> None:
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object; snapshots never pickle")
    with open(path, "wb") as fh:
        payload = {name: np.asarray(arr) for name, arr in arrays.items()}  # object dtypes refused above
        savez: Any = np.savez  # its stub reads **payload as possibly allow_pickle
        savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())


def save_snapshot(
    model: EmbeddingModel,
    folder: Path,
    *,
    version: str,
    data_watermark: dict[str, Any],
    metrics: dict[str, float],
    parent_version: str | None,
    setting: dict[str, Any] | None = None,
) -> ModelManifest:
    """Write ``model`` as a complete snapshot folder ``folder`` (which must not exist) and return its manifest."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"snapshot folder {folder} already exists")
    config, arrays = model.to_arrays()
    manifest = ModelManifest(
        version=version,
        model_type=model.kind,
        config=_plain(config),
        item_count=model.n_items,
        dim=int(np.asarray(model.index_vectors()).shape[1]),
        trained_at=int(time.time() * 1000),
        files=[WEIGHTS, ITEM_IDS],
        data_watermark=_plain(data_watermark),
        metrics={str(k): float(v) for k, v in metrics.items()},
        parent_version=parent_version,
        setting=_plain(setting or {}),
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        _write_weights(tmp / WEIGHTS, arrays)
        _write_file(tmp / ITEM_IDS, json.dumps([str(i) for i in model.item_ids]).encode())
        _write_file(tmp / MANIFEST, manifest.to_json().encode())
        _fsync_dir(tmp)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(folder.parent)
    return manifest


def read_manifest(folder: Path) -> ModelManifest:
    """The manifest of snapshot ``folder``; FileNotFoundError / ValueError naming the path."""
    path = Path(folder) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest (not a model snapshot?)") from None
    try:
        return ModelManifest.from_json(raw)
    except (ValueError, TypeError, AttributeError) as exc:  # bad JSON, not an object, schema_version, fields
        raise ValueError(f"{path}: corrupt manifest: {exc}") from exc


def _snapshot_file(folder: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"{folder / MANIFEST}: bad file name {name!r} in files")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in the manifest but missing")
    return path


def _read_weights(path: Path) -> Arrays:
    try:  # our own handle: np.load leaks the one it opens when the zip is corrupt
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: corrupt weights: {exc}") from exc


def _read_item_ids(path: Path, expected: int) -> list[str]:
    try:
        ids = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt item ids: {exc}") from exc
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{path}: item ids must be a JSON list of strings")
    if len(ids) != expected:
        raise ValueError(f"{path}: {len(ids)} item ids, manifest says item_count {expected}")
    return ids


def load_snapshot(
    folder: Path, classes: Mapping[str, type[EmbeddingModel]] | None = None
) -> tuple[EmbeddingModel, ModelManifest]:
    """Rebuild the model saved in ``folder``; ``classes`` (kind -> class) replaces the registry lookup."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = [_snapshot_file(folder, name) for name in manifest.files]
    weights = [p for p in files if p.name.endswith(".npz")]
    if len(weights) != 1 or ITEM_IDS not in manifest.files:
        raise ValueError(f"{folder / MANIFEST}: files must list one .npz and {ITEM_IDS}, got {manifest.files}")
    arrays = _read_weights(weights[0])
    item_ids = _read_item_ids(folder / ITEM_IDS, manifest.item_count)
    cls = _class_of(manifest.model_type, classes, folder)
    try:
        model = cls.from_arrays(dict(manifest.config), arrays, item_ids)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{folder}: cannot rebuild {manifest.model_type} model: {exc!r}") from exc
    return model, manifest


def _class_of(kind: str, classes: Mapping[str, type[EmbeddingModel]] | None, folder: Path) -> type[EmbeddingModel]:
    if classes is not None:
        if kind not in classes:
            raise ValueError(f"{folder}: unknown model type {kind!r}; known: {sorted(classes)}")
        return classes[kind]
    from trainer.models import registry

    try:
        return registry.model_class(kind)
    except KeyError as exc:
        raise ValueError(f"{folder}: unknown model type {kind!r} ({exc.args[0]})") from None


# ---------------------------------------------------------------- the store


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name) or ".tmp-" in name:
        raise ValueError(f"bad {what} {name!r}: use letters, digits, '.', '_', '-'")
    return name


class ModelStore:
    """Versioned snapshots under ``root`` with a published CURRENT and a publish history."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"

    # -- reading

    def path(self, version: str) -> Path:
        return self.versions / _check_name("version", version)

    def exists(self, version: str) -> bool:
        return (self.path(version) / MANIFEST).is_file()

    def current(self) -> str | None:
        """The published version, or None before the first publish."""
        try:
            text = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def history(self) -> builtins.list[str]:
        """Published versions, oldest first; the last one is CURRENT."""
        return self._stack()

    def list(self) -> builtins.list[ModelManifest]:
        """Manifests of every complete version, oldest first (by trained_at, then version)."""
        out = []
        for folder in self._folders():
            try:
                out.append(read_manifest(folder))
            except (OSError, ValueError) as exc:
                log.warning("skipping model folder %s: %s", folder, exc)
        return sorted(out, key=lambda m: (m.trained_at, m.version))

    def rollback_target(self) -> str | None:
        """The version ``rollback()`` would make current, or None."""
        stack = self._stack()
        earlier = [v for v in stack[:-1] if v != stack[-1] and self.exists(v)]
        return earlier[-1] if earlier else None

    # -- writing

    def new_version(self, kind: str) -> str:
        """A fresh, sortable version name: ``<UTC time>-<kind>-<random>`` with no folder yet."""
        _check_name("model kind", kind)
        while True:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            version = f"{stamp}-{kind}-{secrets.token_hex(4)}"
            if not self.path(version).exists():
                return version

    def publish(self, version: str) -> None:
        """Make ``version`` (a complete snapshot) CURRENT and push it onto the history."""
        if not self.exists(version):
            raise ModelStoreError(f"cannot publish {version!r}: no snapshot at {self.path(version)}")
        with self._locked():
            stack = self._stack()
            if stack and stack[-1] == version:
                self._write_current(version)
                return
            self._write_current(version)  # CURRENT first: a crash now leaves a stack _stack() completes
            self._write_history([*stack, version])

    def rollback(self, to: str | None = None) -> str:
        """Make the previously published version (or ``to``) CURRENT again and return it."""
        with self._locked():
            stack = self._stack()
            if to is None:
                target = self.rollback_target()
                if target is None:
                    raise ModelStoreError(f"nothing to roll back to: no earlier published version in {self.root}")
                return self._pop_to(stack, target)
            if not self.exists(to):
                raise ModelStoreError(f"cannot roll back to {to!r}: no snapshot at {self.path(to)}")
            if to in stack:
                return self._pop_to(stack, to)
            self._write_current(to)
            self._write_history([*stack, to])
            return to

    def prune(self, keep: int) -> builtins.list[str]:
        """Delete the oldest versions beyond the newest ``keep`` (never CURRENT or the rollback target)."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        with self._locked():
            protected = {v for v in (self.current(), self.rollback_target()) if v}
            ordered = [m.version for m in self.list()]
            doomed = [v for v in ordered[: max(len(ordered) - keep, 0)] if v not in protected]
            for version in doomed:
                shutil.rmtree(self.path(version))
                log.info("pruned model version %s", version)
            if doomed:
                gone = set(doomed)
                self._write_history([v for v in self._stack() if v not in gone])
            self._remove_stale_temp()
        return doomed

    # -- internals

    def _folders(self) -> builtins.list[Path]:
        if not self.versions.is_dir():
            return []
        return sorted(p for p in self.versions.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _stack(self) -> builtins.list[str]:
        try:
            lines = (self.root / "HISTORY").read_text().split()
        except FileNotFoundError:
            lines = []
        current = self.current()
        if current is not None and (not lines or lines[-1] != current):
            lines.append(current)  # a crash between the two writes, or a store without HISTORY
        return lines

    def _pop_to(self, stack: builtins.list[str], target: str) -> str:
        last = len(stack) - stack[::-1].index(target)
        self._write_history(stack[:last])  # history first: a crash now leaves CURRENT above it, re-added
        self._write_current(target)
        return target

    def _write_current(self, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _replace_file(self.root / "CURRENT", version + "\n")

    def _write_history(self, stack: builtins.list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _replace_file(self.root / "HISTORY", "".join(v + "\n" for v in stack[-_HISTORY_MAX:]))

    def _remove_stale_temp(self) -> None:
        if not self.versions.is_dir():
            return
        cutoff = time.time() - _STALE_TMP_S
        for p in self.versions.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name and p.stat().st_mtime < cutoff:
                shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
