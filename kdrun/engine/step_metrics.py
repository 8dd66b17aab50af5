"""Every training step's scalars, written to the loggers in blocks.

Lightning's `self.log` costs about a millisecond of Python per call and, with a logger writing
every step, turns each logged tensor into a float at once: a host synchronisation per scalar per
step. On small models that is more than the step itself. The module instead records each step's
tensors where they were computed (one `stack` per step) and the buffer writes the block of steps
with one device-to-host copy, at the module's sync points (every few dozen steps and at epoch
ends). Every step still gets its own row, with the same step numbers Lightning would use.
"""

from __future__ import annotations

import torch


class StepMetricBuffer:
    def __init__(self):
        self._pending: list[tuple[int, int, tuple[str, ...], torch.Tensor, dict[str, float]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, step: int, epoch: int, tensors: dict[str, torch.Tensor], numbers: dict[str, float]) -> None:
        """One step's values: `tensors` stay on their device until the next flush, `numbers` are Python floats."""
        names = tuple(tensors)
        stacked = torch.stack([value.detach().float().reshape(()) for value in tensors.values()]) if names else None
        self._pending.append((step, epoch, names, stacked, numbers))

    def flush(self, loggers) -> None:
        """Write every pending step to `loggers` (one row per step) and empty the buffer."""
        pending, self._pending = self._pending, []
        if not pending or not loggers:
            return
        blocks = [stacked for _, _, _, stacked, _ in pending if stacked is not None]
        values = torch.cat(blocks).tolist() if blocks else []  # the one device-to-host copy
        position = 0
        for step, epoch, names, _, numbers in pending:
            row = dict(zip(names, values[position:position + len(names)]))
            position += len(names)
            row.update(numbers)
            row["epoch"] = epoch
            for logger in loggers:
                logger.log_metrics(row, step=step)
