"""Feature-map matching (FitNets): the hint term between intermediate representations.

The student's feature h_s has already been mapped to the teacher's shape by a learned
projection (see kdrun/losses/feature_taps.py); these formulas only compare tensors.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["feature_matching_loss", "label_plus_hints"]


def feature_matching_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """mean((h_s - h_t)^2) over every element (batch, channels, positions): torch's MSELoss.

    The mean, not the sum, keeps the weight of the term comparable between layers of
    different sizes."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student_features.shape)}, "
                         f"teacher {tuple(teacher_features.shape)}; project the student first")
    return ((student_features - teacher_features) ** 2).mean()


def label_plus_hints(label_loss: Tensor, hint_losses: list[Tensor], weight: float) -> Tensor:
    """CE(y, p_s) + weight * sum of the per-layer hint terms.

    An additive weight rather than the (1 - a) * CE + a * MSE mixture: both have the same
    minimisers for weight = a / (1 - a), and the additive form keeps the label term's
    scale the same as plain training."""
    return label_loss + weight * sum(hint_losses)
