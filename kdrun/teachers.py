"""Content-addressed teacher store.

An entry is the directory <store>/<key>/ holding `teacher.pt` (a state_dict) and
`meta.json` (everything that determined the teacher, its stage metrics, and the SHA-256 of
the weights). The key is a hash of that identity, so a sweep over student settings finds
each distinct teacher once. Entries are written to a temporary directory and renamed into
place (atomic on one filesystem); concurrent jobs that need the same teacher wait on a file
lock and reuse what the first one wrote; an entry that fails its checksum or does not load
is moved aside to <store>/.corrupt/ and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout
from torch import nn

from kdrun.errors import ConfigError

log = logging.getLogger(__name__)

STORE_FORMAT = 1
WEIGHTS, META = "teacher.pt", "meta.json"
FOLLOW_TIMEOUT_S = 600  # a DDP rank > 0 waits this long for rank 0 to write the entry it trained with it


def teacher_key(identity: dict) -> str:
    canonical = json.dumps({"format": STORE_FORMAT, **identity}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TeacherResult:
    model: nn.Module
    source: str  # "trained", "reused" or "imported"
    key: str | None
    path: Path
    meta: dict = field(default_factory=dict)


class TeacherStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def get_or_train(self, identity: dict, build: Callable[[], nn.Module],
                     train: Callable[[nn.Module], dict],
                     announce: Callable[[str], None] = lambda decision: None) -> TeacherResult:
        """The stored teacher for `identity`, training (once, across processes) if there is none.

        `announce("reuse" | "train")` tells a DDP run's other ranks (see `follow`) what this
        process, their rank 0, does, before it does it."""
        key = teacher_key(identity)
        entry = self.entry(key)
        model = build()
        if self._load(entry, model):
            announce("reuse")
            return TeacherResult(model, "reused", key, entry, self._meta(entry))
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f"{key}.lock"))
        try:
            lock.acquire(timeout=2)
        except Timeout:
            log.info("teacher %s is being trained by another job; waiting for its lock %s", key, lock.lock_file)
            lock.acquire()
        try:
            if self._load(entry, model):  # trained by the job that held the lock
                announce("reuse")
                return TeacherResult(model, "reused", key, entry, self._meta(entry))
            if entry.exists():
                self._quarantine(entry)
            announce("train")
            model = build()
            stage_metrics = train(model)
            self._write(entry, model, {"key": key, "identity": identity, "metrics": stage_metrics,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
            return TeacherResult(model, "trained", key, entry, self._meta(entry))
        finally:
            lock.release()

    def follow(self, identity: dict, build: Callable[[], nn.Module], train: Callable[[nn.Module], dict],
               decision: str) -> TeacherResult:
        """A DDP rank > 0: do what rank 0 announced, without the lock and without writing.

        Rank 0 holds the entry's lock while it trains, and its `fit` waits for every rank, so a
        rank > 0 that took the lock would deadlock; it trains alongside instead (same seeds,
        same batches) and rank 0 alone writes the entry."""
        key = teacher_key(identity)
        entry = self.entry(key)
        model = build()
        if decision == "reuse":
            if not self._load(entry, model):
                raise RuntimeError(f"rank 0 reused teacher entry {entry}, which this rank cannot load")
            return TeacherResult(model, "reused", key, entry, self._meta(entry))
        model = build()  # as rank 0 does under the lock: the same initial weights
        train(model)
        # rank 0 writes the entry right after the shared fit; its record (weights SHA-256) is this
        # rank's too, and what later steps (e.g. cached teacher outputs) check against
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while not (entry / META).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank 0 did not write teacher entry {entry} within {FOLLOW_TIMEOUT_S} s")
            time.sleep(0.1)
        return TeacherResult(model, "trained", key, entry, self._meta(entry))

    def _write(self, entry: Path, model: nn.Module, meta: dict) -> None:
        staging = self.root / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        torch.save(model.state_dict(), staging / WEIGHTS)
        meta = {**meta, "weights_sha256": file_sha256(staging / WEIGHTS)}
        (staging / META).write_text(json.dumps(meta, indent=2, default=str))
        os.replace(staging, entry)

    def _meta(self, entry: Path) -> dict:
        return json.loads((entry / META).read_text())

    def _load(self, entry: Path, model: nn.Module) -> bool:
        """Load a complete, intact entry into `model`; False if absent. Corrupt entries are moved aside."""
        if not entry.exists():
            return False
        try:
            meta = self._meta(entry)
            if file_sha256(entry / WEIGHTS) != meta["weights_sha256"]:
                raise ValueError("weights do not match their recorded SHA-256")
            model.load_state_dict(torch.load(entry / WEIGHTS, map_location="cpu", weights_only=True))
            return True
        except Exception as error:  # any failure to read back means the entry cannot be trusted
            log.warning("teacher store entry %s is corrupt (%s); it will be rebuilt", entry, error)
            return False

    def _quarantine(self, entry: Path) -> None:
        graveyard = self.root / ".corrupt"
        graveyard.mkdir(exist_ok=True)
        target = graveyard / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        shutil.move(str(entry), str(target))
        log.warning("moved corrupt teacher entry to %s", target)


def load_teacher_checkpoint(path: Path | str, model: nn.Module) -> TeacherResult:
    """Load external teacher weights safely (tensors only, no pickled code).

    Accepts a plain state_dict, or a Lightning checkpoint whose `state_dict` keys carry a
    `student.`/`model.` prefix (a kdrun student checkpoint can serve as a teacher).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"teacher.checkpoint={str(path)!r} could not be read as weights: {error}") from error
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"teacher.checkpoint={str(path)!r} holds no state_dict")
    # A distillation checkpoint also holds its frozen teacher ("teacher.*"): keep the student.
    for prefix in ("student.", "model."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(
            f"teacher.checkpoint={str(path)!r} does not fit the teacher architecture "
            f"(teacher={type(model).__name__}); set teacher= to the checkpoint's model. {error}"
        ) from error
    return TeacherResult(model, "imported", None, path, {"checkpoint_sha256": file_sha256(path)})
