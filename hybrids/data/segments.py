"""Segment mode: each document read as consecutive segments by one batch slot, in order.

Transformer-XL and the Memorizing Transformer train on long documents this way: slot b of batch
i + 1 holds the segment of slot b's document that follows the one in batch i, so a model that
carries a state (or a memory) per slot from batch to batch reads every document from its start.
A slot that finishes its document takes the next one in the list; the batch then marks the slot
``first`` (the model resets its state there). Slots with nothing left read padding (labels -100,
marked ``first``) until the longest slot is done, so that every byte of every document is read
exactly once.
"""

from __future__ import annotations

import heapq
import math

import torch
from torch.utils.data import Dataset

from hybrids.data.labels import IGNORE_INDEX


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

    Documents go to slots in list order, each to the slot that has read the fewest segments so
    far (the slot that frees first).
    """

    def __init__(self, streams: list[torch.Tensor], seq_len: int, batch_size: int, pad: int, ignore: int | None = None):
        self.streams, self.seq_len, self.batch_size = streams, seq_len, batch_size
        self.pad, self.ignore = pad, ignore
        self.slots: list[list[tuple[int, int]]] = [[] for _ in range(batch_size)]  # (document, segment)
        free = [(0, b) for b in range(batch_size)]  # (segments so far, slot): a heap
        for d, stream in enumerate(streams):
            n = math.ceil((len(stream) - 1) / seq_len) if len(stream) > 1 else 0
            if n == 0:
                continue
            used, b = heapq.heappop(free)
            self.slots[b].extend((d, j) for j in range(n))
            heapq.heappush(free, (used + n, b))
        self.length = max((len(s) for s in self.slots), default=0)

    def __len__(self) -> int:
        return self.length

    def tokens(self) -> int:
        """Labelled positions in all (what an epoch predicts)."""
        return sum(len(s) - 1 for s in self.streams if len(s) > 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        t = self.seq_len
        inputs = torch.full((self.batch_size, t), self.pad, dtype=torch.int64)
        labels = torch.full((self.batch_size, t), IGNORE_INDEX, dtype=torch.int64)
        first = torch.ones(self.batch_size, dtype=torch.bool)
        for b, slot in enumerate(self.slots):
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
