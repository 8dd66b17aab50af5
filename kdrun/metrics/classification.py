"""Classification metrics of one model, and agreement between two."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float(multiclass_accuracy(logits, labels, num_classes=logits.shape[-1], average="micro"))


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of the labels (the test cross-entropy)."""
    return float(F.cross_entropy(logits, labels))


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (L1 norm)."""
    return float(multiclass_calibration_error(logits.softmax(-1), labels, num_classes=logits.shape[-1],
                                              n_bins=bins, norm="l1"))


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Top-1 agreement (fidelity): the fraction of inputs where both predict the same class."""
    return float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())


def classification_metrics(logits: Tensor, labels: Tensor, ece_bins: int = 15) -> dict[str, float]:
    return {
        "acc": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": expected_calibration_error(logits, labels, ece_bins),
    }


__all__ = ["accuracy", "nll", "expected_calibration_error", "agreement", "classification_metrics"]
