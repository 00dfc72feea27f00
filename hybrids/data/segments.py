"""Segment mode: each document read as consecutive segments by one batch slot, in order.

Transformer-XL and the Memorizing Transformer train on long documents this way: slot b of batch
i + 1 holds the segment of slot b's document that follows the one in batch i, so a model that
carries a state (or a memory) per slot from batch to batch reads every document from its start.
A slot that finishes its document takes the next one in the list; the batch then marks the slot
``first`` (the model resets its state there). Slots with nothing left read padding (labels -100,
marked ``first``) until the longest slot is done, so that every byte of every document is read
exactly once.

For training, ``shuffle_seed`` draws a new order of the documents every epoch (from
``shuffle_seed + epoch``), so that slots, segments and which documents a limited epoch reaches
change from epoch to epoch; states are reset at every epoch start anyway. The items are then
keyed ``(epoch, batch)``, and :class:`SegmentOrder` is the sampler that hands them out.
"""

from __future__ import annotations

import heapq
import math

import torch
from torch.utils.data import Dataset

from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.loading import EpochShuffle


class SegmentBatches(Dataset):
    """Item ``i`` is batch ``i``: ``(inputs, labels, first)``, (batch_size, seq_len) int64 twice
    and (batch_size,) bool.

    Args:
        streams: one int token stream per document, (n,) each; a document of n tokens gives
            ``ceil((n - 1) / seq_len)`` segments (inputs ``stream[j T : (j + 1) T]``, labels one
            token on), the last padded with ``pad`` inputs and -100 labels.
        seq_len: tokens per segment.
        batch_size: slots.
        pad: the input token of padding.
        ignore: a label equal to it becomes -100 (e.g. a document boundary token).
        shuffle_seed: None reads the documents in list order every time; an int draws each
            epoch's order from ``shuffle_seed + epoch`` (items keyed ``(epoch, batch)``).

    Documents go to slots in order, each to the slot that has read the fewest segments so far
    (the slot that frees first).
    """

    def __init__(
        self, streams: list[torch.Tensor], seq_len: int, batch_size: int, pad: int, ignore: int | None = None,
        shuffle_seed: int | None = None,
    ):
        self.streams, self.seq_len, self.batch_size = streams, seq_len, batch_size
        self.pad, self.ignore, self.shuffle_seed = pad, ignore, shuffle_seed
        self._cached: tuple[int, list[list[tuple[int, int]]]] | None = None
        self.slots = self.slots_of(0)

    def slots_of(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Per slot, the (document, segment) pairs it reads in ``epoch``, batch by batch."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        order = list(range(len(self.streams)))
        if self.shuffle_seed is not None:
            generator = torch.Generator().manual_seed(self.shuffle_seed + epoch)
            order = torch.randperm(len(self.streams), generator=generator).tolist()
        slots: list[list[tuple[int, int]]] = [[] for _ in range(self.batch_size)]
        free = [(0, b) for b in range(self.batch_size)]  # (segments so far, slot): a heap
        for d in order:
            stream = self.streams[d]
            n = math.ceil((len(stream) - 1) / self.seq_len) if len(stream) > 1 else 0
            if n == 0:
                continue
            used, b = heapq.heappop(free)
            slots[b].extend((d, j) for j in range(n))
            heapq.heappush(free, (used + n, b))
        self._cached = (epoch, slots)
        return slots

    def batches(self, epoch: int = 0) -> int:
        """Batches in ``epoch`` (the longest slot's segments)."""
        return max((len(s) for s in self.slots_of(epoch)), default=0)

    def __len__(self) -> int:
        return self.batches(0)

    def tokens(self) -> int:
        """Labelled positions in all (what an epoch predicts)."""
        return sum(len(s) - 1 for s in self.streams if len(s) > 1)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        slots = self.slots_of(epoch)
        if not 0 <= i < self.batches(epoch):
            raise IndexError(key)
        t = self.seq_len
        inputs = torch.full((self.batch_size, t), self.pad, dtype=torch.int64)
        labels = torch.full((self.batch_size, t), IGNORE_INDEX, dtype=torch.int64)
        first = torch.ones(self.batch_size, dtype=torch.bool)
        for b, slot in enumerate(slots):
            if i >= len(slot):
                continue  # padding: a finished slot
            d, j = slot[i]
            window = self.streams[d][j * t : (j + 1) * t + 1].long()
            n = len(window) - 1
            inputs[b, :n] = window[:-1]
            labels[b, :n] = window[1:]
            first[b] = j == 0
        if self.ignore is not None:
            labels[labels == self.ignore] = IGNORE_INDEX
        return inputs, labels, first


class SegmentOrder(EpochShuffle):
    """The training sampler of segment mode: batch keys ``(epoch, i)`` of a
    :class:`SegmentBatches` in order, ``i = 0, 1, ...``, resumable mid-epoch like
    :class:`~hybrids.data.loading.EpochShuffle` (whose epoch bookkeeping it shares)."""

    def __init__(self, batches: SegmentBatches) -> None:
        super().__init__(len(batches), seed=0, shuffle=False)
        self.data = batches

    def __iter__(self):
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        epoch = self.epoch
        return iter([(epoch, i) for i in range(start, self.data.batches(epoch))])

    def __len__(self) -> int:
        return self.data.batches(self.epoch)
