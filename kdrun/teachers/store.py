"""Content-addressed teacher store.

An entry is the directory <store>/<key>/ holding `teacher.pt` (a state_dict) and
`meta.json` (everything that determined the teacher, its stage metrics, and the SHA-256 of
the weights). The key is a hash of that identity, so a sweep over student settings finds
each distinct teacher once. Entries are written to a temporary directory and renamed into
place (atomic on one filesystem); concurrent jobs that need the same teacher wait on a file
lock and reuse what the first one wrote; an entry that fails its checksum or does not load
is moved aside to <store>/.corrupt/ and rebuilt. A store the run cannot write to (a read-only
mount, another user's directory) still serves the entries it holds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from filelock import FileLock, Timeout
from torch import nn

from kdrun.atomic_files import file_sha256, staged_directory
from kdrun.errors import ConfigError

log = logging.getLogger(__name__)

STORE_FORMAT = 1
WEIGHTS, META = "teacher.pt", "meta.json"
FOLLOW_TIMEOUT_S = 600  # a DDP rank > 0 waits this long for rank 0 to write the entry it trained with it
CORRUPT_DIR = ".corrupt"
NOT_WRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


class StoreNotWritable(OSError):
    """The store (or one of its entries) cannot be written: read-only filesystem or no permission."""


def not_writable(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NOT_WRITABLE_ERRNOS


def teacher_key(identity: dict) -> str:
    canonical = json.dumps({"format": STORE_FORMAT, **identity}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass
class TeacherResult:
    model: nn.Module
    source: str  # "trained", "reused", "imported" or "oracle ..."
    key: str | None
    path: Path
    meta: dict = field(default_factory=dict)


@dataclass
class TeacherClaim:
    """A held store entry: the stored teacher (`found`), or a model to train and `publish`."""

    store: "TeacherStore"
    key: str
    identity: dict
    model: nn.Module
    found: TeacherResult | None = None
    follower: bool = False  # a DDP rank > 0: rank 0 writes the entry

    def publish(self, stage_metrics: dict) -> TeacherResult:
        """Store the trained `model` (atomically) with its stage metrics; the stored teacher."""
        return self.store.publish(self, stage_metrics)


class TeacherStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def has_entry(self, key: str) -> bool:
        return (self.entry(key) / META).is_file()

    def check_writable(self, key: str) -> None:
        """Before anything trains: a teacher this store lacks must be storable (ConfigError otherwise)."""
        if self.has_entry(key):
            return
        existing = next(parent for parent in [self.root, *self.root.parents] if parent.exists())
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".kdrun-write-probe-"):
                pass
        except OSError as error:
            raise ConfigError(
                f"teacher.store={str(self.root)!r} cannot be written ({error.strerror or error}: {existing}) and "
                f"holds no teacher for this configuration (key {key}); allowed: a writable directory for "
                f"teacher.store, a store that holds this teacher, or teacher.checkpoint=PATH") from None

    def lock(self, key: str) -> FileLock:
        """The entry's lock; StoreNotWritable when the lock file cannot be created."""
        lock = FileLock(str(self.root / f"{key}.lock"))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=2)
        except Timeout:
            log.info("teacher %s is being trained by another job; waiting for its lock %s", key, lock.lock_file)
            lock.acquire()
        except OSError as error:
            if not_writable(error):
                raise StoreNotWritable(error.errno, f"teacher store {self.root} is not writable ({error.strerror})",
                                       str(self.root)) from error
            raise
        return lock

    def quarantine_file(self, path: Path, reason: str) -> Path:
        """Move one bad file of an entry aside (under the entry's lock), keeping it for inspection."""
        graveyard = self.root / CORRUPT_DIR
        graveyard.mkdir(exist_ok=True)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        target = graveyard / f"{path.parent.name}-{path.stem}-{stamp}{path.suffix}"
        shutil.move(str(path), str(target))
        log.warning("%s %s; moved it to %s", path, reason, target)
        return target

    @contextmanager
    def claim(self, identity: dict, build: Callable[[], nn.Module],
              announce: Callable[[str], None] = lambda decision: None) -> Iterator["TeacherClaim"]:
        """The entry for `identity`, held by this process while the block runs.

        `claim.found` is the stored teacher (its weights loaded into a model from `build`) when the
        entry exists and is intact. Otherwise the block trains `claim.model` (a fresh `build()`) and
        stores it with `claim.publish(stage_metrics)`, holding the entry's lock, so concurrent jobs
        that need the same teacher wait and then reuse it: each teacher is trained once. A corrupt
        entry is moved to .corrupt/ first. `announce("reuse" | "train")` tells a DDP run's other
        ranks (see `follow`) what this process, their rank 0, does, before it does it."""
        key = teacher_key(identity)
        entry = self.entry(key)
        model = build()
        if self._load(entry, model, quiet=True):  # a bad entry is reported (once) under the lock
            announce("reuse")
            yield TeacherClaim(self, key, identity, model, self._reused(model, key))
            return
        lock = self.lock(key)
        try:
            if self._load(entry, model):  # trained by the job that held the lock
                announce("reuse")
                yield TeacherClaim(self, key, identity, model, self._reused(model, key))
                return
            if entry.exists():
                self._quarantine(entry)
            announce("train")
            yield TeacherClaim(self, key, identity, build())  # a failed load may have changed `model`
        finally:
            lock.release()

    @contextmanager
    def follow(self, identity: dict, build: Callable[[], nn.Module], decision: str) -> Iterator["TeacherClaim"]:
        """A DDP rank > 0: do what rank 0 announced, without the lock and without writing.

        Rank 0 holds the entry's lock while it trains, and its `fit` waits for every rank, so a
        rank > 0 that took the lock would deadlock; it trains alongside instead (same seeds,
        same batches), and its `publish` waits for the entry rank 0 writes."""
        key = teacher_key(identity)
        entry = self.entry(key)
        model = build()
        if decision == "reuse":
            if not self._load(entry, model):
                raise RuntimeError(f"rank 0 reused teacher entry {entry}, which this rank cannot load")
            yield TeacherClaim(self, key, identity, model, self._reused(model, key))
            return
        yield TeacherClaim(self, key, identity, build(), follower=True)  # rank 0's initial weights

    def publish(self, claim: "TeacherClaim", stage_metrics: dict) -> TeacherResult:
        entry = self.entry(claim.key)
        if claim.follower:
            # rank 0 writes the entry right after the shared fit; its record (weights SHA-256) is this
            # rank's too, and what later steps (e.g. cached teacher outputs) check against
            deadline = time.monotonic() + FOLLOW_TIMEOUT_S
            while not (entry / META).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rank 0 did not write teacher entry {entry} within {FOLLOW_TIMEOUT_S} s")
                time.sleep(0.1)
        else:
            self._write(entry, claim.model, {"key": claim.key, "identity": claim.identity, "metrics": stage_metrics,
                                             "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return TeacherResult(claim.model, "trained", claim.key, entry, self._meta(entry))

    def _write(self, entry: Path, model: nn.Module, meta: dict) -> None:
        with staged_directory(entry) as staging:  # a failed or full write leaves no staging folder
            torch.save(model.state_dict(), staging / WEIGHTS)
            meta = {**meta, "weights_sha256": file_sha256(staging / WEIGHTS)}
            (staging / META).write_text(json.dumps(meta, indent=2, default=str))

    def _reused(self, model: nn.Module, key: str) -> TeacherResult:
        entry = self.entry(key)
        return TeacherResult(model, "reused", key, entry, self._meta(entry))

    def _meta(self, entry: Path) -> dict:
        return json.loads((entry / META).read_text())

    def _load(self, entry: Path, model: nn.Module, quiet: bool = False) -> bool:
        """Load a complete, intact entry into `model`; False if absent or corrupt (`quiet`: say nothing of it)."""
        if not entry.exists():
            return False
        try:
            meta = self._meta(entry)
            if file_sha256(entry / WEIGHTS) != meta["weights_sha256"]:
                raise ValueError("weights do not match their recorded SHA-256")
            model.load_state_dict(torch.load(entry / WEIGHTS, map_location="cpu", weights_only=True))
            return True
        except Exception as error:  # any failure to read back means the entry cannot be trusted
            if not quiet:
                log.warning("teacher store entry %s is corrupt (%s); it will be rebuilt", entry, error)
            return False

    def _quarantine(self, entry: Path) -> None:
        graveyard = self.root / CORRUPT_DIR
        graveyard.mkdir(exist_ok=True)
        target = graveyard / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        shutil.move(str(entry), str(target))
        log.warning("moved corrupt teacher entry to %s", target)
