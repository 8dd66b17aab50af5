"""Distance of predicted probabilities to the Bayes probabilities p*(y|x), where a source knows them.

Binary convention (`binary` argument, knob `evaluation.mse_binary`): with two classes
"vector" sums over both coordinates, ‖p − p*‖² = 2 (p_1 − p*_1)²; "scalar" uses only the
positive class, (p_1 − p*_1)². With more classes both give the vector norm.
"""

from __future__ import annotations

import numpy as np

BINARY_CONVENTIONS = ("vector", "scalar")


def _per_class(probs, binary: str) -> np.ndarray:
    """float64 (..., K) probabilities, cut to the positive class for the binary scalar convention."""
    if binary not in BINARY_CONVENTIONS:
        raise ValueError(f"binary={binary!r}; allowed: {', '.join(BINARY_CONVENTIONS)}")
    probs = np.asarray(probs, dtype=np.float64)
    return probs[..., 1:] if binary == "scalar" and probs.shape[-1] == 2 else probs


def mse_to_bayes(probs, bayes_probs, binary: str = "vector") -> float:
    """Mean over inputs of ‖p(x) − p*(x)‖²; probs and bayes_probs are (N, K)."""
    difference = _per_class(probs, binary) - _per_class(bayes_probs, binary)
    return float(np.square(difference).sum(-1).mean())


def bias_variance_decomposition(teacher_probs, bayes_probs, binary: str = "vector") -> dict[str, float]:
    """MSE of R teacher draws (R, N, K) to p* (N, K), split per input and then averaged over inputs:

        mse      = mean_{r,x} ‖p_r(x) − p*(x)‖²
        bias2    = mean_x ‖p̄(x) − p*(x)‖²,   p̄(x) = mean_r p_r(x)
        variance = mean_x mean_r ‖p_r(x) − p̄(x)‖²   (sum of coordinate variances, over the R draws)

    The variance divides by R (not R − 1), which makes mse = bias2 + variance exactly."""
    draws, bayes = _per_class(teacher_probs, binary), _per_class(bayes_probs, binary)
    if draws.ndim != 3 or draws.shape[1:] != bayes.shape:
        raise ValueError(f"teacher_probs must be (R, N, K) over bayes_probs' (N, K) = {bayes.shape}, "
                         f"got {draws.shape}")
    mean = draws.mean(0)
    return {
        "mse": float(np.square(draws - bayes).sum(-1).mean()),
        "bias2": float(np.square(mean - bayes).sum(-1).mean()),
        "variance": float(np.square(draws - mean).sum(-1).mean()),
    }


__all__ = ["BINARY_CONVENTIONS", "mse_to_bayes", "bias_variance_decomposition"]
