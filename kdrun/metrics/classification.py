"""Classification metrics of one model, and agreement between two."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (binary_auroc, multiclass_accuracy, multiclass_auroc,
                                                     multiclass_calibration_error)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float(multiclass_accuracy(logits, labels, num_classes=logits.shape[-1], average="micro"))


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of the labels (the test cross-entropy)."""
    return float(F.cross_entropy(logits, labels))


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (L1 norm)."""
    return float(multiclass_calibration_error(logits.softmax(-1), labels, num_classes=logits.shape[-1],
                                              n_bins=bins, norm="l1"))


def auroc(logits: Tensor, labels: Tensor, average: str = "macro") -> float:
    """Area under the ROC curve. Two classes: of the positive-class probability (class 1).
    More classes: one-vs-rest per class, combined by `average` ("macro" | "weighted")."""
    probs = logits.double().softmax(-1)  # float32 trapezoid sums can exceed 1 on perfectly ranked scores
    if probs.shape[-1] == 2:
        return float(binary_auroc(probs[:, 1], labels))
    return float(multiclass_auroc(probs, labels, num_classes=probs.shape[-1], average=average))


def precision_at_k(logits: Tensor, targets: Tensor, k: int) -> float:
    """P@k = mean over inputs of |top-k predicted classes ∩ true labels| / k.

    `targets` is either class indices (N,) or a multi-hot label-set matrix (N, K). With one label
    per input the top-k holds it at most once, so P@k = top-k accuracy / k and P@1 = accuracy."""
    relevant = targets.bool() if targets.dim() == 2 else F.one_hot(targets, logits.shape[-1]).bool()
    top = logits.topk(k, dim=-1).indices
    return float(relevant.gather(1, top).sum(-1).double().mean() / k)


def top_k_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of inputs whose label is among the k highest-scoring classes."""
    return float(multiclass_accuracy(logits, labels, num_classes=logits.shape[-1], top_k=k, average="micro"))


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Top-1 agreement (fidelity): the fraction of inputs where both predict the same class."""
    return float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())


def classification_metrics(logits: Tensor, labels: Tensor, ece_bins: int = 15, precision_ks: Sequence[int] = (),
                           auroc_average: str = "macro", include_auroc: bool = True) -> dict[str, float]:
    """acc, nll, ece, auroc (unless left out), and precision@k / top{k}_acc for each k < K (k >= K says nothing)."""
    metrics = {
        "acc": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": expected_calibration_error(logits, labels, ece_bins),
    }
    if include_auroc:
        metrics["auroc"] = auroc(logits, labels, auroc_average)
    for k in precision_ks:
        if k < logits.shape[-1]:
            metrics[f"precision@{k}"] = precision_at_k(logits, labels, k)
            metrics[f"top{k}_acc"] = top_k_accuracy(logits, labels, k)
    return metrics


__all__ = ["accuracy", "nll", "expected_calibration_error", "auroc", "precision_at_k", "top_k_accuracy", "agreement",
           "classification_metrics"]
