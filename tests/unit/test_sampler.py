"""Batch samplers: length grouping pads far less than random order, covers every example once, and is seeded."""

from __future__ import annotations

import pytest
import torch

from langadapt.training.sampler import LengthGroupedBatches, RandomBatches, batch_sampler


def skewed_lengths(n: int = 2000) -> list[int]:
    """Token counts with a long tail, as in tweets and news sentences: most short, a few very long."""
    gen = torch.Generator().manual_seed(3)
    draws = -30 * torch.log(torch.rand(n, generator=gen)) + 5  # exponential, mean 35 tokens
    return [int(x) for x in draws.clamp(max=256)]


def padded_per_real(lengths: list[int], batches: list[list[int]]) -> float:
    """Tokens after padding each batch to its longest row, over real tokens."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return padded / sum(lengths)


@pytest.mark.parametrize("n", [2000, 1601, 7])
def test_every_example_is_in_exactly_one_batch_per_epoch(n: int) -> None:
    lengths = skewed_lengths(n)
    for sampler in (LengthGroupedBatches(lengths, 16, seed=1), RandomBatches(n, 16, seed=1)):
        for epoch in (0, 1):
            batches = sampler.batches(epoch)
            flat = [i for b in batches for i in b]
            assert sorted(flat) == list(range(n))
            assert len(batches) == -(-n // 16)  # the loop's steps per epoch
            assert sum(len(b) < 16 for b in batches) == (1 if n % 16 else 0)


def test_length_grouped_batches_are_homogeneous_unlike_random_ones() -> None:
    lengths = skewed_lengths()
    grouped = LengthGroupedBatches(lengths, 16, seed=0).batches(0)
    shuffled = RandomBatches(len(lengths), 16, seed=0).batches(0)
    assert padded_per_real(lengths, grouped) < 1.1
    assert padded_per_real(lengths, shuffled) > 1.8
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped]
    assert sorted(spread)[len(spread) // 2] <= 2  # the median batch is within two tokens


def test_batch_order_is_shuffled_not_sorted() -> None:
    lengths = skewed_lengths()
    longest = [max(lengths[i] for i in b) for b in LengthGroupedBatches(lengths, 16, seed=0).batches(0)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_same_seed_and_epoch_give_the_same_batches_others_differ() -> None:
    lengths = skewed_lengths()
    first = LengthGroupedBatches(lengths, 16, seed=5)
    again = LengthGroupedBatches(list(lengths), 16, seed=5)
    assert first.batches(2) == again.batches(2)
    assert first.batches(2) != first.batches(3)
    assert first.batches(2) != LengthGroupedBatches(lengths, 16, seed=6).batches(2)


def test_a_resumed_run_draws_the_remaining_batches_of_its_epoch() -> None:
    lengths = skewed_lengths(1000)
    uninterrupted = LengthGroupedBatches(lengths, 16, seed=9).batches(1)
    seen = uninterrupted[:23]  # a run killed after step 23 of epoch 1
    resumed = LengthGroupedBatches(lengths, 16, seed=9).batches(1)[23:]  # a new process resumes at step 23
    assert seen + resumed == uninterrupted
    assert sorted(i for b in seen + resumed for i in b) == list(range(1000))


def test_random_batches_are_the_loops_original_order() -> None:
    order = torch.randperm(50, generator=torch.Generator().manual_seed(42 + 3)).tolist()
    assert RandomBatches(50, 8, seed=42).batches(3) == [order[i : i + 8] for i in range(0, 50, 8)]


def test_lengths_must_match_the_examples() -> None:
    assert isinstance(batch_sampler(10, 4, 0, None), RandomBatches)
    assert isinstance(batch_sampler(3, 4, 0, [1, 2, 3]), LengthGroupedBatches)
    with pytest.raises(ValueError, match="one length per example"):
        batch_sampler(10, 4, 0, [1, 2, 3])
