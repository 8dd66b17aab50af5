"""Knowledge-distillation formulas: cross-entropy, KL at temperature and the alpha-mix.

Shapes: logits (B, K); targets (B,) integer labels; every function returns the batch mean.
Conventions (they differ between papers, hence the arguments):
- temperature T divides both teacher and student logits in the soft term (Hinton et al.;
  papers 002 and 003); the label term always uses T = 1;
- `t_squared` multiplies the soft term by T^2, keeping its gradient scale independent of T
  (Hinton; paper 003 section 5); paper 002 uses no such factor; at T = 1 it is irrelevant;
- `alpha` is the teacher's weight: (1 - alpha) * label term + alpha * soft term (paper 003).
  alpha = 1 is pure soft-target distillation (paper 000's R_dist); paper 002 writes the
  same mixture with alpha_002 = 1 - alpha.
KL(p_t || p_s) and the soft cross-entropy H(p_t, p_s) differ by the teacher's entropy, a
constant, so they share every gradient; the KL form is used because it is 0 at a perfect match.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["softmax_cross_entropy", "kl_divergence_at_temperature", "soft_cross_entropy", "kd_terms", "kd_loss",
           "hard_teacher_labels", "uniform_teacher_logits", "mse_logits", "mix", "label_mixture", "temperature_scaled"]


def softmax_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """H(y, softmax(z)) with one-hot y, or with y smoothed toward uniform by `label_smoothing`."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def kl_divergence_at_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(z_t / T) || softmax(z_s / T)), summed over classes, averaged over the batch."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    # F.kl_div(..., reduction="batchmean", log_target=True) written out (the same elementwise terms and sum):
    # log-probabilities avoid log(0) = -inf where a teacher probability underflows, and these ops have
    # batching rules, so a pack evaluates its members' losses in one vmapped call (kdrun.engine.packed_module)
    terms = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    return terms.sum() / student_logits.shape[0]


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """H(softmax(z_t / T), softmax(z_s / T)): cross-entropy with the teacher's probabilities as targets.

    Equals KL(p_t^T || p_s^T) + H(p_t^T): the same gradient, but its value includes the teacher's
    entropy (how papers that write the loss as a cross-entropy report it)."""
    teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    return -(teacher_probs * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def hard_teacher_labels(teacher_logits: Tensor) -> Tensor:
    """The teacher's top-1 class per sample: distilling on these is cross-entropy with them as labels."""
    return teacher_logits.argmax(dim=-1)


def uniform_teacher_logits(student_logits: Tensor) -> Tensor:
    """Logits of the class-uniform teacher 1/K (paper 003's RCD control): all zeros, at any temperature."""
    return student_logits.new_zeros(student_logits.shape).detach()


def kd_terms(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None,
             temperature: float = 1.0, t_squared: bool = True) -> tuple[Tensor | None, Tensor]:
    """(label term CE(y, p_s), soft term [T^2] KL(p_t^T || p_s^T)); the label term is None without targets."""
    label = None if targets is None else softmax_cross_entropy(student_logits, targets)
    soft = temperature_scaled(kl_divergence_at_temperature(student_logits, teacher_logits, temperature),
                              temperature, t_squared)
    return label, soft


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, alpha: float,
            temperature: float = 1.0, t_squared: bool = True) -> Tensor:
    """(1 - alpha) * CE(y, p_s) + alpha * [T^2] * KL(p_t^T || p_s^T).

    At T = 1 its gradient in the student logits is (1 - alpha)(p_s - y) + alpha(p_s - p_t)
    (paper 003, section 5). With alpha = 1 the labels are not needed and may be None.
    """
    soft = temperature_scaled(kl_divergence_at_temperature(student_logits, teacher_logits, temperature),
                              temperature, t_squared)
    return label_mixture(student_logits, targets, soft, alpha)[0]


def mse_logits(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared difference of logits, averaged over classes and batch (paper 002's T -> infinity limit)."""
    return F.mse_loss(student_logits, teacher_logits)


def mix(label_term: Tensor, teacher_term: Tensor, alpha: float) -> Tensor:
    """(1 - alpha) * label term + alpha * teacher term."""
    return (1.0 - alpha) * label_term + alpha * teacher_term


def label_mixture(student_logits: Tensor, targets: Tensor | None, teacher_term: Tensor,
                  alpha: float) -> tuple[Tensor, Tensor | None]:
    """((1 - alpha) * CE(y, p_s) + alpha * teacher_term, the CE term): the shape most objectives share.

    At alpha = 1 the labels are not read (the CE term is None), so such losses also train students
    whose labels are withheld (paper 004's distill split)."""
    if alpha == 1:
        return teacher_term, None
    label = softmax_cross_entropy(student_logits, targets)
    return mix(label, teacher_term, alpha), label


def temperature_scaled(term: Tensor, temperature: float, t_squared: bool) -> Tensor:
    """The term times T^2 when `t_squared`: it keeps the gradient scale independent of T (Hinton et al.)."""
    return term * temperature**2 if t_squared else term

