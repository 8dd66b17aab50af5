"""The student stage's analysis callbacks, built (and their settings checked) before any training."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from torch import nn

from kdrun.callbacks.eigenspace import EigenspaceTrajectory, check_eigenspace_config
from kdrun.callbacks.snapshots import SNAPSHOT_SPLITS, LogitSnapshots, snapshot_steps
from kdrun.errors import ConfigError
from kdrun.config.checks import check_keys, check_list, check_mapping


@dataclass(frozen=True)
class AnalysisSettings:
    """The `analysis` block, checked: snapshot points and splits, eigenspace options."""

    snapshot_at: list
    snapshot_splits: list
    eigenspace: dict


def check_analysis_config(analysis) -> AnalysisSettings:
    """The `analysis` block, checked from the config alone whether or not an analysis is on (snapshot
    steps against the run's length: when the callbacks are built)."""
    analysis = check_mapping(analysis, "analysis", allow_none=True) or {}
    check_keys(analysis, "analysis", ("snapshots", "eigenspace"))
    snapshots = check_mapping(analysis.get("snapshots"), "analysis.snapshots", allow_none=True) or {}
    check_keys(snapshots, "analysis.snapshots", ("at", "splits"))
    at = check_list(snapshots.get("at"), "analysis.snapshots.at", allow_none=True,
                    meaning="steps (int) or fractions of training (float)") or []
    snapshot_steps(at, None)
    chosen = snapshots.get("splits", ["train", "test"])
    if (isinstance(chosen, (str, Mapping)) or not isinstance(chosen, Sequence) or not chosen
            or any(split not in SNAPSHOT_SPLITS for split in chosen)):
        raise ConfigError(f"analysis.snapshots.splits={_listed(chosen)!r} is not a list of splits; allowed: a "
                          f"non-empty list of {', '.join(SNAPSHOT_SPLITS)}")
    return AnalysisSettings(list(at), list(chosen), check_eigenspace_config(analysis.get("eigenspace")))


def analysis_callbacks(cfg, splits, student: nn.Module, output_dir: Path, total_steps: int,
                       settings: AnalysisSettings | None = None) -> list[Callback]:
    """Callbacks for the analysis `settings` (checked; by default from `cfg.analysis`), none when all are off."""
    settings = settings or check_analysis_config(cfg.get("analysis"))
    at, chosen, eigenspace = settings.snapshot_at, settings.snapshot_splits, settings.eigenspace
    callbacks: list[Callback] = []
    steps = snapshot_steps(at, total_steps)
    if steps:
        callbacks.append(LogitSnapshots(steps, {split: _eval_loader(splits, split) for split in chosen},
                                        output_dir / "snapshots"))
    if eigenspace["enabled"]:
        callbacks.append(EigenspaceTrajectory(
            student, cfg.student.model.name, _eval_loader(splits, "train"), output_dir, total_steps,
            top=eigenspace["top"], bottom_range=eigenspace["bottom_range"], num_bottom=eigenspace["num_bottom"],
            every_n_steps=eigenspace["every_n_steps"], seed=eigenspace["seed"], center=eigenspace["center"]))
    return callbacks


def _listed(value):
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _eval_loader(splits, split: str):
    """Un-augmented, in dataset order; `train` is the student's training samples, as in evaluation."""
    return splits.loader("train", splits.student_indices) if split == "train" else splits.loader(split)
