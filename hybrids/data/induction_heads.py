"""Induction heads (Olsson et al. 2022; the Mamba paper's section 4.1.2, Table 2): after seeing
``... 1 a ...`` once, answer ``a`` when ``1`` appears again.

One example of length ``seq_len``::

    inputs:  5 9 3 1 7 2 8 ... 4 6 1
    labels:  .                     7        (. = -100)

- content tokens are drawn uniformly from ``[2, vocab_size)`` (token 0 is never used, so it can
  pad); the special token 1 appears exactly twice: once at a random position ``p <= seq_len - 3``,
  followed at ``p + 1`` by the answer (a content token), and again at the last position;
- the only label is at the last position and equals the answer.

The Mamba paper trains at length 256 and evaluates at lengths up to 2^20: a model that has learnt
the mechanism rather than the training length keeps its accuracy (Mamba does; attention with
rotary or learned positions fails beyond about twice the training length).
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError

TRIGGER, FIRST_CONTENT = 1, 2


def check_induction_arguments(seq_len: int, vocab_size: int) -> None:
    """Raise ConfigError naming the argument for settings that give no examples."""
    for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if seq_len < 3:
        raise ConfigError("seq_len", f"must be at least 3 (trigger, answer, trigger again), got {seq_len}")
    if vocab_size <= FIRST_CONTENT:
        raise ConfigError("vocab_size", f"must be at least 3 (pad, trigger and one content token), got {vocab_size}")


def induction_heads(num_examples: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Induction-heads examples (module docstring): (inputs, labels), both (num_examples, seq_len)
    int64. Deterministic by seed."""
    check_induction_arguments(seq_len, vocab_size)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise ConfigError("num_examples", f"must be an integer >= 0, got {num_examples!r}")
    g = torch.Generator().manual_seed(seed)
    n = num_examples
    inputs = torch.randint(FIRST_CONTENT, vocab_size, (n, seq_len), generator=g)
    trigger_at = torch.randint(0, seq_len - 2, (n, 1), generator=g)  # p in [0, seq_len - 3]
    inputs.scatter_(1, trigger_at, TRIGGER)
    inputs[:, -1] = TRIGGER
    answers = inputs.gather(1, trigger_at + 1)  # the content token right after the first trigger
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, -1:] = answers
    return inputs, labels
