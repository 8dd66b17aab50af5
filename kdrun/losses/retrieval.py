"""Paper 001's retrieval objectives: double distillation (eq. 13) and generalised softmax cross-entropy (eq. 12).

The formulas, and the paper's ambiguities with the defaults chosen, are documented in
`kdrun.losses.functional.retrieval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.config.checks import check_choice, check_flag, check_number, check_whole_number
from kdrun.losses.interface import DistillationLoss, Loss
from kdrun.losses.registry import register_loss
import kdrun.losses.functional as F


def _check_negative_weights(loss, where: str) -> None:
    check_choice(loss.psi, f"{where}.psi", F.PSI_CHOICES)
    check_number(loss.a, f"{where}.a", low=0, low_inclusive=False,
                 meaning="the sigmoid scale of psi=one_minus_sigmoid_logit")
    check_flag(loss.normalize_neg_weights, f"{where}.normalize_neg_weights")
    check_choice(loss.positive_self_weight, f"{where}.positive_self_weight", F.SELF_WEIGHT_CHOICES)
    check_whole_number(loss.chunk_size, f"{where}.chunk_size", minimum=1, allow_none=True,
                       meaning="an integer count of examples per chunk; null: the whole batch")


@register_loss("double_distillation")
@dataclass
class DoubleDistillation(DistillationLoss):
    """Eq. 13: teacher-weighted positives, negatives weighted by Psi(teacher) inside the log-sum-exp."""

    psi: str
    a: float
    normalize_neg_weights: bool
    positive_self_weight: str
    positive_weights: str
    temperature: float
    chunk_size: int | None

    def __post_init__(self):
        _check_negative_weights(self, "double_distillation")
        check_choice(self.positive_weights, "double_distillation.positive_weights", F.POSITIVE_WEIGHT_CHOICES)
        check_number(self.temperature, "double_distillation.temperature", low=0, low_inclusive=False)

    @property
    def needs_labels(self) -> bool:
        return self.positive_weights == "onehot"

    def __call__(self, student_logits, teacher_logits, batch):
        targets = batch[1] if self.needs_labels else None
        loss = F.double_distillation_loss(
            student_logits, teacher_logits, targets, psi=self.psi, a=self.a, normalize=self.normalize_neg_weights,
            positive_self_weight=self.positive_self_weight, positive_weights=self.positive_weights,
            temperature=self.temperature, chunk_size=self.chunk_size)
        return loss, {"double_distillation": loss}


@register_loss("generalized_softmax_ce")
@dataclass
class GeneralizedSoftmaxCrossEntropy(Loss):
    """Eq. 12 on the labels: log sum_{y'} P_{y'}(x) exp(f_{y'} - f_y) with P(x) = Psi(teacher), or uniform.

    The paper's ideal P is Psi(p*); the teacher stands in for p*, as in eq. 13. psi=uniform needs
    no teacher and equals the standard cross-entropy (minus log L when normalised).
    """

    psi: str
    a: float
    normalize_neg_weights: bool
    positive_self_weight: str
    chunk_size: int | None
    needs_labels: ClassVar[bool] = True

    def __post_init__(self):
        _check_negative_weights(self, "generalized_softmax_ce")

    @property
    def needs_teacher(self) -> bool:
        return self.psi != "uniform"

    def __call__(self, student_logits, teacher_logits, batch):
        loss = F.double_distillation_loss(
            student_logits, teacher_logits if self.needs_teacher else None, batch[1], psi=self.psi, a=self.a,
            normalize=self.normalize_neg_weights, positive_self_weight=self.positive_self_weight,
            positive_weights="onehot", chunk_size=self.chunk_size)
        return loss, {"generalized_softmax_ce": loss}
