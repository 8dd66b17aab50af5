"""Objectives that match the teacher's outputs (formulas and conventions in `functional.kd`)."""

from __future__ import annotations

from dataclasses import dataclass
import kdrun.losses.functional as F
from kdrun.losses.interface import DistillationLoss
from kdrun.losses.mixture import LabelMixture, TemperedMixture
from kdrun.losses.registry import register_loss


@register_loss("kd")
@dataclass
class KnowledgeDistillation(TemperedMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(p_t^T || p_s^T)."""


    def __call__(self, student_logits, teacher_logits, batch):
        soft = F.kl_divergence_at_temperature(student_logits, teacher_logits, self.temperature)
        return self.mixed(student_logits, batch, self.scaled(soft), "soft")


@register_loss("soft_ce")
@dataclass
class SoftCrossEntropy(TemperedMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * H(p_t^T, p_s^T): KD written as a cross-entropy with the
    teacher's probabilities (paper 001's distillation risk). Same gradients as `kd`; the logged value
    includes the teacher's entropy."""


    def __call__(self, student_logits, teacher_logits, batch):
        soft = F.soft_cross_entropy(student_logits, teacher_logits, self.temperature)
        return self.mixed(student_logits, batch, self.scaled(soft), "soft_ce")


@register_loss("mse_logits")
@dataclass
class LogitMatching(LabelMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * MSE(z_s, z_t): paper 002's temperature -> infinity limit."""


    def __call__(self, student_logits, teacher_logits, batch):
        return self.mixed(student_logits, batch, F.mse_logits(student_logits, teacher_logits), "mse")


@register_loss("kd_hard")
@dataclass
class HardLabelDistillation(LabelMixture, DistillationLoss):
    """(1 - alpha) * CE(y, p_s) + alpha * CE(argmax z_t, p_s): the teacher's top-1 predictions as labels."""


    def __call__(self, student_logits, teacher_logits, batch):
        hard = F.softmax_cross_entropy(student_logits, F.hard_teacher_labels(teacher_logits))
        return self.mixed(student_logits, batch, hard, "teacher_label")
