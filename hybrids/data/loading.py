"""Data loading that resumes exactly: the training order is a function of the seed and the
epoch, and the position within an epoch is saved in checkpoints.

A plain DataLoader has no state, so a run resumed mid-epoch would start the epoch's batches from
the beginning again. :class:`EpochShuffle` draws each epoch's order from ``seed + epoch`` and,
told where to resume, skips what was already trained on; :class:`ResumableOrder` (a mixin for
data modules) puts that position in every checkpoint through the data module's ``state_dict`` /
``load_state_dict``, which Lightning saves and restores before it builds the training loader.

The position is read from the trainer's own count of the batches it has trained on in the
epoch, times the batch size and the number of processes, not from what the sampler has handed
out: DataLoader workers (``num_workers > 0``) fetch ahead, so the sampler is always further on
than the model. The loader stays a plain ``DataLoader`` with this sampler, so that Lightning can
wrap the sampler for distributed training (each process then takes its share of the remaining
order).

torchdata's ``StatefulDataLoader`` was tried instead and not taken: it restores its position
before Lightning sets the epoch (a checkpoint in the middle of epoch 1 replayed epoch 0's order)
and skipped a whole epoch after a checkpoint at an epoch's end (docs/cli.md, "Exact resumption").
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch, drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` before every epoch, so a resumed run sees the same order in its
    remaining epochs as the uninterrupted run. After :meth:`resume_at`, the next pass over that
    epoch starts at the given index of its order.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.epoch, self.shuffle = size, seed, 0, shuffle
        self._resume: tuple[int, int] | None = None  # (epoch, indices already trained on)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, position: int) -> None:
        # The epoch too: with DataLoader workers the loader draws its first indices as soon as
        # its iterator exists, which Lightning creates before it calls set_epoch for the
        # resumed epoch.
        self._resume = (int(epoch), int(position))
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist() if self.shuffle else list(range(self.size))
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = min(self._resume[1], self.size)
        self._resume = None
        return iter(order[start:])

    def __len__(self) -> int:
        return self.size


class ResumableOrder:
    """Mixin for LightningDataModules whose training loader comes from :meth:`train_loader`: the
    position within the epoch is checkpointed and restored (module docstring)."""

    _train_sampler: EpochShuffle | None = None
    _pending_order: tuple[int, int] | None = None

    def train_loader(
        self, dataset: Dataset, batch_size: int | None, seed: int, sampler: EpochShuffle | None = None, **kwargs: Any
    ) -> DataLoader:
        """``batch_size=None``: the dataset's items are batches already. ``sampler``: another
        resumable order than a fresh permutation per epoch (it counts items, i.e. batches then)."""
        self._train_sampler = EpochShuffle(len(dataset), seed) if sampler is None else sampler
        self._train_batch_size = batch_size or 1
        if self._pending_order is not None:
            self._train_sampler.resume_at(*self._pending_order)
            self._pending_order = None
        return DataLoader(dataset, batch_size=batch_size, sampler=self._train_sampler, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if self._train_sampler is None or trainer is None:
            return {}
        # Batches of this epoch the model has trained on (Lightning's count, not the sampler's).
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        position = done * self._train_batch_size * max(1, trainer.world_size)
        return {"train_order": {"epoch": trainer.current_epoch, "position": position}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state.get("train_order")
        if order is None:
            return
        resume = (int(order["epoch"]), int(order["position"]))
        if self._train_sampler is not None:
            self._train_sampler.resume_at(*resume)
        else:
            self._pending_order = resume
