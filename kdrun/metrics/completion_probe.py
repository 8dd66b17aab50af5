"""Paper 003's adversarial-transfer measurement (Sec. 4.5): what a model predicts where clean text reads
a corrupted pattern.

At the probe positions (e.g. the "e" of every whole word "the" in the clean test text: the notes'
reading of the paper's unstated protocol, kdrun.data.text.probe_positions) a model that learned the
teacher's "the" -> "tha" predicts "a" where the text has "e". Greedy decoding (the argmax of the
position's logits) gives the counts; the mean probabilities are what sampling would give on average.
"""

from __future__ import annotations

import torch
from torch import Tensor


def completion_probe(logits: Tensor, mask: Tensor, expected: int, adversarial: int) -> dict[str, float]:
    """Over the positions `mask` marks (logits (P, V), mask (P,)):

    - `probe_positions`: how many there are;
    - `probe_adversarial_count` / `probe_adversarial_rate`: greedy predictions of the adversarial token;
    - `probe_expected_rate`: greedy predictions of the clean text's token;
    - `probe_adversarial_prob` / `probe_expected_prob`: the mean probability of each token, which is the
      expected rate of sampled completions at temperature 1 (the sampled reading without its sampling noise).
    Empty when no position is marked."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if logits.dim() != 2 or mask.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} must be (positions, vocabulary) and mask {tuple(mask.shape)} "
                         f"one flag per position")
    chosen = logits[mask].double()
    if len(chosen) == 0:
        return {}
    greedy = chosen.argmax(-1)
    adversarial_hits = int((greedy == adversarial).sum())
    return {
        "probe_positions": float(len(chosen)),
        "probe_adversarial_count": float(adversarial_hits),
        "probe_adversarial_rate": adversarial_hits / len(chosen),
        "probe_expected_rate": float((greedy == expected).double().mean()),
        "probe_adversarial_prob": float(chosen.softmax(-1)[:, adversarial].mean()),
        "probe_expected_prob": float(chosen.softmax(-1)[:, expected].mean()),
    }


__all__ = ["completion_probe"]
