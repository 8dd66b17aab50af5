"""The DataLoader path's sampler: an epoch's order is a pure function of (order seed, epoch), sharded by rank.

Lightning calls `set_epoch` before every training epoch, so a run resumed at an epoch boundary
replays exactly the batches of an uninterrupted run (a generator seeded once would restart at
epoch 0's order). The permutation (`epoch_permutation`) is the in-memory path's too, so both paths
give the same batches.

With several ranks each takes every `num_replicas`-th sample of the permutation (rank r:
positions r, r+W, ...): with a per-rank batch of B/W the union of the ranks' k-th batches is the
one-process run's k-th batch of B. Training pads the permutation by repeating its start so every
rank has as many batches (DDP steps in lockstep); evaluation does not pad, so metrics reduced
across ranks count every sample once.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler



def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a pure function of (seed, epoch), so any epoch can be replayed."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0]
    return torch.randperm(size, generator=torch.Generator().manual_seed(int(state)))


class EpochSeededSampler(Sampler[int]):
    def __init__(self, size: int, order_seed: int | None = None, num_replicas: int = 1, rank: int = 0,
                 pad: bool = True, keyed: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.size, self.order_seed = int(size), order_seed
        self.num_replicas, self.rank, self.pad = int(num_replicas), int(rank), pad
        self.keyed = keyed  # yield (position, epoch): the key of a sample's view (kdrun.data.views)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.pad:
            return -(-self.size // self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        order = (torch.arange(self.size) if self.order_seed is None
                 else epoch_permutation(self.size, self.order_seed, self.epoch))
        if self.num_replicas > 1 and self.pad:
            total = len(self) * self.num_replicas
            order = order.repeat(-(-total // max(self.size, 1)))[:total]
        positions = order[self.rank::self.num_replicas].tolist()
        if self.keyed:
            return iter([(position, self.epoch) for position in positions])
        return iter(positions)
