"""Weight trajectories on the data's eigendirections (paper 000 M8, §C.4; Figs 3, 23, 24).

The directions v are eigenvectors of the uncentred second-moment matrix (1/n) sum_x z(x) z(x)^T
of the student's training samples (un-augmented), largest eigenvalue first (index 0):
- random_features: z(x) = the fixed feature map `features(x)`, W = `head.weight`;
- mlp: z(x) = the flattened input, W = the first layer `features[1].weight`.
Uncentred because paper 000 does not say, and the eigenvectors of the uncentred matrix are the
right singular vectors of the data matrix, its likeliest reading; `center: true` uses the
covariance instead. The projection is ||W^T v||_2 with W stored as (out, in) in torch, i.e.
the norm of `weight @ v`.

Every `every_n_steps` optimiser steps (and at step 0 and the last step) the norms of the top
`top` directions and of `num_bottom` directions drawn (seeded, without replacement) from the
inclusive index range `bottom_range` go to eigenspace.csv and to the logger as
`eigenspace/norm_<direction>`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader

from kdrun.callbacks.snapshots import untouched_rng
from kdrun.errors import ConfigError
from kdrun.config.checks import check_flag, check_keys, check_list, check_mapping, check_seed, check_whole_number

EIGENSPACE_ARCHITECTURES = ("random_features", "mlp")
CSV_COLUMNS = ("step", "direction", "kind", "eigenvalue", "norm")


def analysed_layer(student: nn.Module, architecture: str) -> tuple[nn.Module, str]:
    """(the map from input to z(x), the name of the weight W in the student)."""
    if architecture == "random_features":
        return student.features, "head.weight"
    if architecture == "mlp":
        first = student.features[1] if len(student.features) > 1 else None
        if not isinstance(first, nn.Linear):
            raise ConfigError("analysis.eigenspace needs the mlp's first hidden layer, but student.model.depth=0 "
                              "has none; allowed: depth >= 1")
        return nn.Flatten(), "features.1.weight"
    raise ConfigError(f"analysis.eigenspace.enabled=true with student={architecture}; paper 000's eigenspace "
                      f"analysis is defined for: {', '.join(EIGENSPACE_ARCHITECTURES)} (or set enabled=false)")


EIGENSPACE_DEFAULTS = {"enabled": False, "top": 5, "bottom_range": [20, 60], "num_bottom": 5, "seed": 0,
                       "every_n_steps": 10, "center": False}


def check_eigenspace_config(eigenspace) -> dict:
    """The `analysis.eigenspace` block with its defaults filled in, checked whether or not it is enabled
    (what the data's dimension decides is checked when the directions are chosen)."""
    key = "analysis.eigenspace"
    eigenspace = check_mapping(eigenspace, key, allow_none=True) or {}
    check_keys(eigenspace, key, tuple(EIGENSPACE_DEFAULTS))
    options = {**EIGENSPACE_DEFAULTS, **eigenspace}
    check_flag(options["enabled"], f"{key}.enabled", meaning="student=mlp or random_features")
    check_flag(options["center"], f"{key}.center", meaning="false: uncentred second moment, true: covariance")
    check_whole_number(options["top"], f"{key}.top", minimum=1, meaning="directions 0..top-1")
    check_whole_number(options["num_bottom"], f"{key}.num_bottom", minimum=1,
                       meaning="directions drawn from bottom_range")
    check_whole_number(options["every_n_steps"], f"{key}.every_n_steps", minimum=1)
    check_seed(options["seed"], f"{key}.seed", meaning="draws the bottom directions")
    bottom_range = check_list(options["bottom_range"], f"{key}.bottom_range", length=2,
                              meaning="[low, high], inclusive direction indices")
    for index, value in enumerate(bottom_range):
        check_whole_number(value, f"{key}.bottom_range[{index}]", minimum=0, meaning="a direction index")
    if bottom_range[0] > bottom_range[1]:
        raise ConfigError(f"{key}.bottom_range={bottom_range} has low > high; allowed: [low, high] with low <= high")
    options["bottom_range"] = bottom_range
    return options


def chosen_directions(dimension: int, top: int, bottom_range, num_bottom: int, seed: int) -> list[tuple[int, str]]:
    """[(direction index, 'top' | 'bottom')], checked against the number of directions
    (the options themselves: check_eigenspace_config)."""
    key = "analysis.eigenspace"
    low, high = bottom_range
    if not 0 <= low <= high < dimension:
        raise ConfigError(f"{key}.bottom_range=[{low}, {high}] must be direction indices with "
                          f"0 <= low <= high <= {dimension - 1} (the data has {dimension} directions)")
    if top > dimension:
        raise ConfigError(f"{key}.top={top} exceeds the {dimension} directions of the data; allowed: 1..{dimension}")
    if num_bottom > high - low + 1:
        raise ConfigError(f"{key}.num_bottom={num_bottom} exceeds the {high - low + 1} directions of "
                          f"bottom_range=[{low}, {high}]")
    bottom = np.random.default_rng(seed).choice(np.arange(low, high + 1), size=num_bottom, replace=False)
    return [(i, "top") for i in range(top)] + [(int(i), "bottom") for i in sorted(bottom)]


@torch.inference_mode()
def second_moment_eigen(feature_map: nn.Module, loader: DataLoader, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues descending, eigenvectors as columns) of the data's second moment, in float64."""
    device = next(iter([*feature_map.parameters(), *feature_map.buffers()]), torch.zeros(())).device
    moment, total, count = None, None, 0
    for x, _, _ in loader:  # accumulated per batch: Φ (n x features) need not fit in memory
        z = feature_map(x.to(device)).flatten(1).double().cpu()
        moment = z.T @ z if moment is None else moment + z.T @ z
        total = z.sum(0) if total is None else total + z.sum(0)
        count += len(z)
    moment /= count
    if center:
        mean = total / count
        moment -= torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh(moment)
    return values.flip(0), vectors.flip(1)


class EigenspaceTrajectory(Callback):
    def __init__(self, student: nn.Module, architecture: str, loader: DataLoader, output_dir: Path,
                 total_steps: int, top: int, bottom_range, num_bottom: int, every_n_steps: int, seed: int,
                 center: bool = False):
        self.feature_map, self.weight_name = analysed_layer(student, architecture)
        dimension = student.get_parameter(self.weight_name).shape[1]
        self.directions = chosen_directions(dimension, top, bottom_range, num_bottom, seed)
        self.loader, self.path, self.total_steps = loader, Path(output_dir) / "eigenspace.csv", total_steps
        self.every_n_steps, self.center = every_n_steps, center
        self.recorded: set[int] = set()

    def on_fit_start(self, trainer, pl_module):
        with untouched_rng(pl_module.device):
            values, vectors = second_moment_eigen(self.feature_map, self.loader, self.center)
        chosen = [index for index, _ in self.directions]
        self.eigenvalues = values[chosen].tolist()
        self.vectors = vectors[:, chosen].float()  # (dimension, chosen), float like the weights
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as handle:
            csv.writer(handle).writerow(CSV_COLUMNS)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self._record(0, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step == self.total_steps:
            self._record(step, pl_module)

    @torch.no_grad()
    def _record(self, step: int, pl_module) -> None:
        if step in self.recorded:  # gradient accumulation: several batches share a step
            return
        self.recorded.add(step)
        weight = pl_module.student.get_parameter(self.weight_name).detach()
        norms = torch.linalg.vector_norm(weight @ self.vectors.to(weight.device), dim=0).cpu().tolist()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            for (direction, kind), value, norm in zip(self.directions, self.eigenvalues, norms):
                writer.writerow([step, direction, kind, value, norm])
                pl_module.log(f"eigenspace/norm_{direction}", norm, on_step=True, on_epoch=False, batch_size=1)
