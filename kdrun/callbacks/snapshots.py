"""Student logits at chosen points of training (paper 000 M6: the scatter's evolution).

`snapshots/step_<n>.npz` holds `<split>_student_logits` after n optimiser steps (n = 0: the
initial weights). What does not change during training is saved once, in
`snapshots/samples.npz`: `<split>_index`, `<split>_label` and `<split>_teacher_logits` (the
teacher is frozen), row for row as in every step file.

A snapshot must not change the run it observes: the student goes to eval mode and back, and
the random number generators are restored afterwards (iterating a DataLoader draws a seed from
the global generator), so a run with snapshots ends with the same weights as one without.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from kdrun.errors import ConfigError
from kdrun.evaluation.evaluate import collect_logits
from kdrun.config.checks import is_number

SNAPSHOT_SPLITS = ("train", "val", "test")


@contextlib.contextmanager
def untouched_rng(device: torch.device):
    """Restores torch's (CPU and the device's), numpy's and Python's generators on exit."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def snapshot_steps(at, total_steps: int | None, key: str = "analysis.snapshots.at") -> list[int]:
    """The optimiser steps of `at`: ints are steps in [0, total_steps], floats fractions in [0, 1].
    With `total_steps` None (not known before the data) only what the config alone decides is checked."""
    last = "the last step" if total_steps is None else total_steps
    steps = set()
    for value in at:
        if not is_number(value):
            raise ConfigError(f"{key}: {value!r} must be a step (int in [0, {last}]) "
                              f"or a fraction of training (float in [0, 1])")
        if isinstance(value, float):
            if not 0.0 <= value <= 1.0:  # nan and inf fail too
                raise ConfigError(f"{key}: {value} is outside the training run; a float is a fraction in [0, 1] "
                                  f"(an int is a step in [0, {last}])")
            steps.add(round(value * total_steps) if total_steps is not None else value)
        else:
            if value < 0 or (total_steps is not None and value > total_steps):
                raise ConfigError(f"{key}: {value} is outside the training run: steps 0..{last} "
                                  f"(or give a fraction in [0, 1] as a float)")
            steps.add(int(value))
    return sorted(steps)


class LogitSnapshots(Callback):
    def __init__(self, steps: list[int], loaders: dict[str, DataLoader], directory: Path):
        self.steps, self.loaders, self.directory = set(steps), loaders, Path(directory)
        self.taken: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self._take(0, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._take(trainer.global_step, pl_module)

    def _take(self, step: int, pl_module) -> None:
        # with gradient accumulation several batches share a step: one snapshot each
        if step not in self.steps or step in self.taken:
            return
        self.taken.add(step)
        self.directory.mkdir(parents=True, exist_ok=True)
        first = len(self.taken) == 1
        samples, logits = {}, {"step": np.asarray(step)}
        with untouched_rng(pl_module.device):
            for split, loader in self.loaders.items():
                index, labels, student_logits = collect_logits(pl_module.student, loader)
                logits[f"{split}_student_logits"] = student_logits.numpy()
                if first:
                    _, _, teacher_logits = collect_logits(pl_module.teacher, loader, split)
                    samples.update({f"{split}_index": index, f"{split}_label": labels.numpy(),
                                    f"{split}_teacher_logits": teacher_logits.numpy()})
        np.savez_compressed(self.directory / f"step_{step}.npz", **logits)
        if first:
            np.savez_compressed(self.directory / "samples.npz", **samples)
