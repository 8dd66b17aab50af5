"""Top-k teacher outputs: exact top-k probabilities, the rest as one bucket, and what that costs a KD loss."""

from __future__ import annotations

import pytest
import torch

from kdrun.losses import functional as KF
from kdrun.teachers.top_k import compress, expand


def peaked_logits(rows: int = 4096, classes: int = 65, scale: float = 4.0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, classes, generator=generator) * scale


def test_top_k_probabilities_are_exact_and_the_rest_keeps_its_mass():
    logits = peaked_logits()
    tables = compress(logits, 8)
    assert tables["indices"].dtype == torch.int16 and tables["values"].shape == (4096, 8)
    dense = expand(tables["values"], tables["indices"], tables["rest"], 65)
    probs, exact = dense.softmax(-1), logits.softmax(-1)
    top = exact.topk(8, dim=-1)
    assert torch.allclose(probs.gather(-1, top.indices), top.values, atol=1e-6)
    rest_exact = 1 - top.values.sum(-1)
    rest_kept = 1 - probs.gather(-1, top.indices).sum(-1)
    assert torch.allclose(rest_kept, rest_exact, atol=1e-5)
    assert torch.allclose(dense.exp().sum(-1), torch.ones(4096), atol=1e-5)  # log-probabilities: softmax = exp


def test_kd_loss_from_top_k_against_the_exact_loss():
    """The approximation's cost, measured: forward KL to a student from a top-8 teacher of 65 classes."""
    teacher, student = peaked_logits(seed=1), peaked_logits(seed=2, scale=2.0)
    exact = KF.kl_divergence_at_temperature(student, teacher).item()

    def approximate(k, temperature=1.0):
        tables = compress(teacher, k)
        dense = expand(tables["values"], tables["indices"], tables["rest"], 65)
        return KF.kl_divergence_at_temperature(student, dense, temperature).item()

    assert approximate(64) == pytest.approx(exact, rel=1e-5)  # one class in the bucket: exact
    assert approximate(8) == pytest.approx(exact, rel=0.05)   # 8 of 65 classes of a peaked teacher: within 5%
    assert abs(approximate(8) - exact) < abs(approximate(2) - exact)  # more classes, closer
    with pytest.raises(ValueError, match="0 < k < 65"):
        compress(teacher, 65)
