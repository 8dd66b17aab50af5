"""Errors that kdrun reports to the user instead of a stack of framework frames.

`ConfigError` (exit code 2) means the configuration cannot run as given; nothing was trained.
`RunError` (exit code 1) means a run that started could not finish for a reason the message
names (the training diverged, the disk filled up); the run directory's status.json records it.
Both print one line; every other exception is a bug or an environment failure and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the bad value and what is allowed."""


class RunError(RuntimeError):
    """A run stopped for a reason its message explains fully; no traceback is needed."""


class TrainingDiverged(RunError):
    """A stage's loss became non-finite, overflowed, or grew far past its own running minimum."""

    def __init__(self, stage: str, step: int, value: float | str, reason: str, advice: str):
        self.stage, self.step, self.value, self.reason, self.advice = stage, step, value, reason, advice
        super().__init__(f"{stage} training diverged at step {step}: {reason} (loss {value}). {advice}")


class DiskFull(RunError):
    """A write failed because the filesystem holding `directory` has no space left."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        super().__init__(f"no space left on {self.directory}: free space there (df -h {self.directory}) "
                         f"or point the output (paths.output_root) or teacher.store elsewhere; "
                         f"nothing half-written was left behind")
