"""Exact resume at epoch boundaries, for the configuration that wrote the checkpoint and no other.

A stage checkpoints after every epoch to `<run dir>/checkpoints/<stage>/last.ckpt`. The batch
order of an epoch is a pure function of (order seed, epoch) (kdrun.data.samplers), and the
checkpoint carries the RNG states (torch, CUDA, numpy, python), so a run killed after epoch k and
started again in the same directory trains epochs k+1... exactly as an uninterrupted run would.

A checkpoint also records what it belongs to (`StageOwner`): for the teacher its store key, for
the student a digest of everything that determines its training. `plan_resume` resumes a stage
only when the current run's owner matches; a checkpoint of another configuration is refused
before anything trains (resuming it would mix two runs, and a teacher resumed from another
seed's epochs would be published under this seed's store key). `resume=never` discards such
checkpoints and starts afresh. Hydra rewrites `.hydra/` of the run directory before kdrun runs,
so the configuration the checkpoints belong to is kept beside them (`checkpoints/config/`) and put
back when a resume is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from kdrun.atomic_files import atomic_path
from kdrun.errors import ConfigError

log = logging.getLogger("kdrun")

LAST = "last.ckpt"
FINAL_OUTPUT = "metrics.json"  # present once a run has finished: nothing left to resume
RESUME_MODES = ("auto", "never")
CONFIG_COPY = "config"  # checkpoints/config/: the .hydra/ of the run the checkpoints belong to
STAGES = ("teacher", "student")
SHOWN_DIFFERENCES = 6


def checkpoint_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


@dataclass(frozen=True)
class StageOwner:
    """What a stage's checkpoints belong to: a digest of the settings that determine its training."""

    stage: str
    digest: str
    settings: dict  # flat {dotted key: value}, to name what differs when a resume is refused
    identity: dict = field(default_factory=dict, compare=False)  # the nested settings digested

    @classmethod
    def of(cls, stage: str, identity: dict, digest: str | None = None) -> "StageOwner":
        flat = flatten(identity)
        canonical = json.dumps(flat, sort_keys=True, separators=(",", ":"), default=str)
        return cls(stage, digest or hashlib.sha256(canonical.encode()).hexdigest()[:20], flat, identity)

    def record(self) -> dict:
        return {"stage": self.stage, "digest": self.digest, "settings": self.settings}


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


class EpochCheckpoint(Checkpoint):
    """`last.ckpt` after every training epoch, overwritten in place.

    A `Checkpoint` subclass, so Lightning calls it after the module's own `on_train_epoch_end`
    (which folds the epoch into the batch-order digest and logs the epoch's loss) and after
    validation. The loggers are flushed first: the logs on disk then hold every row the
    checkpoint's epochs produced, and a resumed run keeps exactly those (kdrun.engine.loggers).
    ModelCheckpoint would save `last.ckpt` only alongside a top-k checkpoint."""

    def __init__(self, run_dir: Path, stage: str):
        self.path = checkpoint_dir(run_dir, stage) / LAST

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(self.path)  # rank 0 writes; every rank takes part (barrier)


def epoch_checkpoint(run_dir: Path, stage: str) -> EpochCheckpoint:
    return EpochCheckpoint(run_dir, stage)


@dataclass(frozen=True)
class Resume:
    """Where a stage resumes from: its checkpoint and the epochs already done (None: it starts afresh)."""

    path: str | None = None
    epochs_done: int = 0


