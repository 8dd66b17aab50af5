"""Paper 001's retrieval objectives: generalised softmax cross-entropy (eq. 12) and double distillation (eq. 13).

Shapes: logits (B, L) over L labels; integer targets (B,); log-weights (B, L). Every function
returns the batch mean. Negative weights are carried as log-weights so that zero weights
(log-weight -inf) and weights far below float precision stay exact.

Generalised softmax cross-entropy, per example:
    l(y, f) = log sum_{y'} w_{y'} exp(f_{y'} - f_y) = logsumexp(f + log w) - f_y.
With uniform w = 1/L it is the standard cross-entropy minus log L.

Double distillation (eq. 13):
    R = mean_n sum_y q(y|x_n) * log sum_{y'} w(y'|x_n) exp(f_{y'} - f_y),
q the positive weights (teacher probabilities, or one-hot labels for ablations) and
w = Psi(teacher) the negative weights. Because sum_y q(y) = 1 and, when the y' = y term keeps its
Psi weight as printed, the inner sum does not depend on y except through f_y:
    R = mean_n [ logsumexp(f + log w) - sum_y q(y) f_y ],
which costs O(B * L); the (B, L, L) double sum is never formed. When the y' = y term instead gets
weight 1 (the standard-CE form), each y needs log(S - w_y e^{f_y} + e^{f_y}) with S the full sum;
`_log_sum_without_each` computes log(S - w_y e^{f_y}) for all y at once, still in O(B * L).

Ambiguities of paper 001 and the defaults chosen here:
- Psi: the paper uses weights "proportional to" 1 - sigmoid(a * s_{y'}) with s the teacher logit
  and gives no value of a; default a = 1.0. Whether the weights are normalised to sum to 1 is
  not said: `normalize` (default False) adds log Z(x) per example to the loss value and, with
  positive_self_weight="psi", leaves every gradient unchanged.
- The y' = y term: the printed formula gives it weight Psi(positive); when that weight is near 0
  the loss is unbounded below. positive_self_weight="psi" (default, as printed) or "one" (the
  standard-CE form, bounded below by 0 when the weights are at most 1). With "one", normalising
  the negatives does change the gradient, since the self term is not rescaled.
- The positive weights: the paper does not say whether p_t is softmax(s) or softmax(s / T);
  `temperature` (default 1.0) divides the teacher logits for the positive weights only. Psi
  always reads the raw teacher logits (one_minus_prob uses softmax(s) at T = 1), since `a`
  already sets the scale of the sigmoid choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = [
    "PSI_CHOICES",
    "SELF_WEIGHT_CHOICES",
    "POSITIVE_WEIGHT_CHOICES",
    "psi_log_weights",
    "generalized_softmax_cross_entropy",
    "double_distillation_loss",
]

PSI_CHOICES = ("uniform", "one_minus_prob", "one_minus_sigmoid_logit")
SELF_WEIGHT_CHOICES = ("psi", "one")
POSITIVE_WEIGHT_CHOICES = ("teacher_prob", "onehot")


def psi_log_weights(teacher_logits: Tensor, psi: str = "one_minus_sigmoid_logit", a: float = 1.0,
                    normalize: bool = False) -> Tensor:
    """log Psi(teacher) per label, shape (B, L): the log of the negative weights of eq. 13.

    - uniform: w = 1 (log w = 0), so eq. 13 reduces to soft-target cross-entropy;
    - one_minus_prob: w = 1 - softmax(s), the paper's "natural" choice that it rejects;
    - one_minus_sigmoid_logit: w = 1 - sigmoid(a * s) = sigmoid(-a * s), the paper's choice;
      its log is -softplus(a * s), finite for any finite logit.
    `normalize` rescales each row of weights to sum to 1 (subtracts log Z(x)).
    """
    if psi == "uniform":
        log_w = torch.zeros_like(teacher_logits)
    elif psi == "one_minus_prob":
        log_w = _log1mexp(F.log_softmax(teacher_logits, dim=-1))
    elif psi == "one_minus_sigmoid_logit":
        log_w = -F.softplus(a * teacher_logits)
    else:
        raise ValueError(f"psi={psi!r}; allowed: {', '.join(PSI_CHOICES)}")
    if normalize:
        log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
    return log_w


def generalized_softmax_cross_entropy(logits: Tensor, targets: Tensor, log_weights: Tensor,
                                      positive_self_weight: str = "psi") -> Tensor:
    """mean_n log sum_{y'} w_{y'} exp(f_{y'} - f_{y_n}) (eq. 12), with w = exp(log_weights) per example.

    log_weights may hold -inf (weight 0). positive_self_weight="one" gives the y' = y_n term
    weight 1 instead of w_{y_n}.
    """
    onehot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return _double_distillation_rows(logits, log_weights, onehot, positive_self_weight).mean()


def double_distillation_loss(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None = None, *,
                             psi: str = "one_minus_sigmoid_logit", a: float = 1.0, normalize: bool = False,
                             positive_self_weight: str = "psi", positive_weights: str = "teacher_prob",
                             temperature: float = 1.0, chunk_size: int | None = None) -> Tensor:
    """Eq. 13: mean_n sum_y q(y|x_n) log sum_{y'} Psi(teacher)(y'|x_n) exp(f_{y'} - f_y).

    q = softmax(teacher / temperature) (positive_weights="teacher_prob") or the one-hot labels
    (positive_weights="onehot", needs `targets`; then this is eq. 12 with teacher negatives).
    teacher_logits may be None only when neither Psi nor q reads it (psi="uniform", onehot).

    chunk_size counts examples (rows), not labels: each row needs a log-sum-exp over all its
    labels, so rows are the unit that splits exactly. Each chunk is recomputed during backward
    (activation checkpointing), so peak memory for intermediates is about chunk_size * L
    numbers per temporary instead of B * L; None processes the whole batch at once.
    """
    if positive_self_weight not in SELF_WEIGHT_CHOICES:
        raise ValueError(f"positive_self_weight={positive_self_weight!r}; allowed: {', '.join(SELF_WEIGHT_CHOICES)}")
    if positive_weights not in POSITIVE_WEIGHT_CHOICES:
        raise ValueError(f"positive_weights={positive_weights!r}; allowed: {', '.join(POSITIVE_WEIGHT_CHOICES)}")
    if positive_weights == "onehot" and targets is None:
        raise ValueError("positive_weights='onehot' needs targets")
    if teacher_logits is None and (psi != "uniform" or positive_weights != "onehot"):
        raise ValueError("teacher_logits is None, but psi or positive_weights reads the teacher")
    if teacher_logits is not None:
        teacher_logits = teacher_logits.detach()  # the teacher is a fixed target, never trained by this loss

    def rows(student: Tensor, teacher: Tensor | None, labels: Tensor | None) -> Tensor:
        # Weights are built per chunk so that no (B, L) weight tensor outlives its chunk.
        source = student.detach() if teacher is None else teacher
        log_w = psi_log_weights(source, psi, a, normalize)
        if positive_weights == "onehot":
            q = F.one_hot(labels, student.shape[-1]).to(student.dtype)
        else:
            q = torch.softmax(teacher / temperature, dim=-1)
        return _double_distillation_rows(student, log_w, q, positive_self_weight).sum()

    batch = student_logits.shape[0]
    if chunk_size is None or chunk_size >= batch:
        return rows(student_logits, teacher_logits, targets) / batch
    total = student_logits.new_zeros(())
    for start in range(0, batch, chunk_size):
        part = slice(start, start + chunk_size)
        args = (student_logits[part], None if teacher_logits is None else teacher_logits[part],
                None if targets is None else targets[part])
        if torch.is_grad_enabled() and student_logits.requires_grad:
            total = total + checkpoint(rows, *args, use_reentrant=False)
        else:
            total = total + rows(*args)
    return total / batch


def _double_distillation_rows(logits: Tensor, log_weights: Tensor, positive_weights: Tensor,
                              positive_self_weight: str) -> Tensor:
    """Per example: sum_y q_y * log sum_{y'} w'_{y'} exp(f_{y'} - f_y), shape (B,).

    w' = w ("psi") or w with w'_y = 1 for the term y' = y ("one"). Assumes sum_y q_y = 1 for the
    "psi" shortcut; one-hot and softmax weights satisfy it.
    """
    scores = logits + log_weights  # log(w_{y'} e^{f_{y'}})
    if positive_self_weight == "psi":
        # The inner sum is the same S for every y, so sum_y q_y (log S - f_y) = log S - q.f
        log_s = _safe_logsumexp(scores)
        return log_s - (positive_weights * logits).sum(dim=-1)
    if positive_self_weight != "one":
        raise ValueError(f"positive_self_weight={positive_self_weight!r}; allowed: {', '.join(SELF_WEIGHT_CHOICES)}")
    # log(S - w_y e^{f_y} + e^{f_y}) - f_y = logaddexp(log sum_{y' != y} w e^f - f_y, 0)
    per_label = F.softplus(_log_sum_without_each(scores) - logits)
    # q_y = 0 would still multiply a finite term; where() keeps 0 * inf out for rows of -inf logits
    return torch.where(positive_weights > 0, positive_weights * per_label, torch.zeros_like(per_label)).sum(dim=-1)


def _log_sum_without_each(scores: Tensor) -> Tensor:
    """out[b, y] = log sum_{y' != y} exp(scores[b, y']) for every y, in O(B * L), without cancellation.

    For y other than the row's argmax, exp(scores_y - logsumexp) <= 1/2, so
    logsumexp + log(1 - exp(scores_y - logsumexp)) loses no precision. For the argmax itself the
    subtraction could cancel catastrophically, so that entry is a direct log-sum-exp with the
    argmax masked out.
    """
    total = _safe_logsumexp(scores, keepdim=True)
    top = scores.argmax(dim=-1, keepdim=True)
    is_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
    # The argmax branch is replaced below; a harmless stand-in keeps its gradient from being 0 * inf.
    absent = torch.isneginf(scores)  # weight 0: removing it leaves the total unchanged
    gap = torch.where(is_top | absent, torch.full_like(scores, -1.0), scores - total)
    others = torch.where(absent, total.expand_as(scores), total + _log1mexp(gap))
    without_top = _safe_logsumexp(scores.masked_fill(is_top, -math.inf), keepdim=True)
    return torch.where(is_top, without_top.expand_as(scores), others)


def _safe_logsumexp(x: Tensor, keepdim: bool = False) -> Tensor:
    """logsumexp over the last axis that is -inf (with zero, not NaN, gradients) for rows of all -inf."""
    empty = torch.isneginf(x).all(dim=-1, keepdim=True)
    value = torch.logsumexp(x.masked_fill(empty, 0.0), dim=-1, keepdim=True)
    value = value.masked_fill(empty, -math.inf)
    return value if keepdim else value.squeeze(-1)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler's split at -log 2)."""
    near_zero = x > -math.log(2.0)
    # Each branch gets an input where it is finite, so where() never routes 0 * inf into a gradient.
    x_near = torch.where(near_zero, x, torch.full_like(x, -1.0))
    x_far = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))
