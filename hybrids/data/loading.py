"""Data loading that resumes exactly: the training order is a function of the seed and the
epoch, and the position within an epoch is saved in checkpoints.

A plain DataLoader has no state, so a run resumed mid-epoch would start the epoch's batches from
the beginning again. :class:`EpochShuffle` knows how far into its epoch it is and skips what was
already drawn; :class:`ResumableOrder` (a mixin for data modules) puts that position in every
checkpoint through the data module's ``state_dict`` / ``load_state_dict``, which Lightning saves and
restores before it builds the training loader. (Lightning also restores a loader's own
``state_dict``, but only when the loader is built after the restore; ``estimated_stepping_batches``,
which the learning-rate schedule reads, builds it before, and the restore is then skipped.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch, drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` before every epoch, so a resumed run sees the same order in its
    remaining epochs as the uninterrupted run. ``position`` counts the indices drawn in the
    current epoch (the batch sampler draws exactly ``batch_size`` per batch, so at a checkpoint
    it is the batches done times the batch size); after :meth:`load_state_dict`, the next pass
    over the same epoch starts there.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.position = 0
        self._resume: tuple[int, int] | None = None  # (epoch, position) to continue from

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = min(self._resume[1], self.size)
        self._resume = None
        self.position = start
        for index in order[start:]:
            self.position += 1
            yield index

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = (int(state["epoch"]), int(state["position"]))


class ResumableLoader(DataLoader):
    """A DataLoader whose checkpointed state is its :class:`EpochShuffle` sampler's position."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=EpochShuffle(len(dataset), seed), **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class ResumableOrder:
    """Mixin for LightningDataModules whose training loader comes from :meth:`train_loader`: the
    loader's position within its epoch is checkpointed and restored."""

    _train_sampler: EpochShuffle | None = None
    _pending_order: dict[str, Any] | None = None

    def train_loader(self, dataset: Dataset, batch_size: int, seed: int, **kwargs: Any) -> ResumableLoader:
        loader = ResumableLoader(dataset, batch_size, seed, **kwargs)
        self._train_sampler = loader.sampler
        if self._pending_order is not None:
            self._train_sampler.load_state_dict(self._pending_order)
            self._pending_order = None
        return loader

    def state_dict(self) -> dict[str, Any]:
        return {"train_order": self._train_sampler.state_dict()} if self._train_sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state.get("train_order")
        if order is None:
            return
        if self._train_sampler is not None:
            self._train_sampler.load_state_dict(order)
        else:
            self._pending_order = order
