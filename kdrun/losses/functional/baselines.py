"""Paper 004's baseline objectives: label-smoothed teacher, focal distillation, flooding, Tf-KD.

Shapes and conventions follow `kd`: logits (B, C), integer targets (B,), batch means; teacher
terms take logits; KL(p_t || p_s) is preferred to the soft cross-entropy because both share every
gradient and KL is 0 at a perfect match.

Temperature scaling (TS) needs no code here: it is `kd_loss` with alpha = 1 and no T^2 factor
(configs/loss/temperature_scaling.yaml). Tf-KD_self, which paper 004 re-implements, is `kd_loss`
with a trained copy of the student as teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdrun.losses.functional.kd import kd_terms, kl_divergence_at_temperature, mix

__all__ = [
    "smoothed_log_probs",
    "label_smoothed_teacher_kl",
    "focal_distillation",
    "flooded",
    "virtual_teacher_log_probs",
    "teacher_free_kd_terms",
    "teacher_free_kd_loss",
]


def smoothed_log_probs(log_probs: Tensor, smoothing: float) -> Tensor:
    """log((1 - delta) p + delta / C), computed in log space so a vanishing p_c stays finite."""
    num_classes = log_probs.shape[-1]
    # log(0) = -inf makes logaddexp return the other argument, covering delta = 0 and delta = 1
    keep = math.log(1.0 - smoothing) if smoothing < 1 else -math.inf
    spread = math.log(smoothing / num_classes) if smoothing > 0 else -math.inf
    return torch.logaddexp(log_probs + keep, torch.full_like(log_probs, spread))


def label_smoothed_teacher_kl(student_logits: Tensor, teacher_logits: Tensor, smoothing: float,
                              temperature: float = 1.0) -> Tensor:
    """KL(p_t^ls || p_s) with p_t^ls = (1 - delta) p_t + delta / C and both p at temperature T.

    Paper 004 (Eq. 23-24) writes the binary case, delta / 2; delta / C is its multi-class form and
    equals it for C = 2. No T^2 factor, as in paper 004's temperature baseline.
    """
    teacher_log_probs = smoothed_log_probs(F.log_softmax(teacher_logits / temperature, dim=-1), smoothing)
    # the smoothed teacher is passed as logits (its log-probabilities) at temperature 1
    return kl_divergence_at_temperature(student_logits / temperature, teacher_log_probs, 1.0)


def focal_distillation(student_logits: Tensor, teacher_logits: Tensor, gamma: float) -> Tensor:
    """-H(p_t) + sum_c p_t,c (1 - p_s,c)^gamma (-log p_s,c) (paper 004, Eq. 12).

    gamma = 0 gives KL(p_t || p_s). The -H(p_t) term is kept as in Eq. 12: it does not change any
    gradient, and makes the loss 0 at a perfect match when gamma = 0; for gamma > 0 the weighted
    cross-entropy can fall below H(p_t), so the loss can be negative.
    """
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    teacher_probs = teacher_log_probs.exp()
    # 1 - p via expm1 keeps the miss probability of a confident class from rounding to 0; the floor
    # stops (1 - p)^(gamma - 1) from turning into inf * 0 = nan in the gradient when gamma < 1
    miss = (-torch.expm1(student_log_probs)).clamp_min(torch.finfo(student_logits.dtype).tiny)
    weighted_ce = (teacher_probs * miss.pow(gamma) * -student_log_probs).sum(dim=-1)
    neg_entropy = torch.xlogy(teacher_probs, teacher_probs).sum(dim=-1)
    return (neg_entropy + weighted_ce).mean()


def flooded(loss: Tensor, level: float) -> Tensor:
    """|L - b| + b (Ishida et al. 2020): the same value above the flood level b, mirrored below it.

    Below b the gradient of L is reversed, pushing the training loss back up to b. It applies to
    whatever L is passed, here the mini-batch mean, as in Ishida et al.
    """
    return (loss - level).abs() + level


def virtual_teacher_log_probs(targets: Tensor, num_classes: int, correct_prob: float,
                              dtype: torch.dtype = torch.float32) -> Tensor:
    """log p_v for Tf-KD_reg's hand-designed teacher: a on the true class, (1 - a) / (C - 1) elsewhere."""
    other = math.log((1.0 - correct_prob) / (num_classes - 1))
    log_probs = torch.full((len(targets), num_classes), other, dtype=dtype, device=targets.device)
    log_probs[torch.arange(len(targets), device=targets.device), targets] = math.log(correct_prob)
    return log_probs


def teacher_free_kd_terms(student_logits: Tensor, targets: Tensor, correct_prob: float, temperature: float,
                          t_squared: bool = True) -> tuple[Tensor, Tensor]:
    """(CE(y, p_s), [T^2] KL(p_v^T || p_s^T)) for Tf-KD_reg (Yuan et al. 2020).

    The virtual teacher is softened like a real one, with its log-probabilities as logits:
    p_v^T = softmax(log p_v / T), i.e. proportional to p_v^(1/T).
    """
    log_pv = virtual_teacher_log_probs(targets, student_logits.shape[-1], correct_prob, student_logits.dtype)
    return kd_terms(student_logits, log_pv, targets, temperature, t_squared)


def teacher_free_kd_loss(student_logits: Tensor, targets: Tensor, alpha: float, correct_prob: float,
                         temperature: float, t_squared: bool = True) -> Tensor:
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(p_v^T || p_s^T)."""
    label, soft = teacher_free_kd_terms(student_logits, targets, correct_prob, temperature, t_squared)
    return mix(label, soft, alpha)
