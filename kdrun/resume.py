"""Exact resume at epoch boundaries: each stage's `last.ckpt`, RNG states, a serialisable batch-order digest.

A stage checkpoints after every epoch to `<run dir>/checkpoints/<stage>/last.ckpt`. The batch
order of an epoch is a pure function of (order seed, epoch) (kdrun.data.samplers), and the
checkpoint carries the RNG states (torch, CUDA, numpy, python), so a run killed after epoch k and
started again in the same directory trains epochs k+1... exactly as an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger("kdrun")

LAST = "last.ckpt"
FINAL_OUTPUT = "metrics.json"  # present once a run has finished: nothing left to resume


def checkpoint_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


class EpochCheckpoint(Checkpoint):
    """`last.ckpt` after every training epoch, overwritten in place.

    A `Checkpoint` subclass, so Lightning calls it after the module's own `on_train_epoch_end`
    (which folds the epoch into the batch-order digest) and after validation. ModelCheckpoint
    would save `last.ckpt` only alongside a top-k checkpoint."""

    def __init__(self, run_dir: Path, stage: str):
        self.path = checkpoint_dir(run_dir, stage) / LAST

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)  # rank 0 writes; every rank takes part (barrier)


def epoch_checkpoint(run_dir: Path, stage: str) -> EpochCheckpoint:
    return EpochCheckpoint(run_dir, stage)


def resume_path(run_dir: Path, stage: str) -> str | None:
    """The stage's `last.ckpt` when the run directory holds one and the run has not finished."""
    path = checkpoint_dir(run_dir, stage) / LAST
    if not path.exists() or (Path(run_dir) / FINAL_OUTPUT).exists():
        return None
    epochs_done = int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1
    log.info("resuming %s from epoch %d (%d epochs done; %s)", stage, epochs_done, epochs_done, path)
    return str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file and rename: a job killed while saving leaves the previous last.ckpt intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        super().save_checkpoint(checkpoint, staging, storage_options)
        os.replace(staging, path)


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
