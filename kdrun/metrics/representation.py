"""Similarity of two models' internal representations (penultimate features) on the same inputs."""

from __future__ import annotations

from torch import Tensor


def linear_cka(features_a: Tensor, features_b: Tensor) -> float:
    """Linear CKA = HSIC(K_a, K_b) / sqrt(HSIC(K_a, K_a) HSIC(K_b, K_b)) with K = X Xᵀ and
    HSIC(K, L) = tr(K H L H) / (n − 1)², H = I − 11ᵀ/n the centering matrix.

    Rows are inputs (the same in both); every other axis is flattened into features. The
    normalisation cancels the (n − 1)² factors, and with centred columns tr(K H L H) = ‖A_cᵀ B_c‖_F²,
    so the n × n kernels are formed only when that is the cheaper side. 1 for identical
    representations; invariant to orthogonal transforms and isotropic scaling of either side."""
    a = features_a.flatten(1).double()
    b = features_b.flatten(1).double()
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"linear_cka needs the same inputs on both sides, got {a.shape[0]} and {b.shape[0]} rows")
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    n = a.shape[0]
    if n < min(a.shape[1], b.shape[1]):  # wide features: centred n x n kernels (centring X centres K)
        kernel_a, kernel_b = a @ a.T, b @ b.T
        cross, self_a, self_b = (kernel_a * kernel_b).sum(), kernel_a.square().sum(), kernel_b.square().sum()
    else:
        cross = (a.T @ b).square().sum()
        self_a, self_b = (a.T @ a).square().sum(), (b.T @ b).square().sum()
    return float(cross / (self_a.sqrt() * self_b.sqrt()))


__all__ = ["linear_cka"]