def plan_resume(run_dir: Path, owners: dict[str, StageOwner | None], mode: str = "auto") -> dict[str, Resume]:
    """Per stage, the checkpoint this run resumes from. Called before anything trains.

    `owners[stage]` is this run's owner of the stage, None when the run does not train it (an
    imported or oracle teacher). A checkpoint is resumed only when its recorded owner matches;
    otherwise ConfigError names both (mode `auto`), or the checkpoint is discarded (mode `never`).
    A finished run directory (metrics.json) resumes nothing."""
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume={mode!r}; allowed: {', '.join(RESUME_MODES)} (auto: resume a matching "
                          f"checkpoint, never: start afresh)")
    run_dir = Path(run_dir)
    plan = {stage: Resume() for stage in STAGES}
    found = {stage: checkpoint_dir(run_dir, stage) / LAST for stage in STAGES}
    found = {stage: path for stage, path in found.items() if path.is_file()}
    if not found or (run_dir / FINAL_OUTPUT).exists():
        return plan
    if mode == "never":
        for stage, path in found.items():
            path.unlink(missing_ok=True)  # DDP ranks all plan; whichever comes first removes it
            log.info("resume=never: discarded %s; the %s starts afresh", path, stage)
        return plan
    for stage, path in found.items():
        saved, epochs_done = _read_owner(path)
        if saved is None and epochs_done is None:
            continue  # unreadable: moved aside, the stage starts afresh
        owner = owners.get(stage)
        if owner is None or saved is None or saved.get("digest") != owner.digest:
            restore_configuration(run_dir)
            raise ConfigError(_mismatch_message(run_dir, stage, path, epochs_done, saved, owner))
        plan[stage] = Resume(str(path), epochs_done)
        log.info("resuming %s from epoch %d (%d epochs done; %s)", stage, epochs_done, epochs_done, path)
    return plan


def _read_owner(path: Path) -> tuple[dict | None, int | None]:
    """(recorded owner or None, epochs done) of a checkpoint; (None, None) if it cannot be read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return (checkpoint.get("kdrun") or {}).get("belongs_to"), int(checkpoint["epoch"]) + 1
    except Exception as error:  # written atomically, so only a damaged disk gets here
        target = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            path.rename(target)
        except FileNotFoundError:  # another DDP rank moved it first
            pass
        log.warning("checkpoint %s cannot be read (%s); moved it to %s and the stage starts afresh",
                    path, error, target)
        return None, None


def _mismatch_message(run_dir: Path, stage: str, path: Path, epochs_done: int, saved: dict | None,
                      owner: StageOwner | None) -> str:
    mine = "this run does not train a teacher" if owner is None else f"this run's is {owner.digest}"
    theirs = "records no owner (written by an older kdrun)" if saved is None else f"belongs to {saved['digest']}"
    differences = ""
    if saved is not None and owner is not None:
        before, after = saved.get("settings", {}), owner.settings
        changed = [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
        shown = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed[:SHOWN_DIFFERENCES]]
        more = f" and {len(changed) - SHOWN_DIFFERENCES} more" if len(changed) > SHOWN_DIFFERENCES else ""
        differences = f"; they differ in {'; '.join(shown)}{more}" if shown else ""
    config_copy = Path(run_dir) / "checkpoints" / CONFIG_COPY / "overrides.yaml"
    wrote = f" (its overrides: {config_copy})" if config_copy.is_file() else ""
    return (f"the run directory {run_dir} holds a {stage} checkpoint ({epochs_done} epochs done, {path}) of another "
            f"configuration: it {theirs}, {mine}{differences}. Resuming would mix the two runs. Allowed: the "
            f"configuration that wrote it{wrote}, another run directory (hydra.run.dir=...), or resume=never to "
            f"discard the checkpoint and start afresh here")


def remember_configuration(run_dir: Path) -> None:
    """Keep the run's `.hydra/` beside its checkpoints: the configuration they belong to."""
    source = Path(run_dir) / ".hydra"
    if source.is_dir():
        target = Path(run_dir) / "checkpoints" / CONFIG_COPY
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, dirs_exist_ok=True)


def restore_configuration(run_dir: Path) -> None:
    """Put back the `.hydra/` of the checkpoints' own run (Hydra has just overwritten it with a refused one)."""
    saved = Path(run_dir) / "checkpoints" / CONFIG_COPY
    if saved.is_dir():
        shutil.copytree(saved, Path(run_dir) / ".hydra", dirs_exist_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a staging file and rename: a job killed while saving leaves the previous last.ckpt intact,
    and a full disk leaves no staging file behind (kdrun.atomic_files)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as staging:
            super().save_checkpoint(checkpoint, staging, storage_options)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state() -> tuple:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)


class RunningDigest:
    """SHA-256 chained over updates (digest_n = sha256(digest_{n-1} + data_n)): unlike hashlib's
    object its state is 32 bytes, so it goes into a checkpoint and a resumed run continues it."""

    def __init__(self, state: bytes = b""):
        self.state = state

    def update(self, data: bytes) -> None:
        self.state = hashlib.sha256(self.state + data).digest()

    def hexdigest(self) -> str:
        return self.state.hex() if self.state else hashlib.sha256().hexdigest()
