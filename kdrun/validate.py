"""Checks of a composed config that need no data and no training.

Everything here runs before anything is written: a bad value stops the run with a message
that names the key, the value and what is allowed. Checks that need the data (kappa against
the pool size, switch steps against the number of training steps) run in the pipeline right
after the splits are built, still before any training.
"""

from __future__ import annotations

from pathlib import Path

from kdrun.errors import ConfigError
from kdrun.losses import build_loss
from kdrun.schedule import phase_specs
from kdrun.config_tree import group_options


def validate_config(cfg) -> None:
    if "model" in cfg:
        raise ConfigError(
            f"model={cfg.model.get('name', cfg.model)} is not a role; choose the architectures with "
            "teacher=NAME and student=NAME (both select from configs/model/)"
        )
    for stage in ("teacher", "student"):
        if cfg[stage].get("max_steps") is None:
            _check_positive_int(cfg[stage].epochs, f"{stage}.epochs")
    _check_positive_int(cfg.data.batch_size, "data.batch_size")
    kappa = cfg.data.kappa
    if cfg.data.student_size is None and (kappa is None or isinstance(kappa, bool) or float(kappa) <= 0):
        raise ConfigError(f"data.kappa={kappa} must be a number > 0 (the student trains on M = round(kappa * N) samples)")
    _check_classes(cfg)
    for spec in phase_specs(cfg.schedule, cfg.loss):
        build_loss(spec.loss, where=spec.where)  # checks alpha, temperature, unknown options
        if isinstance(spec.until, float) and not 0.0 <= spec.until <= 1.0:
            raise ConfigError(f"{spec.where}={spec.until} is outside the training run: a float is a fraction in [0, 1]")
    checkpoint = cfg.teacher.checkpoint
    if checkpoint is not None and cfg.teacher.get("oracle"):
        raise ConfigError(f"teacher.checkpoint={checkpoint!r} and teacher.oracle={cfg.teacher.oracle} both choose the "
                          f"teacher; allowed: one of them")
    if checkpoint is not None and not Path(str(checkpoint)).is_file():
        raise ConfigError(f"teacher.checkpoint={checkpoint!r}: no such file; give the path of saved teacher weights")
    from kdrun.evaluate import EvaluationOptions  # checked now, used only after training

    EvaluationOptions.from_config(cfg.get("evaluation"))
    if cfg.logger.name not in group_options("logger"):
        raise ConfigError(f"logger.name={cfg.logger.name!r}; allowed: {', '.join(group_options('logger'))}")


def _check_classes(cfg) -> None:
    data_classes = cfg.data.num_classes
    teacher_classes, student_classes = cfg.teacher.model.num_classes, cfg.student.model.num_classes
    if teacher_classes != student_classes:
        raise ConfigError(
            f"teacher.model.num_classes={teacher_classes} differs from student.model.num_classes={student_classes}; "
            f"both must equal the data's {data_classes} classes"
        )
    if teacher_classes != data_classes:
        raise ConfigError(
            f"teacher and student have {teacher_classes} classes but data.source={cfg.data.source!r} has "
            f"{data_classes}; allowed: {data_classes}"
        )


def _check_positive_int(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a whole number >= 1")
