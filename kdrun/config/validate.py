"""The run's validation pass: every setting that the config alone decides, checked once, before anything
is built or written.

A bad value stops the run with a message that names the key, the value and what is allowed (the
checks are built from kdrun.config.checks). What the checks had to parse or build is returned
(`CheckedConfig`: the seeds, the loss schedule's phases and their losses, the evaluation, analysis
and divergence settings), and the run uses those instead of reading the settings again. Settings
whose check needs the data (the data block and its source, kappa against the pool size, steps
against the budget, model options against the input shape) are checked once where the pipeline's
preflight first builds them, still before any training.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from kdrun.callbacks.analysis import AnalysisSettings, check_analysis_config
from kdrun.config.checks import (auto_switch, check_choice, check_flag, check_mapping, check_seed, check_string,
                                 check_whole_number)
from kdrun.config.seeds import Seeds, resolve_seeds
from kdrun.config.tree import group_options
from kdrun.engine.distributed import training_world_size
from kdrun.engine.divergence import DivergenceSettings
from kdrun.engine.loss_schedule import PhaseSpec, check_loss_options, phase_specs
from kdrun.engine.recipes import check_gradient_clip, check_recipe
from kdrun.errors import ConfigError
from kdrun.evaluation.evaluate import EvaluationOptions
from kdrun.losses import Loss, build_loss
from kdrun.engine.teacher_forward import check_teacher_precision
from kdrun.teachers.oracles import check_oracle_config
from kdrun.teachers.view_cache import check_view_cache_budget

STUDENT_INITS = ("own", "teacher")
DETERMINISTIC = (False, True, "warn")  # lightning.Trainer's `deterministic`


@dataclass(frozen=True)
class CheckedConfig:
    """What the validation pass parsed and built, for the run to use as is."""

    seeds: Seeds
    phases: list[PhaseSpec]
    losses: list[Loss]  # one per phase, built (and so checked) once
    evaluation: EvaluationOptions
    analysis: AnalysisSettings
    divergence: DivergenceSettings
    oracle_options: dict


def validate_config(cfg) -> CheckedConfig:
    if "model" in cfg:
        raise ConfigError(
            f"model={cfg.model.get('name', cfg.model)} is not a role; choose the architectures with "
            "teacher=NAME and student=NAME (both select from configs/model/)"
        )
    seeds = resolve_seeds(cfg.get("seed"), cfg.get("seeds"))  # seed, seeds.*
    oracle_options = _check_teacher(cfg)
    _check_student(cfg)
    _check_classes(cfg)
    check_loss_options(cfg.get("loss_options"))
    phases = phase_specs(cfg.schedule, cfg.loss, cfg.get("loss_options"))
    losses = [build_loss(spec.loss, where=spec.where) for spec in phases]  # alpha, temperature, unknown options
    for spec in phases:
        if isinstance(spec.until, float) and not 0.0 <= spec.until <= 1.0:
            raise ConfigError(f"{spec.where}={spec.until} is outside the training run: a float is a fraction in [0, 1]")
    check_trainer_values(cfg.trainer)  # what Lightning accepts silently; the rest when preflight builds a Trainer
    evaluation = EvaluationOptions.from_config(cfg.get("evaluation"))  # checked now, used only after training
    analysis = check_analysis_config(cfg.get("analysis"))
    divergence = DivergenceSettings.from_config(cfg.get("divergence"))
    check_objective(cfg.get("objective", "student/val/acc"))
    if cfg.logger.name not in group_options("logger"):
        raise ConfigError(f"logger.name={cfg.logger.name!r}; allowed: {', '.join(group_options('logger'))}")
    return CheckedConfig(seeds, phases, losses, evaluation, analysis, divergence, oracle_options)


def _check_teacher(cfg) -> dict:
    """The teacher's settings; its oracle options with their defaults filled in."""
    teacher = check_mapping(cfg.teacher, "teacher")
    oracle_options = check_oracle_config(teacher)
    check_teacher_precision(teacher.get("precision", "float32"))
    checkpoint, outputs = teacher.checkpoint, teacher.get("outputs")
    chosen = [f"teacher.{key}={value!r}" for key, value in (("checkpoint", checkpoint), ("oracle", teacher.get("oracle")),
                                                           ("outputs", outputs)) if value is not None]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} each choose the teacher; allowed: one of them")
    if checkpoint is not None and not (Path(str(checkpoint)).is_file() or Path(str(checkpoint)).is_dir()):
        raise ConfigError(f"teacher.checkpoint={checkpoint!r}: no such file; give the path of saved teacher weights "
                          f"(or, for a Hugging Face teacher, its save_pretrained directory)")
    check_string(teacher.get("store"), "teacher.store", meaning="the teacher store's directory")
    auto_switch(teacher, "cache_outputs", "teacher")
    check_view_cache_budget(teacher)
    if teacher.get("oracle") or checkpoint is not None or outputs is not None:
        # An imported or oracle teacher never trains: its seed and recipe are never read (the pipeline
        # plans only a teacher it trains), so they need not be valid, like any setting a run ignores.
        return oracle_options
    check_seed(teacher.get("seed"), "teacher.seed", meaning="the teacher's initial weights and data order")
    check_recipe(teacher, "teacher")
    return oracle_options


