"""Paper 001's retrieval objectives: double distillation (eq. 13) and generalised softmax cross-entropy (eq. 12).

The formulas, and the paper's ambiguities with the defaults chosen, are documented in
`kdrun.losses.functional.retrieval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdrun.errors import ConfigError
from kdrun.losses import is_number, check_flag, check_temperature, register_loss
from kdrun.losses import functional as F


def _check_choice(value, key: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}.{key}={value!r} is not allowed; allowed: {', '.join(allowed)}")


def _check_negative_weights(loss, where: str) -> None:
    _check_choice(loss.psi, "psi", F.PSI_CHOICES, where)
    if not is_number(loss.a) or not float(loss.a) > 0.0:
        raise ConfigError(f"{where}.a={loss.a!r} must be a number > 0 (the sigmoid scale of psi=one_minus_sigmoid_logit)")
    check_flag(loss.normalize_neg_weights, "normalize_neg_weights", where)
    _check_choice(loss.positive_self_weight, "positive_self_weight", F.SELF_WEIGHT_CHOICES, where)
    chunk = loss.chunk_size
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ConfigError(f"{where}.chunk_size={chunk!r} must be null (whole batch) or an integer >= 1 (examples per chunk)")


@register_loss("double_distillation")
@dataclass
class DoubleDistillation:
    """Eq. 13: teacher-weighted positives, negatives weighted by Psi(teacher) inside the log-sum-exp."""

    psi: str
    a: float
    normalize_neg_weights: bool
    positive_self_weight: str
    positive_weights: str
    temperature: float
    chunk_size: int | None
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self):
        _check_negative_weights(self, "double_distillation")
        _check_choice(self.positive_weights, "positive_weights", F.POSITIVE_WEIGHT_CHOICES, "double_distillation")
        check_temperature(self.temperature, "double_distillation")

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
class GeneralizedSoftmaxCrossEntropy:
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
