"""A training stage: the teacher's and the student's are the same module, Trainer and data, and differ
only in what `Stage` says (the teacher trains with the label loss and no teacher)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch import nn

from kdrun.data.datamodule import DataSplits, StageDataModule
from kdrun.engine.divergence import DivergenceSettings
from kdrun.engine.loggers import build_logger
from kdrun.engine.loss_schedule import LossSchedule
from kdrun.engine.module import DistillationModule
from kdrun.engine.recipes import Budget, StepPlan
from kdrun.engine.resume import Resume, StageOwner
from kdrun.engine.trainer import build_trainer, fit


@dataclass
class Stage:
    """What one stage trains, with which objective, for how long, in which order, and from where."""

    name: str  # "teacher" or "student"
    model: nn.Module
    schedule: LossSchedule
    recipe: object  # the stage's config node: optimizer, lr_schedule (cfg.teacher / cfg.student)
    budget: Budget
    lr_plan: StepPlan
    order_seed: int  # batch order, dropout and other training randomness
    owner: StageOwner  # what its checkpoints belong to
    resume: Resume = field(default_factory=Resume)
    teacher: nn.Module | None = None
    teacher_outputs: dict[str, torch.Tensor] | None = None  # cached logits by split
    teacher_precision: str = "float32"  # its online forward pass (kdrun.engine.teacher_forward)
    view_cache: object = None  # the teacher's outputs per (sample, view) (kdrun.teachers.view_cache)
    view_stream: object = None  # the views the stage's loader draws (kdrun.data.views.ViewStream)
    callbacks: tuple = ()


@dataclass
class StageResult:
    module: DistillationModule
    logger: object  # the stage's Lightning logger (False for none), still open
    metrics: dict[str, float]  # the last epoch's metrics (val/* are what sweepers may select on)
    rank: int  # this process's global rank (0 writes the outputs)
    record: dict = field(default_factory=dict)  # how it trained, for metrics.json (a packed member: its pack)


def train_stage(cfg, splits: DataSplits, stage: Stage, output_dir: Path, group: str, fast_path: bool,
                divergence: DivergenceSettings) -> StageResult:
    """Fit `stage.model` (resuming from `stage.resume`); the caller closes the returned logger."""
    logger = build_logger(cfg, stage.name, output_dir, group, stage.resume.epochs_done)
    module = DistillationModule(stage.model, stage.teacher, stage.schedule, stage.recipe.optimizer,
                                splits.num_classes, stage.name, input_shape=splits.source.input_shape,
                                lr_schedule=stage.recipe.lr_schedule, lr_plan=stage.lr_plan,
                                teacher_outputs=stage.teacher_outputs, divergence=divergence,
                                owner=stage.owner.record(), teacher_precision=stage.teacher_precision,
                                view_cache=stage.view_cache, view_stream=stage.view_stream)
    L.seed_everything(stage.order_seed, workers=True, verbose=False)
    trainer = build_trainer(cfg, stage.name, stage.budget, output_dir, logger, stage.callbacks)
    datamodule = StageDataModule(splits, stage.name, stage.order_seed, stage.budget.batch_size,
                                 stage.budget.drop_last, fast_path)
    fit(trainer, module, stage.resume.path, datamodule)
    if module.last_validated_step != module.global_step:  # val_every_n_epochs skipped the last epoch
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    return StageResult(module, logger, metrics, trainer.global_rank)
