"""MAD's selective copying (mad-lab ``generate_selective_copying_instance``).

Vocabulary: content tokens ``[0, vocab_size - 2)``, the blank ``vocab_size - 2``, the copy token
``vocab_size - 1``. One example of ``seq_len`` tokens with n = ``num_tokens`` to copy::

    c1 _ _ c2 c3 _ _ _ c4 | COPY | _ _ _ _
    \\__ n content tokens and seq_len - 2n - 1 blanks __/        \\ n blanks: answered c1 .. cn

- the n content tokens are drawn uniformly with replacement;
- each of the ``seq_len - 2n - 1`` blanks goes before a content token drawn uniformly (the law of
  mad-lab's ``np.insert`` at uniform positions), so the last content token stands right before
  the copy token;
- the copy token, then n blanks; the labels of those n blanks are the content tokens in order,
  every other label is -100.

Labels are not shifted by one here, as in mad-lab: ``labels[t]`` is still what the model must
output after reading ``inputs[: t + 1]``, and the first blank after the copy token (not the copy
token itself) is answered with the first content token. From the zoo's
:mod:`hybrids.data.selective_copying` (Mamba's version) it differs in the layout (content at
uniform random positions there, blanks clustered before content tokens here; markers answered
from the first marker there, from the token after the copy token here) and the vocabulary.
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError


def check_mad_copying_arguments(seq_len: int, num_tokens: int, vocab_size: int) -> None:
    """ConfigError naming the argument, for settings that give no examples."""
    for name, value in (("seq_len", seq_len), ("num_tokens", num_tokens), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if seq_len < 2 * num_tokens + 1:
        raise ConfigError("seq_len", f"{seq_len} is too short for num_tokens={num_tokens}: need seq_len >= 2 * num_tokens + 1")
    if vocab_size < 3:
        raise ConfigError("vocab_size", f"must be at least 3 (a content token, the blank and the copy token), got {vocab_size}")


def mad_selective_copying(num_examples: int, seq_len: int, num_tokens: int, vocab_size: int,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's selective copying (module docstring): (inputs, labels), both (num_examples, seq_len)
    int64. Deterministic by seed."""
    check_mad_copying_arguments(seq_len, num_tokens, vocab_size)
    g = torch.Generator().manual_seed(seed)
    n, k = num_examples, num_tokens
    blank, copy = vocab_size - 2, vocab_size - 1
    blanks = seq_len - 2 * k - 1
    content = torch.randint(0, vocab_size - 2, (n, k), generator=g)
    before = torch.randint(0, k, (n, blanks), generator=g)  # the content token each blank precedes
    gaps = torch.zeros(n, k, dtype=torch.long).scatter_add_(1, before, torch.ones_like(before))
    positions = gaps.cumsum(dim=1) + torch.arange(k)  # content token i follows all blanks before it
    inputs = torch.full((n, seq_len), blank, dtype=torch.long)
    inputs.scatter_(1, positions, content)
    inputs[:, seq_len - k - 1] = copy
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, seq_len - k:] = content
    return inputs, labels
