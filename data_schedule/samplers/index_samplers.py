"""Index samplers for the data loader.

``TrainingSampler`` yields an endless, seeded stream: epoch ``e`` is ``randperm(len, seed + e)``, the epochs are
concatenated and rank ``r`` of ``W`` takes stream positions ``r, r + W, r + 2W, ...``. Each item is a pair
``(stream_position, dataset_index)``: the mapper seeds its augmentation from the stream position, so a sample's
augmentation does not depend on worker count or on where a run was resumed. Its state is one integer, the number
of items this rank has consumed (``iteration × per-rank batch``), stored in checkpoints.
With W processes and per-process batch b, the union of one step's batches equals the single-process batch of
W·b (same positions, same augmentations).

``InferenceSampler`` splits ``range(len)`` into contiguous shards, one per rank, without padding: every
evaluation sample is seen exactly once.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class TrainingSampler(Sampler):
    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def stream_position(self, consumed: int) -> int:
        """Global stream position of this rank's ``consumed``-th item."""
        return consumed * self.world_size + self.rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        consumed = self.start
        perm, perm_epoch = None, -1
        while True:
            pos = self.stream_position(consumed)
            epoch, offset = divmod(pos, self.size)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(self.seed + epoch)
                perm, perm_epoch = torch.randperm(self.size, generator=g).tolist(), epoch
            yield pos, perm[offset]
            consumed += 1


class InferenceSampler(Sampler):
    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        shard = (size + world_size - 1) // world_size if world_size else size
        self.indices = list(range(min(size, rank * shard), min(size, (rank + 1) * shard)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
