"""Objectives that use only the labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.errors import ConfigError
from kdrun.losses import functional as F
from kdrun.losses import register_loss


@register_loss("ce")
@dataclass
class CrossEntropy:
    """Cross-entropy with the one-hot labels, optionally label-smoothed (also trains teachers)."""

    label_smoothing: float
    needs_teacher: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True

    def __post_init__(self):
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing <= 1.0:
            raise ConfigError(f"ce.label_smoothing={self.label_smoothing} is outside [0, 1]")

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.softmax_cross_entropy(student_logits, batch[1], self.label_smoothing)
        return loss, {"ce": loss}
