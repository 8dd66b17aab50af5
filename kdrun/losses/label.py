"""Objectives that use only the labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.losses import functional as F
from kdrun.losses import check_fraction, register_loss


@register_loss("ce")
@dataclass
class CrossEntropy:
    """Cross-entropy with the one-hot labels, optionally label-smoothed (also trains teachers)."""

    label_smoothing: float
    needs_teacher: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True

    def __post_init__(self):
        check_fraction(self.label_smoothing, "label_smoothing", "ce")

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.softmax_cross_entropy(student_logits, batch[1], self.label_smoothing)
        return loss, {"ce": loss}
