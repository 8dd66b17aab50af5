"""The divergences of sequence-level distillation work beyond forward KL: reverse KL and the generalized
Jensen-Shannon divergence of on-policy distillation (GKD, Agarwal et al. 2024), applied here to the
training windows' positions (kdrun.losses.positions); no student sampling.

Both at temperature T on both sides, summed over classes, averaged over rows (batchmean), natural log,
computed from log-softmax so that underflowed probabilities give finite values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["reverse_kl_at_temperature", "generalized_jsd"]


def _kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """mean over rows of sum_k p_k (log p_k - log q_k), with 0 log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1).mean()


def reverse_kl_at_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(p_s^T || p_t^T): mode-seeking, where forward KL (kd) is mass-covering."""
    log_s = (student_logits / temperature).log_softmax(-1)
    log_t = (teacher_logits / temperature).log_softmax(-1)
    return _kl_from_log_probs(log_s, log_t)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> Tensor:
    """JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m), m = beta * p_t + (1 - beta) * p_s.

    beta = 0.5 is the symmetric Jensen-Shannon divergence. Near beta = 0 it behaves as beta * KL(p_t || p_s)
    and near 1 as (1 - beta) * KL(p_s || p_t), so, as in TRL's GKD trainer, beta = 0 is defined as forward
    KL and beta = 1 as reverse KL (where the mixture formula itself would be identically zero)."""
    log_s = (student_logits / temperature).log_softmax(-1)
    log_t = (teacher_logits / temperature).log_softmax(-1)
    if beta == 0:
        return _kl_from_log_probs(log_t, log_s)
    if beta == 1:
        return _kl_from_log_probs(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
    return beta * _kl_from_log_probs(log_t, log_m) + (1 - beta) * _kl_from_log_probs(log_s, log_m)
