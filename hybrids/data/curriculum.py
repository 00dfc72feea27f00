"""Length curricula for the synthetic tasks: training examples of several lengths, validation and
test at the task's ``seq_len``.

A model that has to find a rare event in long sequences from scratch (induction heads at 256
tokens: one trigger pair among 256 positions) can see a flat loss for thousands of steps, while
the same model trained first on short sequences learns the mechanism quickly and then carries it
to the longer ones (issue 27: attention reaches 1.000 at length 64 in 750 steps and, warm-started
from there, 0.990 at length 256 in 400). Two schedules, chosen by the data module's arguments:

- **stages** (``train_lengths: [64, 256]``, ``length_steps: [750]``): every batch before step 750
  has length 64, every batch from step 750 on length 256; ``length_steps`` holds one boundary
  fewer than there are lengths, increasing;
- **mix** (``train_lengths: [64, 128, 256]``, no ``length_steps``): each batch has one length,
  drawn uniformly at random for that batch (from the order seed and the epoch).

Each batch holds examples of one length (no padding). The training examples are split evenly
between the lengths (``num_train_examples // len(train_lengths)`` each, the remainder to the
first), drawn from ``derive_seed(seed, "train", length)``; an epoch is still
``ceil(num_train_examples / batch_size)`` batches, so budgets in steps and epochs keep their
meaning. Steps here count training batches: optimiser steps, unless gradients are accumulated.

Within one length, examples are taken in the order of a fresh permutation of that length's
examples each time they have all been used, so short and long examples are each seen evenly.
The order is a function of the order seed and the batch number alone: a run resumed mid-epoch
(:class:`~hybrids.data.loading.ResumableOrder`) gets the same batches as the uninterrupted run.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from hybrids.data.loading import EpochShuffle
from hybrids.errors import ConfigError


def check_curriculum(train_lengths: Sequence[int] | None, length_steps: Sequence[int] | None) -> None:
    """ConfigError naming ``train_lengths`` or ``length_steps`` for a schedule that cannot be run."""
    if train_lengths is None:
        if length_steps is not None:
            raise ConfigError("length_steps", "needs train_lengths (the lengths the steps switch between)")
        return
    if not isinstance(train_lengths, (list, tuple)) or not train_lengths:
        raise ConfigError("train_lengths", f"must be a non-empty list of lengths, got {train_lengths!r}")
    for length in train_lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError("train_lengths", f"each must be a positive integer, got {length!r}")
    if len(set(train_lengths)) != len(train_lengths):
        raise ConfigError("train_lengths", f"repeated length in {list(train_lengths)}")
    if length_steps is None:
        return
    if not isinstance(length_steps, (list, tuple)) or len(length_steps) != len(train_lengths) - 1:
        raise ConfigError("length_steps", f"must list {len(train_lengths) - 1} step(s), where each length after the "
                          f"first begins (or leave it out to mix the lengths), got {length_steps!r}")
    for step in length_steps:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ConfigError("length_steps", f"each must be a step >= 1, got {step!r}")
    if any(b <= a for a, b in zip(length_steps, length_steps[1:])):
        raise ConfigError("length_steps", f"must increase, got {list(length_steps)}")


def pool_sizes(num_examples: int, lengths: int) -> list[int]:
    """Training examples per length: an even split, the remainder to the first."""
    share = num_examples // lengths
    return [num_examples - share * (lengths - 1)] + [share] * (lengths - 1)


class LengthBatches(Dataset):
    """The training set of a curriculum: per length, (inputs, labels) of shape (n_i, L_i). Item
    ``(i, indices)`` is the batch of length ``i``'s examples at ``indices``; load it with
    ``DataLoader(..., batch_size=None, sampler=CurriculumOrder(...))``."""

    def __init__(self, sets: Sequence[tuple[torch.Tensor, torch.Tensor]], batches_per_epoch: int) -> None:
        self.sets, self.batches_per_epoch = list(sets), batches_per_epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        length, indices = item
        inputs, labels = self.sets[length]
        return inputs[indices], labels[indices]


class CurriculumOrder(EpochShuffle):
    """The batches of a curriculum in order (module docstring): epoch ``e`` yields batches
    ``e * batches_per_epoch`` to ``(e + 1) * batches_per_epoch - 1``, each as (length index,
    example indices). Resumable as :class:`EpochShuffle` is (positions count batches)."""

    def __init__(self, pools: Sequence[int], batch_size: int, batches_per_epoch: int, seed: int,
                 length_steps: Sequence[int] | None = None) -> None:
        super().__init__(batches_per_epoch, seed)
        self.pools, self.batch_size = list(pools), batch_size
        self.length_steps = list(length_steps) if length_steps is not None else None

    def lengths_of_epoch(self, epoch: int) -> list[int]:
        """The length index of each batch of ``epoch``."""
        first = epoch * self.size
        if self.length_steps is not None:
            return [bisect.bisect_right(self.length_steps, k) for k in range(first, first + self.size)]
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * (epoch + 1))
        return torch.randint(len(self.pools), (self.size,), generator=generator).tolist()

    def _permutation(self, length: int, cycle: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 7919 + 104_729 * length + cycle)
        return torch.randperm(self.pools[length], generator=generator)

    def batches_of_epoch(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        """Every batch of ``epoch``: (length index, example indices)."""
        used = [0] * len(self.pools)  # examples of each length taken before this epoch
        for earlier in range(epoch):
            for length in self.lengths_of_epoch(earlier):
                used[length] += self.batch_size
        batches, permutations = [], {}  # (length, pass) -> that pass's order, drawn once per epoch
        for length in self.lengths_of_epoch(epoch):
            batches.append((length, self._take(length, used[length], permutations)))
            used[length] += self.batch_size
        return batches

    def _take(self, length: int, start: int, permutations: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        """Examples ``start`` to ``start + batch_size`` of length ``length``'s stream: its examples
        in a fresh permutation per pass (a batch larger than the pool takes the whole pool)."""
        pool = self.pools[length]
        count = min(self.batch_size, pool)
        start = start // self.batch_size * count  # whole batches, each of `count` examples
        pieces, position = [], start
        while position < start + count:
            cycle, offset = divmod(position, pool)
            if (length, cycle) not in permutations:
                permutations[length, cycle] = self._permutation(length, cycle)
            permutation = permutations[length, cycle]
            take = min(pool - offset, start + count - position)
            pieces.append(permutation[offset:offset + take])
            position += take
        return torch.cat(pieces)

    def __iter__(self):
        batches = self.batches_of_epoch(self.epoch)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = min(self._resume[1], self.size)
        self._resume = None
        return iter(batches[start:])
