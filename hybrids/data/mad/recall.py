"""MAD's in-context recall and noisy in-context recall (Poli et al. 2024, the mad-lab generators),
multi-query, as its benchmark runs them.

One example is ``seq_len / 2`` key-value pairs::

    k v k v k v  n n  k v ... k v | k* v*
    \\____ P - 1 slots: a pair, or (noisy) two noise tokens ____/ \\ the probe: a key seen before

- vocabulary: with ``N = vocab_size - noise_vocab_size``, keys are ``[0, N // 2)``, values
  ``[N // 2, N)``, noise tokens ``[N, vocab_size)``;
- every slot but the last is a pair, or (probability ``frac_noise``) two noise tokens drawn with
  replacement; one slot, drawn uniformly, is always a pair;
- keys are drawn uniformly with replacement; each key's value is drawn uniformly (with
  replacement: two keys may share one) and kept for the whole example;
- the last slot asks a key drawn uniformly among the distinct keys shown, and its value;
- scored: a value whose key appeared earlier in the example (its first appearance cannot be
  known), and the probe's value. ``labels="all"`` instead labels every next token, as MAD's
  training sets do (its models learn the whole stream; only the scored positions are evaluated).

Labels are shifted as in every task here: ``labels[t]`` is what the model must output after
reading ``inputs[: t + 1]``. The inputs are the ``seq_len`` tokens; the last, the probe's value,
has no label (MAD's examples are ``seq_len - 1`` tokens long: the same scored positions).

Differences from mad-lab, decided here: the always-a-pair slot is drawn among the first
``P - 1`` slots (mad-lab may draw the probe's slot, leaving the context possibly all noise);
the examples of each set come from their own seed (mad-lab's test set continues the training
set's random stream). From the zoo's MQAR (:mod:`hybrids.data.mqar`) this differs in every way
that matters: MQAR shows distinct keys once and asks each again later at power-law gaps, over a
large vocabulary; here a small vocabulary repeats keys throughout, and every repeat is a query.
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError

LABELS = ("scored", "all")


def check_recall_arguments(seq_len: int, vocab_size: int, noise_vocab_size: int = 0, frac_noise: float = 0.0) -> None:
    """ConfigError naming the argument, for settings that give no examples."""
    for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if seq_len % 2 or seq_len < 4:
        raise ConfigError("seq_len", f"must be even and at least 4 (key-value pairs, then the probe), got {seq_len}")
    if isinstance(noise_vocab_size, bool) or not isinstance(noise_vocab_size, int) or noise_vocab_size < 0:
        raise ConfigError("noise_vocab_size", f"must be an integer >= 0, got {noise_vocab_size!r}")
    if vocab_size - noise_vocab_size < 2:
        raise ConfigError("vocab_size", f"{vocab_size} leaves fewer than 2 tokens for keys and values "
                          f"beside noise_vocab_size={noise_vocab_size}")
    if isinstance(frac_noise, bool) or not isinstance(frac_noise, (int, float)) or not 0 <= frac_noise < 1:
        raise ConfigError("frac_noise", f"must be in [0, 1), got {frac_noise!r}")
    if frac_noise > 0 and noise_vocab_size == 0:
        raise ConfigError("noise_vocab_size", f"must be positive for frac_noise={frac_noise} (noise needs tokens)")


def check_labels(labels: str) -> None:
    if labels not in LABELS:
        raise ConfigError("labels", f"must be one of {LABELS}, got {labels!r}")


def first_occurrences(keys: torch.Tensor) -> torch.Tensor:
    """keys (n, P) int -> (n, P) bool: whether each entry is the first occurrence of its key in
    its row."""
    n, P = keys.shape
    position = torch.arange(P).expand(n, P)
    order = torch.argsort(keys * P + position, dim=1)  # by key, then position: stable by construction
    ordered = keys.gather(1, order)
    first_sorted = torch.ones_like(ordered, dtype=torch.bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return torch.zeros_like(first_sorted).scatter(1, order, first_sorted)


def in_context_recall(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    seed: int = 0,
    labels: str = "scored",
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's (noisy) in-context recall (module docstring): (inputs, labels), both
    (num_examples, seq_len) int64. Deterministic by seed."""
    check_recall_arguments(seq_len, vocab_size, noise_vocab_size, frac_noise)
    check_labels(labels)
    g = torch.Generator().manual_seed(seed)
    n, P = num_examples, seq_len // 2
    N = vocab_size - noise_vocab_size
    n_keys = N // 2
    keys = torch.randint(0, n_keys, (n, P - 1), generator=g)
    value_of = torch.randint(n_keys, N, (n, n_keys), generator=g)  # each key's value, per example
    noise = torch.rand(n, P - 1, generator=g) < frac_noise
    noise[torch.arange(n), torch.randint(0, P - 1, (n,), generator=g)] = False  # one slot always a pair
    # (Without a noise vocabulary no slot is noise: the draw's upper end only keeps it valid.)
    noise_tokens = torch.randint(N, max(vocab_size, N + 1), (n, P - 1, 2), generator=g)
    # The probe: uniform among the distinct keys shown in pair slots.
    shown = _shown(keys, noise, n_keys)
    score = torch.rand(n, n_keys, generator=g).masked_fill(~shown, -1.0)
    probe = score.argmax(dim=1)

    slot_keys = torch.cat((keys, probe[:, None]), dim=1)  # (n, P)
    slot_values = value_of.gather(1, slot_keys)
    is_noise = torch.cat((noise, torch.zeros(n, 1, dtype=torch.bool)), dim=1)
    seq = torch.stack((slot_keys, slot_values), dim=2)  # (n, P, 2): key, value per slot
    seq[:, :-1][noise] = noise_tokens[noise]  # noise slots (never the probe's) hold two noise tokens
    seq = seq.flatten(1)  # (n, 2P)

    # Noise slots count as keys of their own (n_keys + slot), so they never make a pair "seen".
    distinct = torch.where(is_noise, n_keys + torch.arange(P).expand(n, P), slot_keys)
    scored_value = ~first_occurrences(distinct) & ~is_noise
    scored_value[:, -1] = True  # the probe is always asked
    target = torch.full((n, 2 * P), IGNORE_INDEX, dtype=torch.long)
    if labels == "all":
        target[:, :-1] = seq[:, 1:]
    else:
        value_positions = target[:, 1::2]  # view: position 2i + 1 holds slot i's value
        value_positions.copy_(torch.where(scored_value, slot_values, IGNORE_INDEX))
        target[:, :-1] = target[:, 1:].clone()  # labels[t] is the token at t + 1
        target[:, -1] = IGNORE_INDEX
    return seq, target


def _shown(keys: torch.Tensor, noise: torch.Tensor, n_keys: int) -> torch.Tensor:
    """(n, n_keys) bool: which keys stand in a pair slot."""
    counts = torch.zeros(keys.shape[0], n_keys, dtype=torch.long)
    counts.scatter_add_(1, keys, (~noise).long())
    return counts > 0