def _check_student(cfg) -> None:
    check_choice(cfg.student.get("init", "own"), "student.init", STUDENT_INITS,
                 meaning="own: from seeds.init; teacher: the teacher's initial weights")
    check_recipe(cfg.student, "student")


def _check_classes(cfg) -> None:
    data_classes = cfg.data.num_classes
    teacher_classes, student_classes = cfg.teacher.model.num_classes, cfg.student.model.num_classes
    if teacher_classes != student_classes:
        raise ConfigError(
            f"teacher.model.num_classes={teacher_classes} differs from student.model.num_classes={student_classes}; "
            f"both must equal the data's {data_classes} classes"
        )
    if data_classes is None:  # a text source fills in its vocabulary size; preflight compares it then
        return
    if teacher_classes != data_classes:
        raise ConfigError(
            f"teacher and student have {teacher_classes} classes but data.source={cfg.data.source!r} has "
            f"{data_classes}; allowed: {data_classes}"
        )


def check_objective(objective) -> None:
    """The shape of a metrics.json key (whether the run writes it is checked after the run: kdrun.cli)."""
    check_string(objective, "objective", meaning="a key of metrics.json such as student/val/acc")
    if "/" not in objective:
        raise ConfigError(f"objective={objective!r} is not a metrics key; allowed: a key of metrics.json such as "
                          f"student/val/acc or student/val/nll")


def check_trainer_values(trainer) -> None:
    """The `trainer` settings kdrun reads itself, and those Lightning would accept silently."""
    trainer = check_mapping(trainer, "trainer")
    training_world_size(trainer)  # trainer.devices, trainer.num_nodes
    check_gradient_clip(trainer.get("gradient_clip_val"), "trainer.gradient_clip_val")
    check_whole_number(trainer.get("log_every_n_steps", 50), "trainer.log_every_n_steps", minimum=1,
                       meaning="Lightning's own step logging interval")
    check_flag(trainer.get("enable_progress_bar", True), "trainer.enable_progress_bar")
    check_choice(trainer.get("deterministic", False), "trainer.deterministic", (*DETERMINISTIC, None),
                 meaning="warn: deterministic algorithms where they exist, a warning elsewhere")


def check_trainer_settings(trainer_kwargs: dict) -> None:
    """The arguments a stage's `lightning.Trainer` gets from the config (cfg.trainer resolved, the precision
    resolved, the stage's gradient_clip_val), checked by constructing a throwaway Trainer.

    Lightning's own error (an unknown accelerator, precision or argument, devices it cannot use) becomes
    a ConfigError naming the settings. The throwaway Trainer has no logger, checkpoint or progress bar,
    writes nothing, and leaves the process as it was: the torch flags and environment variables that
    constructing it sets (`deterministic`) are put back.
    """
    import lightning as L
    import torch

    kwargs = dict(trainer_kwargs)  # their values are checked by validate_config (check_trainer_values)
    for fixed in ("logger", "enable_checkpointing", "enable_progress_bar", "enable_model_summary"):
        kwargs.pop(fixed, None)
    shown = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    environment = dict(os.environ)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)  # "GPU available: ..." belongs to the real Trainer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(**kwargs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    except Exception as error:  # noqa: BLE001  anything Lightning refuses is a setting the run cannot use
        message = str(error).strip() or type(error).__name__
        raise ConfigError(f"trainer: {message} (settings: {shown}); allowed: values lightning.Trainer accepts "
                          f"(configs/trainer/default.yaml lists kdrun's)") from error
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
        os.environ.clear()
        os.environ.update(environment)
