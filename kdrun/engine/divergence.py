"""Divergence detection for a training stage, evaluated on the device and read at sync points.

A run whose loss blows up must fail, not end "completed" at chance accuracy. Two signs count:

- the loss is not finite (NaN or infinity);
- the smoothed loss (an exponential moving average over about `smoothing_steps` steps) exceeds
  `factor` times its own running minimum, the minimum taken no lower than `floor` (so a loss
  that has converged to ~0 may still fluctuate by `factor * floor` in absolute terms).

The moving average and its minimum restart whenever the loss schedule changes phase, and the
growth check pauses inside a blend window, because the objective itself changes there (a late
switch from one-hot CE to T²-scaled KD multiplies the loss by up to T² without anything going
wrong). The first bad step, its loss and the limit it crossed stay on the device; `check()`,
called at the module's sync points only, reads them: no per-step host synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kdrun.config.checks import check_flag, check_keys, check_mapping, check_number, check_whole_number
from kdrun.errors import TrainingDiverged

@dataclass(frozen=True)
class DivergenceSettings:
    """The `divergence:` config block."""

    enabled: bool = True
    factor: float = 100.0
    floor: float = 0.1
    smoothing_steps: int = 10

    @classmethod
    def from_config(cls, cfg) -> "DivergenceSettings":
        options = dict(check_mapping(cfg, "divergence", allow_none=True) or {})
        check_keys(options, "divergence", list(cls.__dataclass_fields__))
        settings = cls(**options)
        check_flag(settings.enabled, "divergence.enabled", meaning="the growth check; non-finite losses always fail")
        check_number(settings.factor, "divergence.factor", low=1, low_inclusive=False,
                     meaning="how far the smoothed loss may grow past its running minimum")
        check_number(settings.floor, "divergence.floor", low=0, low_inclusive=False,
                     meaning="the running minimum is taken no lower than this")
        check_whole_number(settings.smoothing_steps, "divergence.smoothing_steps", minimum=1)
        return settings


class DivergenceGuard(nn.Module):
    """Device-side record of the first step at which a stage's loss diverged (a dozen tiny ops a step).

    `members=K` keeps K records at once, one per student of a pack (kdrun.engine.packed_module): the same
    rule element-wise, each member with its own loss-schedule phase."""

    def __init__(self, stage: str, settings: DivergenceSettings, sync_every: int, members: int | None = None):
        super().__init__()
        self.stage, self.settings, self.sync_every = stage, settings, sync_every
        self.members = members
        shape = () if members is None else (members,)
        self.weight = 1.0 / settings.smoothing_steps  # of the newest loss in the moving average
        for name, dtype, value in (("first_step", torch.long, -1), ("value", torch.float32, 0.0),
                                   ("limit", torch.float32, float("nan")), ("ema", torch.float32, 0.0),
                                   ("ema_min", torch.float32, 0.0)):
            self.register_buffer(name, torch.full(shape, value, dtype=dtype), persistent=False)
        count = members or 1
        self._phase: list[int | None] = [None] * count
        self._seen = [0] * count  # steps observed in each member's current phase (host-side, no sync)
        self._masks: dict[tuple, torch.Tensor] = {}  # (tracked, restarting) patterns on the device, made once each
        self._reported: set[int] = set()

    def _mask(self, pattern: tuple[bool, ...]) -> torch.Tensor:
        key = (pattern, self.ema.device)
        if key not in self._masks:  # phases change rarely: a handful of patterns per stage
            self._masks[key] = torch.tensor(pattern, device=self.ema.device).reshape(self.ema.shape)
        return self._masks[key]

    def observe(self, step: int, loss: torch.Tensor, phase) -> None:
        """Record this step's loss; `phase` is the schedule's pure phase, None inside a blend window (with
        members: (K,) losses and a list of K phases)."""
        loss = loss.detach().to(self.ema.dtype).reshape(self.ema.shape)  # float64 under trainer.precision=64-true
        phases = list(phase) if self.members is not None else [phase]
        tracked, restarting = [], []
        for k, member_phase in enumerate(phases):
            if member_phase != self._phase[k]:
                self._phase[k], self._seen[k] = member_phase, 0
            on = self.settings.enabled and member_phase is not None
            tracked.append(on)
            restarting.append(on and self._seen[k] == 0)
            self._seen[k] += on
        finite = torch.isfinite(loss)
        if any(tracked):
            track, restart = self._mask(tuple(tracked)), self._mask(tuple(restarting))
            ema = torch.where(restart, loss, torch.lerp(self.ema, loss, self.weight))
            torch.where(track, ema, self.ema, out=self.ema)
            ema_min = torch.where(restart, loss, torch.minimum(self.ema_min, self.ema))
            torch.where(track, ema_min, self.ema_min, out=self.ema_min)
            limit = self.ema_min.clamp_min(self.settings.floor).mul_(self.settings.factor)
            bad = torch.where(track, ~(finite & (self.ema <= limit)), ~finite)
            new = bad & (self.first_step < 0)
            torch.where(new & track, limit, self.limit, out=self.limit)
        else:
            new = ~finite & (self.first_step < 0)
        self.first_step.masked_fill_(new, step)
        torch.where(new, loss, self.value, out=self.value)

    def check(self) -> None:
        """Raise TrainingDiverged if a bad step was recorded (reads the device: call at sync points)."""
        failures = self.failures()
        if failures:
            raise failures[0]

    def failures(self) -> dict[int, TrainingDiverged]:
        """{member: why it diverged} for the members newly found diverged (one device read; 0 without members)."""
        steps = self.first_step.reshape(-1).tolist()
        new = [k for k, step in enumerate(steps) if step >= 0 and k not in self._reported]
        if not new:
            return {}
        values, limits = self.value.reshape(-1).tolist(), self.limit.reshape(-1).tolist()
        self._reported.update(new)
        return {k: self._error(steps[k], values[k], limits[k]) for k in new}

    def _error(self, step: int, value: float, limit: float) -> TrainingDiverged:
        if math.isfinite(value):
            reason = (f"its smoothed loss exceeded {self.settings.factor:g} x its running minimum "
                      f"(limit {limit:.4g}; divergence.factor, divergence.floor)")
        else:
            reason = "the loss became non-finite"
        return TrainingDiverged(
            self.stage, step, f"{value:.4g}", f"{reason}; checked every {self.sync_every} steps",
            f"Lower {self.stage}.optimizer.lr, clip gradients ({self.stage}.gradient_clip_val), or check the "
            f"inputs; divergence.enabled=false turns the growth check off")


def overflowed(error: BaseException) -> bool:
    """An optimiser step whose update does not fit the parameters' dtype (e.g. Adam with lr=1e38)."""
    return isinstance(error, RuntimeError) and "overflow" in str(error)
