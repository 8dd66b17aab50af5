"""A stage's training recipe: the optimiser and the learning-rate schedule, stepped per optimisation step.

The recipe lives in configs/recipe/ and is chosen per stage (`teacher_recipe=`, `student_recipe=`).
Learning-rate schedules are a pure function of the step (`lr_factor`), so a test can check any
step against the closed form and the same schedule holds for epoch and step budgets:

- warm-up: for `warmup_epochs` (or `warmup_steps`) W the factor rises linearly, (step + 1) / W,
  reaching 1 at step W - 1 (the papers say "linear warm-up" without the first value);
- then `constant` 1; `step`: times `gamma` at each milestone epoch passed (paper 000: x0.1 at
  200/300/400; paper 002's CIFAR-100: x0.2 at 60/120/160); `cosine`: from 1 down to
  `final_lr_factor` over the remaining steps (paper 002's CIFAR-10 after warm-up, paper 003
  without warm-up); `linear`: straight down to `final_lr_factor` (paper 000's text recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdrun.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
# The keys of a recipe file (configs/recipe/*.yaml): all of them determine a trained teacher.
RECIPE_KEYS = ("epochs", "max_steps", "batch_size", "drop_last", "gradient_clip_val", "optimizer", "lr_schedule")
LR_SCHEDULES = ("constant", "step", "cosine", "linear")


@dataclass(frozen=True)
class Budget:
    """How long a stage trains: its batches, and its length in epochs or in steps."""

    batch_size: int
    drop_last: bool
    steps_per_epoch: int
    total_steps: int
    max_epochs: int  # -1 when the budget is in steps
    max_steps: int  # -1 when the budget is in epochs


def stage_budget(stage_cfg, splits, stage: str) -> Budget:
    """The budget of `stage` ("teacher" or "student") from its recipe, checked before any training."""
    batch_size = stage_cfg.get("batch_size")
    batch_size = splits.batch_size if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{stage}.batch_size={batch_size!r} must be a whole number >= 1 (or null: data.batch_size)")
    drop_last = stage_cfg.get("drop_last", False)
    if not isinstance(drop_last, bool):
        raise ConfigError(f"{stage}.drop_last={drop_last!r} must be true or false")
    steps_per_epoch = splits.steps_per_epoch(stage, batch_size, drop_last)
    max_steps = stage_cfg.get("max_steps")
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"{stage}.max_steps={max_steps!r} must be a whole number >= 1 (or null: use epochs)")
        return Budget(batch_size, drop_last, steps_per_epoch, max_steps, -1, max_steps)
    epochs = stage_cfg.get("epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{stage}.epochs={epochs!r} must be a whole number >= 1 (or set {stage}.max_steps)")
    return Budget(batch_size, drop_last, steps_per_epoch, epochs * steps_per_epoch, epochs, -1)


@dataclass(frozen=True)
class StepPlan:
    """Where the schedule's landmarks fall in optimisation steps, for one stage."""

    total_steps: int
    warmup_steps: int
    milestone_steps: tuple[int, ...]


def plan_steps(schedule_cfg, steps_per_epoch: int, total_steps: int, where: str) -> StepPlan:
    """Convert a schedule's epoch (or step) landmarks to steps, checking them against the budget."""
    name = schedule_cfg.get("name", "constant")
    if name not in LR_SCHEDULES:
        raise ConfigError(f"{where}.lr_schedule.name={name!r}; allowed: {', '.join(LR_SCHEDULES)}")
    warmup_steps = schedule_cfg.get("warmup_steps")
    if warmup_steps is None:
        warmup_epochs = schedule_cfg.get("warmup_epochs", 0) or 0
        if not isinstance(warmup_epochs, (int, float)) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
            raise ConfigError(f"{where}.lr_schedule.warmup_epochs={warmup_epochs!r} must be a number >= 0")
        warmup_steps = round(warmup_epochs * steps_per_epoch)
    elif isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError(f"{where}.lr_schedule.warmup_steps={warmup_steps!r} must be a whole number >= 0")
    if warmup_steps > total_steps:
        raise ConfigError(f"{where}.lr_schedule: warm-up of {warmup_steps} steps is longer than the training run "
                          f"({total_steps} steps); allowed: at most {total_steps}")
    milestones = []
    if name == "step":
        for epoch in schedule_cfg.get("milestones") or []:
            if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch <= 0:
                raise ConfigError(f"{where}.lr_schedule.milestones: {epoch!r} must be an epoch > 0")
            milestones.append(round(epoch * steps_per_epoch))
        if milestones != sorted(milestones):
            raise ConfigError(f"{where}.lr_schedule.milestones={list(schedule_cfg.milestones)} must increase")
    return StepPlan(total_steps, warmup_steps, tuple(milestones))


def lr_factor(step: int, schedule_cfg, plan: StepPlan) -> float:
    """The learning rate at optimisation step `step` (0-based) as a multiple of the peak rate."""
    if step < plan.warmup_steps:
        return (step + 1) / plan.warmup_steps
    name = schedule_cfg.get("name", "constant")
    final = float(schedule_cfg.get("final_lr_factor", 0.0) or 0.0)
    decay_steps = max(1, plan.total_steps - plan.warmup_steps)
    progress = min(1.0, (step - plan.warmup_steps) / decay_steps)
    if name == "step":
        passed = sum(step >= milestone for milestone in plan.milestone_steps)
        return float(schedule_cfg.get("gamma", 0.1)) ** passed
    if name == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "linear":
        return 1.0 - (1.0 - final) * progress
    return 1.0


def parameter_groups(model_parameters, decay_norm_and_bias: bool, weight_decay: float) -> list[dict]:
    """One group, or two when normalisation weights and biases (the 1-D tensors) are kept out of
    weight decay: decaying them only pulls scales and offsets toward 0 (the usual exclusion)."""
    params = [p for p in model_parameters if p.requires_grad]
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(cfg, parameters, where: str) -> torch.optim.Optimizer:
    name = cfg.get("name")
    weight_decay = float(cfg.get("weight_decay", 0.0) or 0.0)
    if cfg.get("lr") is None or float(cfg.lr) <= 0:
        raise ConfigError(f"{where}.optimizer.lr={cfg.get('lr')!r} must be > 0")
    if weight_decay < 0:
        raise ConfigError(f"{where}.optimizer.weight_decay={weight_decay} must be >= 0")
    groups = parameter_groups(parameters, bool(cfg.get("decay_norm_and_bias", True)), weight_decay)
    if name == "sgd":
        momentum, nesterov = float(cfg.get("momentum", 0.0) or 0.0), bool(cfg.get("nesterov", False))
        if nesterov and momentum <= 0:
            raise ConfigError(f"{where}.optimizer.nesterov=true needs momentum > 0 (got {momentum})")
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, nesterov=nesterov)
    if name in ("adam", "adamw"):
        betas = tuple(cfg.get("betas") or (0.9, 0.999))
        optimizer = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return optimizer(groups, lr=cfg.lr, betas=betas)
    raise ConfigError(f"{where}.optimizer.name={name!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule_cfg, plan: StepPlan):
    """A LambdaLR stepped after every optimisation step (Lightning's interval "step")."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule_cfg, plan))
