"""The batches of each epoch: random, or grouped by length so a batch pads little.

Both are pure functions of (seed, epoch), so a run resumed at any step draws the same batches as an
uninterrupted one. Length grouping is the usual "bucketed random" sampler: shuffle, cut into mega-batches of
`mega_batches` x batch size, sort each mega-batch by length, cut it into batches, then shuffle the batches.
Every example is in exactly one batch per epoch; only the last batch of an epoch can be smaller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

MEGA_BATCHES = 50


class BatchSampler(Protocol):
    """What the training loop asks of a sampler: the batches (lists of example indices) of one epoch."""

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of `epoch`, in training order."""
        ...

    def describe(self) -> str:
        """A short name for the data order, kept in checkpoints so a resume cannot change it."""
        ...


def _generator(seed: int, epoch: int) -> torch.Generator:
    """The one generator an epoch's order comes from."""
    return torch.Generator().manual_seed(seed + epoch)


@dataclass(frozen=True)
class RandomBatches:
    """Batches of a uniformly shuffled order (the loop's original order)."""

    size: int
    batch_size: int
    seed: int

    def batches(self, epoch: int) -> list[list[int]]:
        """Consecutive slices of a permutation seeded by `seed + epoch`."""
        order = torch.randperm(self.size, generator=_generator(self.seed, epoch)).tolist()
        return [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)]

    def describe(self) -> str:
        """`random`."""
        return "random"


@dataclass(frozen=True)
class LengthGroupedBatches:
    """Batches of similar lengths in random order: sorted within random mega-batches, then shuffled."""

    lengths: Sequence[int]
    batch_size: int
    seed: int
    mega_batches: int = MEGA_BATCHES

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches; the longest first within each mega-batch, batch order shuffled."""
        gen = _generator(self.seed, epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        span = self.batch_size * self.mega_batches
        out: list[list[int]] = []
        for start in range(0, len(order), span):
            group = sorted(order[start : start + span], key=lambda i: -self.lengths[i])  # stable: ties keep order
            out += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        shuffle = torch.randperm(len(out), generator=gen).tolist()
        return [out[i] for i in shuffle]

    def describe(self) -> str:
        """`length-grouped/<mega_batches>`."""
        return f"length-grouped/{self.mega_batches}"


def batch_sampler(size: int, batch_size: int, seed: int, lengths: Sequence[int] | None) -> BatchSampler:
    """Length-grouped batches when the examples' lengths are known, random ones otherwise."""
    if lengths is None:
        return RandomBatches(size, batch_size, seed)
    if len(lengths) != size:
        raise ValueError(f"{len(lengths)} lengths for {size} examples: give one length per example")
    return LengthGroupedBatches(lengths, batch_size, seed)
