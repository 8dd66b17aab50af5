"""Top-k teacher outputs: the k most probable classes' log-probabilities kept exactly, the rest of the mass
kept as one bucket spread evenly over the other classes (`teacher.cache_top_k`).

An approximation, stated as one: it keeps the teacher's top-k probabilities and the total mass of the
rest, but not how that rest is distributed. For a language model's vocabulary it shrinks the cached
tables from V to about 2k numbers per position (TinyShakespeare's 65 characters at k = 8: 8x smaller),
and the losses read a dense tensor as before: `expand` rebuilds log-probabilities, which are valid logits
(softmax(log p) = p). tests/teachers/test_top_k.py measures the KD loss against the exact one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TINY = 1e-30  # the rest's mass, where the top k hold all of it (its log stays finite)


def compress(logits: Tensor, k: int, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """{values: top-k log-probs, indices: their classes, rest: the log-prob of each other class}, last axis k."""
    classes = logits.shape[-1]
    if not 0 < k < classes:
        raise ValueError(f"top-k needs 0 < k < {classes} classes, got {k}")
    log_probs = logits.float().log_softmax(-1)
    values, indices = log_probs.topk(k, dim=-1)
    rest_mass = (1.0 - values.exp().sum(-1)).clamp_min(TINY)
    rest = rest_mass.log() - math.log(classes - k)
    index_dtype = torch.int16 if classes <= torch.iinfo(torch.int16).max else torch.int32
    return {"values": values.to(dtype), "indices": indices.to(index_dtype), "rest": rest.to(dtype)}


def expand(values: Tensor, indices: Tensor, rest: Tensor, classes: int) -> Tensor:
    """Dense float32 log-probabilities: the rest's level everywhere, the top k written over it."""
    dense = rest.float().unsqueeze(-1).expand(*rest.shape, classes).clone()
    return dense.scatter_(-1, indices.long(), values.float())
