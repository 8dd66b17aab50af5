"""The student stage's analysis callbacks, built (and their settings checked) before any training."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback
from torch import nn

from kdrun.callbacks.eigenspace import EigenspaceTrajectory
from kdrun.callbacks.snapshots import SNAPSHOT_SPLITS, LogitSnapshots, snapshot_steps
from kdrun.errors import ConfigError


def analysis_callbacks(cfg, splits, student: nn.Module, output_dir: Path, total_steps: int) -> list[Callback]:
    """Callbacks for `cfg.analysis` (none when the block is absent or everything is off)."""
    analysis = cfg.get("analysis") or {}
    callbacks: list[Callback] = []
    snapshots = analysis.get("snapshots") or {}
    steps = snapshot_steps(list(snapshots.get("at") or []), total_steps)
    if steps:
        chosen = list(snapshots.get("splits") or [])
        unknown = [split for split in chosen if split not in SNAPSHOT_SPLITS]
        if unknown or not chosen:
            raise ConfigError(f"analysis.snapshots.splits={chosen}; allowed: a non-empty list of "
                              f"{', '.join(SNAPSHOT_SPLITS)}")
        callbacks.append(LogitSnapshots(steps, {split: _eval_loader(splits, split) for split in chosen},
                                        output_dir / "snapshots"))
    eigenspace = analysis.get("eigenspace") or {}
    if eigenspace.get("enabled", False):
        callbacks.append(EigenspaceTrajectory(
            student, cfg.student.model.name, _eval_loader(splits, "train"), output_dir, total_steps,
            top=eigenspace.get("top", 5), bottom_range=list(eigenspace.get("bottom_range", [20, 60])),
            num_bottom=eigenspace.get("num_bottom", 5), every_n_steps=eigenspace.get("every_n_steps", 10),
            seed=eigenspace.get("seed", 0), center=bool(eigenspace.get("center", False))))
    return callbacks


def _eval_loader(splits, split: str):
    """Un-augmented, in dataset order; `train` is the student's training samples, as in evaluation."""
    return splits.loader("train", splits.student_indices) if split == "train" else splits.loader(split)
