"""Functional similarity of a student to its teacher, from the two models' logits on the same inputs.

Everything is computed in float64 from log-softmax, so probabilities that underflow to 0 in
float32 still give finite divergences (0 * log 0 counts as 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _log_probs(logits: Tensor) -> Tensor:
    return logits.double().log_softmax(-1)


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> float:
    """Mean over inputs of KL(p ‖ q) = Σ_k p_k (log p_k − log q_k), natural log."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def activation_distance(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean over inputs of the L2 distance between the two softmax vectors (lower = more similar)."""
    difference = _log_probs(student_logits).exp() - _log_probs(teacher_logits).exp()
    return float(difference.norm(dim=-1).mean())


def js_divergence(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean over inputs of ½ KL(p_t ‖ m) + ½ KL(p_s ‖ m), m = ½ (p_t + p_s); natural log, so in [0, ln 2].

    log m is taken as logsumexp(log p_t, log p_s) − ln 2: never −inf where either model gives mass."""
    log_s, log_t = _log_probs(student_logits), _log_probs(teacher_logits)
    log_mixture = torch.logaddexp(log_s, log_t) - math.log(2.0)
    kl_t = (log_t.exp() * (log_t - log_mixture)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_mixture)).sum(-1)
    return float((0.5 * (kl_t + kl_s)).mean())


def rank_disagreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of rank positions (1st, 2nd, ..., K-th most likely class) at which the two models
    name different classes, averaged over inputs; 0 = same class order, random orders ≈ 1 − 1/K.

    Ties keep the lower class index first (stable sort), so equal logits rank deterministically."""
    student_order = student_logits.argsort(dim=-1, descending=True, stable=True)
    teacher_order = teacher_logits.argsort(dim=-1, descending=True, stable=True)
    return float((student_order != teacher_order).double().mean())


def _agreement_mask(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    return student_logits.argmax(-1) == teacher_logits.argmax(-1)


def conditional_agreement(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                          teacher_correct: bool) -> float:
    """Top-1 agreement restricted to inputs the teacher classifies correctly (or incorrectly);
    on the incorrect ones agreeing means making the teacher's same mistake. NaN if there are none."""
    subset = (teacher_logits.argmax(-1) == labels) == teacher_correct
    if not subset.any():
        return math.nan
    return float(_agreement_mask(student_logits, teacher_logits)[subset].double().mean())


def similarity_metrics(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Every student–teacher similarity of this module, keyed as in metrics.json under student/<split>/."""
    agreement = float(_agreement_mask(student_logits, teacher_logits).double().mean())
    correct = conditional_agreement(student_logits, teacher_logits, labels, True)
    incorrect = conditional_agreement(student_logits, teacher_logits, labels, False)
    return {
        "agreement": agreement,
        "prediction_disagreement": 1.0 - agreement,
        "agreement_teacher_correct": correct,
        "agreement_teacher_incorrect": incorrect,
        # compared between a KD student and a control, its paired difference is paper 003's
        # Delta_incorrect - Delta_correct: > 0 is the negative asymmetry (NaN when a subset is empty)
        "agreement_incorrect_minus_correct": incorrect - correct,
        "kl_teacher_student": kl_divergence(teacher_logits, student_logits),
        "kl_student_teacher": kl_divergence(student_logits, teacher_logits),
        "activation_distance": activation_distance(student_logits, teacher_logits),
        "js_divergence": js_divergence(student_logits, teacher_logits),
        "rank_disagreement": rank_disagreement(student_logits, teacher_logits),
    }


__all__ = ["kl_divergence", "activation_distance", "js_divergence", "rank_disagreement", "conditional_agreement",
           "similarity_metrics"]
