"""Objectives that match the teacher's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.losses import check_alpha, check_flag, check_temperature, register_loss
from kdrun.losses import functional as F


@register_loss("kd")
@dataclass
class KnowledgeDistillation:
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(p_t^T || p_s^T); see `functional` for conventions."""

    alpha: float
    temperature: float
    t_squared: bool
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self):
        check_alpha(self.alpha, "kd")
        check_temperature(self.temperature, "kd")
        check_flag(self.t_squared, "t_squared", "kd")

    @property
    def needs_labels(self) -> bool:
        return self.alpha < 1

    def __call__(self, student_logits, teacher_logits, batch):
        targets = None if self.alpha == 1 else batch[1]
        label, soft = F.kd_terms(student_logits, teacher_logits, targets, self.temperature, self.t_squared)
        if label is None:
            return soft, {"soft": soft}
        return F.mix(label, soft, self.alpha), {"label": label, "soft": soft}


@register_loss("mse_logits")
@dataclass
class LogitMatching:
    """(1 - alpha) * CE(y, p_s) + alpha * MSE(z_s, z_t): paper 002's temperature -> infinity limit."""

    alpha: float
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self):
        check_alpha(self.alpha, "mse_logits")

    @property
    def needs_labels(self) -> bool:
        return self.alpha < 1

    def __call__(self, student_logits, teacher_logits, batch):
        mse = F.mse_logits(student_logits, teacher_logits)
        if self.alpha == 1:
            return mse, {"mse": mse}
        label = F.softmax_cross_entropy(student_logits, batch[1])
        return F.mix(label, mse, self.alpha), {"label": label, "mse": mse}
