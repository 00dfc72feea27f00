"""Selective copying (Mamba, Gu & Dao 2023, section 4.1.1; Table 1): remember content tokens
scattered among noise, then reproduce them in order when asked.

One example of length ``seq_len`` with ``num_tokens = 3``::

    inputs:  0 0 7 0 0 0 4 0 0 9 0 0 | 1 1 1
    labels:  .                .      | 7 4 9        (. = -100)
             \\__ seq_len - num_tokens __/ \\_ markers _/

- token 0 is noise, token 1 the marker, content tokens come from ``[2, vocab_size)``;
- ``selective=True``: the content tokens stand at distinct random positions of the first
  ``seq_len - num_tokens`` (in order of position); ``selective=False`` puts them at positions
  ``0 .. num_tokens - 1`` (the plain copying task, which a time-invariant convolution can solve);
- the last ``num_tokens`` inputs are markers, and their labels are the content tokens in the
  order they appeared; every other label is -100.

Labels are already shifted, as in every task here: ``labels[t]`` is what the model must output
after reading ``inputs[: t + 1]``, so the first marker is answered with the first content token.
A time-invariant model (S4D) cannot know where the content stood; a selective one (Mamba) can
decide, token by token, what to keep.
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError

NOISE, MARKER, FIRST_CONTENT = 0, 1, 2


def check_selective_copying_arguments(seq_len: int, num_tokens: int, vocab_size: int) -> None:
    """Raise ConfigError naming the argument for settings that give no examples."""
    for name, value in (("seq_len", seq_len), ("num_tokens", num_tokens), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if 2 * num_tokens > seq_len:
        raise ConfigError("seq_len", f"{seq_len} is too short for num_tokens={num_tokens}: need seq_len >= 2 * num_tokens")
    if vocab_size <= FIRST_CONTENT:
        raise ConfigError("vocab_size", f"must be at least 3 (noise, marker and one content token), got {vocab_size}")


def selective_copying(
    num_examples: int,
    seq_len: int,
    num_tokens: int,
    vocab_size: int,
    seed: int = 0,
    selective: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective-copying examples (module docstring): (inputs, labels), both
    (num_examples, seq_len) int64. Deterministic by seed."""
    check_selective_copying_arguments(seq_len, num_tokens, vocab_size)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise ConfigError("num_examples", f"must be an integer >= 0, got {num_examples!r}")
    g = torch.Generator().manual_seed(seed)
    region = seq_len - num_tokens  # where the content may stand
    n = num_examples
    content = torch.randint(FIRST_CONTENT, vocab_size, (n, num_tokens), generator=g)
    if selective:
        # Distinct positions: the first num_tokens of a random permutation, put in order.
        positions = torch.rand(n, region, generator=g).argsort(dim=1)[:, :num_tokens].sort(dim=1).values
    else:
        positions = torch.arange(num_tokens).expand(n, num_tokens)
    inputs = torch.full((n, seq_len), NOISE, dtype=torch.long)
    inputs.scatter_(1, positions, content)
    inputs[:, region:] = MARKER
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, region:] = content
    return inputs, labels
