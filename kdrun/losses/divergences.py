"""Sequence-KD divergences as training objectives: reverse KL and the generalized Jensen-Shannon divergence
(formulas in `functional.divergences`), mixed with the label loss like `kd`. On a language model they
apply per token position of the training windows (kdrun.losses.positions)."""

from __future__ import annotations

from dataclasses import dataclass

from kdrun.config.checks import check_unit_interval
import kdrun.losses.functional as F
from kdrun.losses.interface import DistillationLoss
from kdrun.losses.mixture import TemperedMixture
from kdrun.losses.registry import register_loss


@register_loss("reverse_kl")
@dataclass
class ReverseKL(TemperedMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(p_s^T || p_t^T)."""

    def __call__(self, student_logits, teacher_logits, batch):
        term = F.reverse_kl_at_temperature(student_logits, teacher_logits, self.temperature)
        return self.mixed(student_logits, batch, self.scaled(term), "reverse_kl")


@register_loss("generalized_jsd")
@dataclass
class GeneralizedJSD(TemperedMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * JSD_beta(p_t^T, p_s^T); beta 0: forward KL, 1: reverse KL."""

    beta: float

    def __post_init__(self):
        super().__post_init__()
        check_unit_interval(self.beta, f"{self.name}.beta", "the interpolation: 0 forward KL, 0.5 JSD, 1 reverse KL")

    def __call__(self, student_logits, teacher_logits, batch):
        term = F.generalized_jsd(student_logits, teacher_logits, self.beta, self.temperature)
        return self.mixed(student_logits, batch, self.scaled(term), "jsd")
