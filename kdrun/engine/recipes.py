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
from kdrun.config.checks import (check_choice, check_flag, check_fraction, check_keys, check_list, check_mapping,
                                check_number, check_whole_number)

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


def check_budget_config(stage_cfg, stage: str) -> None:
    """A stage's budget keys, from the config alone: epochs or max_steps, batch_size, drop_last."""
    max_steps = stage_cfg.get("max_steps")
    check_whole_number(max_steps, f"{stage}.max_steps", minimum=1, allow_none=True, meaning="null: use epochs")
    if max_steps is None:
        check_whole_number(stage_cfg.get("epochs"), f"{stage}.epochs", minimum=1,
                           meaning=f"or set {stage}.max_steps")
    check_whole_number(stage_cfg.get("batch_size"), f"{stage}.batch_size", minimum=1, allow_none=True,
                       meaning="null: data.batch_size")
    check_flag(stage_cfg.get("drop_last", False), f"{stage}.drop_last",
               meaning="drop the last, partial batch of every epoch")
    check_whole_number(stage_cfg.get("val_every_n_epochs", 1), f"{stage}.val_every_n_epochs", minimum=1,
                       meaning="validate every n epochs and after the last one")


def check_recipe(stage_cfg, stage: str) -> None:
    """Everything of a stage's recipe that the config alone decides (its steps need the data: plan_steps)."""
    check_budget_config(stage_cfg, stage)
    check_gradient_clip(stage_cfg.get("gradient_clip_val"), f"{stage}.gradient_clip_val")
    check_optimizer_config(stage_cfg.get("optimizer"), stage)
    check_lr_schedule_config(stage_cfg.get("lr_schedule"), stage)


def check_gradient_clip(value, key: str):
    return check_number(value, key, low=0, low_inclusive=False, allow_none=True,
                        meaning="the gradient norm is clipped to it; null: no clipping")


def stage_budget(stage_cfg, splits, stage: str) -> Budget:
    """The budget of `stage` ("teacher" or "student") from its checked recipe (check_recipe), against the data."""
    batch_size = stage_cfg.get("batch_size")
    batch_size = splits.batch_size if batch_size is None else batch_size
    drop_last = stage_cfg.get("drop_last", False)
    steps_per_epoch = splits.steps_per_epoch(stage, batch_size, drop_last)
    max_steps = stage_cfg.get("max_steps")
    if max_steps is not None:
        return Budget(batch_size, drop_last, steps_per_epoch, max_steps, -1, max_steps)
    epochs = stage_cfg.get("epochs")
    return Budget(batch_size, drop_last, steps_per_epoch, epochs * steps_per_epoch, epochs, -1)


@dataclass(frozen=True)
class StepPlan:
    """Where the schedule's landmarks fall in optimisation steps, for one stage."""

    total_steps: int
    warmup_steps: int
    milestone_steps: tuple[int, ...]


LR_SCHEDULE_KEYS = ("name", "warmup_epochs", "warmup_steps", "milestones", "gamma", "final_lr_factor")


def check_lr_schedule_config(schedule_cfg, where: str) -> None:
    """A stage's `lr_schedule` from the config alone (plan_steps then places it in steps)."""
    key = f"{where}.lr_schedule"
    schedule_cfg = check_mapping(schedule_cfg, key)
    check_keys(schedule_cfg, key, LR_SCHEDULE_KEYS)
    check_choice(schedule_cfg.get("name", "constant"), f"{key}.name", LR_SCHEDULES)
    check_number(schedule_cfg.get("warmup_epochs", 0), f"{key}.warmup_epochs", low=0, allow_none=True,
                 meaning="linear warm-up, in epochs")
    check_whole_number(schedule_cfg.get("warmup_steps"), f"{key}.warmup_steps", minimum=0, allow_none=True,
                       meaning="linear warm-up, in steps; null: use warmup_epochs")
    milestones = check_list(schedule_cfg.get("milestones"), f"{key}.milestones", allow_none=True,
                            meaning="epochs at which the rate is multiplied by gamma") or []
    for index, epoch in enumerate(milestones):
        check_number(epoch, f"{key}.milestones[{index}]", low=0, low_inclusive=False, meaning="an epoch")
    if milestones != sorted(milestones):
        raise ConfigError(f"{key}.milestones={milestones} must increase; allowed: epochs in increasing order")
    check_number(schedule_cfg.get("gamma", 0.1), f"{key}.gamma", low=0, low_inclusive=False,
                 meaning="the factor applied at each milestone")
    check_fraction(schedule_cfg.get("final_lr_factor", 0.0), f"{key}.final_lr_factor", allow_none=True,
                   meaning="the last rate as a fraction of the peak")


