"""The adversarial-transfer probe: greedy completions at the marked positions."""

from __future__ import annotations

import pytest
import torch

from kdrun.metrics import completion_probe


def test_counts_rates_and_probability_at_marked_positions_only():
    logits = torch.full((5, 4), -5.0)
    logits[0, 1] = logits[1, 1] = logits[2, 2] = 5.0  # positions 0, 1 predict token 1; 2 predicts 2
    logits[3, 1] = logits[4, 1] = 5.0                 # unmarked: never counted
    mask = torch.tensor([True, True, True, False, False])
    result = completion_probe(logits, mask, expected=2, adversarial=1)
    assert result["probe_positions"] == 3 and result["probe_adversarial_count"] == 2
    assert result["probe_adversarial_rate"] == pytest.approx(2 / 3)
    assert result["probe_expected_rate"] == pytest.approx(1 / 3)
    p_high = torch.tensor([5.0, -5, -5, -5]).softmax(0)[0].item()
    p_low = torch.tensor([-5.0, -5, 5, -5]).softmax(0)[0].item()
    assert result["probe_adversarial_prob"] == pytest.approx((2 * p_high + p_low) / 3)
    assert result["probe_expected_prob"] == pytest.approx((2 * p_low + p_high) / 3)
    # the mean probability is the expected rate of sampled completions
    generator = torch.Generator().manual_seed(0)
    draws = torch.multinomial(logits[:3].softmax(-1), 20000, replacement=True, generator=generator)
    assert (draws == 1).double().mean().item() == pytest.approx(result["probe_adversarial_prob"], abs=0.01)


def test_no_marked_position_gives_no_values_and_shapes_are_checked():
    assert completion_probe(torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool), 0, 1) == {}
    with pytest.raises(ValueError, match="one flag per position"):
        completion_probe(torch.zeros(3, 4), torch.zeros(2, dtype=torch.bool), 0, 1)
