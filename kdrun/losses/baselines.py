"""Paper 004's baselines as config-selectable losses (formulas in `functional.baselines`).

Temperature scaling is the `kd` loss with alpha = 1 and t_squared = false
(configs/loss/temperature_scaling.yaml); Tf-KD_self is `kd` with a teacher of the student's
architecture (e.g. `teacher=resnet20 student=resnet20`). Neither needs a class here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import OmegaConf

from kdrun.config.tree import group_options, load_option
from kdrun.errors import ConfigError
from kdrun.config.checks import check_flag, check_number, check_unit_interval
from kdrun.losses.interface import DistillationLoss, LabelLoss, Loss
from kdrun.losses.registry import build_loss, register_loss
import kdrun.losses.functional as F


@register_loss("label_smoothed_teacher")
@dataclass
class LabelSmoothedTeacher(DistillationLoss):
    """KL((1 - delta) p_t + delta / C || p_s), both at temperature T (paper 004, Eq. 23-24)."""

    smoothing: float
    temperature: float

    def __post_init__(self):
        check_unit_interval(self.smoothing, "label_smoothed_teacher.smoothing")
        check_number(self.temperature, "label_smoothed_teacher.temperature", low=0, low_inclusive=False)

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.label_smoothed_teacher_kl(student_logits, teacher_logits, self.smoothing, self.temperature)
        return loss, {"soft": loss}


@register_loss("focal_kd")
@dataclass
class FocalDistillation(DistillationLoss):
    """-H(p_t) + sum_c p_t,c (1 - p_s,c)^gamma (-log p_s,c) (paper 004, Eq. 12; its Table 5 calls gamma tau)."""

    gamma: float

    def __post_init__(self):
        check_number(self.gamma, "focal_kd.gamma", low=0, meaning="0 is plain KL")

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.focal_distillation(student_logits, teacher_logits, self.gamma)
        return loss, {"soft": loss}


@register_loss("flooding")
@dataclass
class Flooding(Loss):
    """|L - b| + b around any base loss L (Ishida et al. 2020); `base` is a loss config or a loss name."""

    level: float
    base: Any

    def __post_init__(self):
        check_number(self.level, "flooding.level", low=0, meaning="the flood level b")
        # built once here, so a bad base config fails when the run starts, not at the first step
        self._base_loss = build_loss(self._base_config(), where="flooding.base")

    def _base_config(self) -> Mapping:
        if isinstance(self.base, str):
            # a bare name takes that loss's defaults, as a schedule phase does
            defaults = load_option("loss", self.base)
            if defaults is None:
                raise ConfigError(f"flooding.base={self.base!r} is not a loss config file in configs/loss; "
                                  f"allowed: {', '.join(group_options('loss'))}")
            return OmegaConf.to_container(defaults, resolve=True)
        if isinstance(self.base, Mapping):
            return dict(self.base)
        raise ConfigError(f"flooding.base={self.base!r} must be a loss config such as {{name: kd, alpha: 1.0, ...}} "
                          f"or a loss name")

    @property
    def needs_teacher(self) -> bool:
        return self._base_loss.needs_teacher

    @property
    def needs_labels(self) -> bool:
        return self._base_loss.needs_labels

    def __call__(self, student_logits, teacher_logits, batch):
        loss, parts = self._base_loss(student_logits, teacher_logits, batch)
        flooded = F.flooded(loss, self.level)
        return flooded, {"flooded": flooded, "base": loss, **{f"base_{k}": v for k, v in parts.items()}}


@register_loss("teacher_free_kd")
@dataclass
class TeacherFreeKD(LabelLoss):
    """Tf-KD_reg (Yuan et al. 2020): (1 - alpha) CE(y, p_s) + alpha [T^2] KL(p_v^T || p_s^T).

    p_v puts `correct_prob` on the true class and spreads the rest evenly over the others.
    """

    alpha: float
    temperature: float
    correct_prob: float
    t_squared: bool

    def __post_init__(self):
        check_unit_interval(self.alpha, "teacher_free_kd.alpha", "the teacher's weight in the mixture")
        check_number(self.temperature, "teacher_free_kd.temperature", low=0, low_inclusive=False)
        check_flag(self.t_squared, "teacher_free_kd.t_squared")
        # 0 or 1 would put log 0 into the virtual teacher
        check_number(self.correct_prob, "teacher_free_kd.correct_prob", 0, 1, False, False)

    def __call__(self, student_logits, teacher_logits, batch):
        label, soft = F.teacher_free_kd_terms(student_logits, batch[1], self.correct_prob, self.temperature,
                                              self.t_squared)
        return F.mix(label, soft, self.alpha), {"label": label, "soft": soft}
