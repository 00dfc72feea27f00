"""MAD's memorization (mad-lab ``generate_kv_map`` and ``generate_memorization_instance``): a fixed
key-value map that the model must store in its weights.

The map: keys ``[0, (vocab_size - 1) // 2)`` and values ``[(vocab_size - 1) // 2, vocab_size - 1)``,
each list shuffled by ``map_seed`` and paired in order, so every key has one value and no two keys
share one. It is the same for the training, validation and test sets (they differ in which keys
they ask, and in what order): this is a task of facts, not of context.

One example of ``seq_len`` tokens is ``seq_len / 2`` slots ``key, INSERT`` (the insert token is
``vocab_size - 1``), each key drawn uniformly with replacement among the map's keys; the label of
an insert token is its key's value, every other label is -100 (no shift, as mad-lab: the model
reads the key and the insert token, and outputs the value). With few training examples and a large
vocabulary some keys are never shown in training (MAD's setting at vocabulary 8,192: about 63% are
shown): accuracy on those is chance, by design.
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError


def check_memorization_arguments(seq_len: int, vocab_size: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2 or seq_len % 2:
        raise ConfigError("seq_len", f"must be an even integer >= 2 (key, insert token slots), got {seq_len!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
        raise ConfigError("vocab_size", f"must be an integer >= 3 (a key, a value and the insert token), got {vocab_size!r}")


def kv_map(vocab_size: int, map_seed: int) -> torch.Tensor:
    """The value of every key: (num_keys,) int64, ``num_keys = (vocab_size - 1) // 2``."""
    g = torch.Generator().manual_seed(map_seed)
    half = (vocab_size - 1) // 2
    keys = torch.randperm(half, generator=g)
    values = half + torch.randperm(vocab_size - 1 - half, generator=g)
    table = torch.empty(half, dtype=torch.long)
    table[keys] = values[:half]
    return table


def memorization(num_examples: int, seq_len: int, vocab_size: int, map_seed: int, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's memorization (module docstring): (inputs, labels), both (num_examples, seq_len) int64.
    Deterministic by (map_seed, seed)."""
    check_memorization_arguments(seq_len, vocab_size)
    table = kv_map(vocab_size, map_seed)
    g = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, table.numel(), (num_examples, seq_len // 2), generator=g)
    inputs = torch.full((num_examples, seq_len), vocab_size - 1, dtype=torch.long)
    inputs[:, 0::2] = keys
    labels = torch.full((num_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, 1::2] = table[keys]
    return inputs, labels
