"""A teacher's cached logits (kdrun.teachers.cached_outputs) inside a training module, looked up by sample index.

Non-persistent buffers: they follow the module to its device and stay out of checkpoints. A split cached as
a top-k table (kdrun.teachers.top_k) is three tensors (values, indices, rest) and is expanded to dense
log-probabilities on lookup.
"""

from __future__ import annotations

import torch
from torch import nn

from kdrun.teachers.top_k import expand as expand_top_k

TOP_K_PARTS = ("values", "indices", "rest")


class TeacherTables(nn.Module):
    def __init__(self, tables: dict[str, torch.Tensor | dict[str, torch.Tensor]] | None, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.splits = sorted(tables or {})
        self.top_k_splits = {split for split, table in (tables or {}).items() if isinstance(table, dict)}
        for split, table in (tables or {}).items():
            for part, tensor in (table.items() if isinstance(table, dict) else [("logits", table)]):
                self.register_buffer(f"{split}_{part}", tensor, persistent=False)

    def __contains__(self, split: str) -> bool:
        return split in self.splits

    def lookup(self, split: str, index: torch.Tensor) -> torch.Tensor:
        """The teacher's float32 logits (or log-probabilities of a top-k table) of the samples `index`."""
        if split in self.top_k_splits:  # teacher.cache_top_k: dense log-probabilities again
            return expand_top_k(*(getattr(self, f"{split}_{part}")[index] for part in TOP_K_PARTS), self.num_classes)
        return getattr(self, f"{split}_logits")[index].float()  # stored as teacher.cache_dtype