def plan_steps(schedule_cfg, steps_per_epoch: int, total_steps: int, where: str) -> StepPlan:
    """Convert a checked schedule's (check_lr_schedule_config) epoch or step landmarks to steps, checking
    them against the budget."""
    name = schedule_cfg.get("name", "constant")
    warmup_steps = schedule_cfg.get("warmup_steps")
    if warmup_steps is None:
        warmup_steps = round((schedule_cfg.get("warmup_epochs", 0) or 0) * steps_per_epoch)
    if warmup_steps > total_steps:
        raise ConfigError(f"{where}.lr_schedule: warm-up of {warmup_steps} steps is longer than the training run "
                          f"({total_steps} steps); allowed: at most {total_steps}")
    milestones = []
    if name == "step":
        milestones = [round(epoch * steps_per_epoch) for epoch in schedule_cfg.get("milestones") or []]
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


OPTIMIZER_KEYS = ("name", "lr", "weight_decay", "decay_norm_and_bias", "momentum", "nesterov", "betas")


def check_optimizer_config(cfg, where: str) -> None:
    """A stage's `optimizer` block, checked before anything trains (build_optimizer checks it again)."""
    key = f"{where}.optimizer"
    cfg = check_mapping(cfg, key)
    check_keys(cfg, key, OPTIMIZER_KEYS)
    check_choice(cfg.get("name"), f"{key}.name", OPTIMIZERS)
    check_number(cfg.get("lr"), f"{key}.lr", low=0, low_inclusive=False, meaning="the peak learning rate")
    check_number(cfg.get("weight_decay", 0.0), f"{key}.weight_decay", low=0, allow_none=True)
    check_flag(cfg.get("decay_norm_and_bias", True), f"{key}.decay_norm_and_bias",
               meaning="false keeps normalisation weights and biases out of weight decay")
    momentum = check_number(cfg.get("momentum", 0.0), f"{key}.momentum", 0, 1, high_inclusive=False,
                            allow_none=True, meaning="sgd") or 0.0
    nesterov = check_flag(cfg.get("nesterov", False), f"{key}.nesterov", meaning="sgd")
    betas = check_list(cfg.get("betas"), f"{key}.betas", length=2, allow_none=True, meaning="adam, adamw") or []
    for index, beta in enumerate(betas):
        check_number(beta, f"{key}.betas[{index}]", 0, 1, high_inclusive=False, meaning="adam, adamw")
    if cfg.get("name") == "sgd" and nesterov and momentum <= 0:
        raise ConfigError(f"{key}.nesterov=true needs momentum > 0 (got {momentum}); allowed: "
                          f"{key}.momentum > 0 or nesterov=false")


def build_optimizer(cfg, parameters, where: str) -> torch.optim.Optimizer:
    """The optimiser of a checked `optimizer` block (check_optimizer_config, run by the run's validation)."""
    name = cfg.get("name")
    weight_decay = float(cfg.get("weight_decay", 0.0) or 0.0)
    groups = parameter_groups(parameters, cfg.get("decay_norm_and_bias", True), weight_decay)
    if name == "sgd":
        momentum, nesterov = float(cfg.get("momentum", 0.0) or 0.0), cfg.get("nesterov", False)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, nesterov=nesterov)
    betas = tuple(cfg.get("betas") or (0.9, 0.999))
    optimizer = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return optimizer(groups, lr=cfg.lr, betas=betas)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule_cfg, plan: StepPlan):
    """A LambdaLR stepped after every optimisation step (Lightning's interval "step")."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule_cfg, plan))
