"""Teachers made from the Bayes probabilities p*(y|x) (paper 001, section 5.1 and appendix B).

Pure functions of probability tensors (N, K). `kdrun.teachers.oracles` wraps them as frozen
teacher modules for the synthetic sources that know p*.

- Bayes distillation: the teacher is p* itself.
- `noisy_biased_probs`, eq. 16: p_t = (1 - alpha) * sigmoid(theta*.x + s * eps) + alpha / 2, where
  theta*.x is the Bayes log-odds and eps ~ N(0, 1). alpha adds bias toward 1/2, s adds variance.
  The paper prints the noise scale as sigma^2 (`noise_scale=sigma_squared`, default) — `sigma`
  uses sigma itself. For K > 2 classes the paper gives no form; the generalisation used is
  (1 - alpha) * softmax(log p* + s * eps) + alpha / K with independent eps per class. For K = 2
  the noise goes on the log-odds only, which is eq. 16 exactly.
- `calibration_distorted_probs`, appendix B.2: Psi_alpha(u) = 1/2 (2u)^alpha for u <= 1/2, and
  1/2 + 1/2 (2u - 1)^(1/alpha) above (`form=corrected`, default: a probability in [0, 1]).
  As printed the upper branch lacks the 1/2 and reaches 1.5 at u = 1 (`form=printed`, clipped to
  [0, 1]). For alpha >= 1 it keeps the decision boundary u = 1/2 (accuracy unchanged) and pushes
  probabilities toward 0 and 1 (over-confidence). Binary: applied to p*(y=1|x), p_0 = 1 - p_1.
  K > 2: applied to every class probability, then renormalised (monotone, so the argmax stays).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["noisy_biased_probs", "psi_alpha", "calibration_distorted_probs", "NOISE_SCALES", "PSI_FORMS"]

NOISE_SCALES = ("sigma_squared", "sigma")
PSI_FORMS = ("corrected", "printed")


def noisy_biased_probs(bayes_probs: Tensor, alpha: float, sigma: float, noise: Tensor,
                       noise_scale: str = "sigma_squared") -> Tensor:
    """Eq. 16 and its K-class generalisation; `noise` is standard normal, shape (N, K)."""
    scale = sigma**2 if noise_scale == "sigma_squared" else sigma
    log_probs = bayes_probs.clamp_min(1e-300).log()
    num_classes = bayes_probs.shape[-1]
    if num_classes == 2:  # noise on the log-odds only: sigmoid(theta*.x + s * eps)
        perturbation = torch.zeros_like(log_probs)
        perturbation[:, 1] = scale * noise[:, 1]
    else:
        perturbation = scale * noise
    return (1.0 - alpha) * torch.softmax(log_probs + perturbation, dim=-1) + alpha / num_classes


def psi_alpha(u: Tensor, alpha: float, form: str = "corrected") -> Tensor:
    """Paper 001's accuracy-preserving distortion of a probability u (appendix B.2)."""
    lower = 0.5 * (2.0 * u).clamp_min(0.0) ** alpha
    upper_scale = 0.5 if form == "corrected" else 1.0
    upper = 0.5 + upper_scale * (2.0 * u - 1.0).clamp_min(0.0) ** (1.0 / alpha)
    return torch.where(u <= 0.5, lower, upper).clamp(0.0, 1.0)


def calibration_distorted_probs(bayes_probs: Tensor, alpha: float, form: str = "corrected") -> Tensor:
    """Psi_alpha applied to p*: on p*(y=1|x) for two classes, per class and renormalised for more."""
    if bayes_probs.shape[-1] == 2:
        positive = psi_alpha(bayes_probs[:, 1], alpha, form)
        return torch.stack([1.0 - positive, positive], dim=-1)
    distorted = psi_alpha(bayes_probs, alpha, form)
    return distorted / distorted.sum(dim=-1, keepdim=True)
