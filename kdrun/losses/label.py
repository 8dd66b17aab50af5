"""Objectives that use only the labels."""

from __future__ import annotations

from dataclasses import dataclass
import kdrun.losses.functional as F
from kdrun.config.checks import check_unit_interval
from kdrun.losses.interface import LabelLoss
from kdrun.losses.registry import register_loss


@register_loss("ce")
@dataclass
class CrossEntropy(LabelLoss):
    """Cross-entropy with the one-hot labels, optionally label-smoothed (also trains teachers)."""

    label_smoothing: float

    def __post_init__(self):
        check_unit_interval(self.label_smoothing, "ce.label_smoothing")

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.softmax_cross_entropy(student_logits, batch[1], self.label_smoothing)
        return loss, {"ce": loss}
