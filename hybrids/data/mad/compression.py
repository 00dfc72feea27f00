"""MAD's compression (mad-lab ``generate_compression_instance``): a random sequence folded into one
compression token and reconstructed from it.

One example of ``seq_len`` tokens: ``seq_len - 1`` tokens drawn uniformly with replacement from
``[0, vocab_size - 1)``, then the compression token ``vocab_size - 1``. The labels are the inputs
themselves, every position (the compression token's included, as mad-lab's): the task is an
auto-encoder, read through the stack's ``readout: last``
(:mod:`hybrids.model.readout`), whose decoder sees only the last position's hidden state. A
model scored as a language model on these labels would read the answer in its input; the data
module therefore asks for that readout, and ``hybrids fit`` refuses a stack without it.
"""

from __future__ import annotations

import torch

from hybrids.errors import ConfigError


def check_compression_arguments(seq_len: int, vocab_size: int) -> None:
    for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ConfigError(name, f"must be an integer >= 2, got {value!r}")


def compression(num_examples: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's compression (module docstring): (inputs, labels), both (num_examples, seq_len) int64,
    labels equal to inputs. Deterministic by seed."""
    check_compression_arguments(seq_len, vocab_size)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size - 1, (num_examples, seq_len), generator=g)
    tokens[:, -1] = vocab_size - 1
    return tokens, tokens.clone()
