"""MAD's fuzzy in-context recall (mad-lab ``generate_fuzzy_in_context_recall_instance``,
multi-query): keys and values are motifs of several adjacent tokens, of varying lengths.

Vocabulary: the pad token is ``vocab_size - 1``; with ``N = vocab_size - 1 - noise_vocab_size``,
key tokens are ``[0, N // 2)``, value tokens ``[N // 2, N)``, noise tokens ``[N, vocab_size - 1)``.
A motif of size m is m distinct tokens in a uniformly random order (an m-permutation).

One example (``seq_len`` tokens, left-padded)::

    pad pad | K1 V1 K2 V2 ... K* V* ... Kj Vj | K* V*
            \\___ pairs, each with a key size and a value size ___/ \\ probe ___/

- key sizes are drawn uniformly from ``1 .. k_motif_size`` (training) or are always
  ``k_motif_size`` (``fixed_key_size=True``: MAD's test sets); value sizes from
  ``1 .. v_motif_size``;
- the probe pair is drawn first and shown in the context at the first pair that starts at or
  after a position drawn uniformly, unless a random draw of the probe's key showed it earlier
  (it may then appear again later, like any key); each other pair draws a key motif, which keeps
  its value motif for the whole example (drawn the first time), or is noise (probability
  ``frac_noise``, as many noise tokens as the pair would have had);
- pairs are added while the example stays short enough for one more pair and the probe; the
  probe's key and value then end it, and pads fill the front;
- scored: the value tokens of a key motif seen before, and the final value.
  ``labels="all"`` labels every next token (MAD's training sets).

Keys of different sizes may be prefixes of one another: that ambiguity is the fuzzy part.

Differences from mad-lab, decided here: the probe's position is drawn where it is always shown
before the final query (mad-lab's can fall past the last pair, leaving the query unanswerable);
a motif equal to the probe's key, drawn later, repeats the probe (as in mad-lab) and is scored;
each set comes from its own seed.
"""

from __future__ import annotations

import random

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.mad.recall import check_labels
from hybrids.errors import ConfigError


def check_fuzzy_arguments(seq_len: int, vocab_size: int, k_motif_size: int, v_motif_size: int,
                          noise_vocab_size: int = 0, frac_noise: float = 0.0) -> None:
    """ConfigError naming the argument, for settings that give no examples."""
    for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size), ("k_motif_size", k_motif_size),
                        ("v_motif_size", v_motif_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if isinstance(noise_vocab_size, bool) or not isinstance(noise_vocab_size, int) or noise_vocab_size < 0:
        raise ConfigError("noise_vocab_size", f"must be an integer >= 0, got {noise_vocab_size!r}")
    if isinstance(frac_noise, bool) or not isinstance(frac_noise, (int, float)) or not 0 <= frac_noise < 1:
        raise ConfigError("frac_noise", f"must be in [0, 1), got {frac_noise!r}")
    if frac_noise > 0 and noise_vocab_size == 0:
        raise ConfigError("noise_vocab_size", f"must be positive for frac_noise={frac_noise} (noise needs tokens)")
    N = vocab_size - 1 - noise_vocab_size
    if N // 2 < k_motif_size or N - N // 2 < v_motif_size:
        raise ConfigError("vocab_size", f"{vocab_size} has too few key or value tokens for motifs of "
                          f"{k_motif_size} and {v_motif_size} distinct tokens (keys [0, {N // 2}), values "
                          f"[{N // 2}, {N}))")
    if seq_len < 3 * (k_motif_size + v_motif_size):
        raise ConfigError("seq_len", f"{seq_len} is too short for motifs of {k_motif_size} + {v_motif_size} "
                          f"tokens: need seq_len >= 3 * (k_motif_size + v_motif_size)")


def fuzzy_in_context_recall(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    fixed_key_size: bool = False,
    seed: int = 0,
    labels: str = "scored",
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's fuzzy in-context recall (module docstring): (inputs, labels), both
    (num_examples, seq_len) int64. Deterministic by seed."""
    check_fuzzy_arguments(seq_len, vocab_size, k_motif_size, v_motif_size, noise_vocab_size, frac_noise)
    check_labels(labels)
    rng = random.Random(seed)
    inputs = torch.empty(num_examples, seq_len, dtype=torch.long)
    targets = torch.empty(num_examples, seq_len, dtype=torch.long)
    for i in range(num_examples):
        tokens, scored = _example(rng, seq_len, vocab_size, k_motif_size, v_motif_size, noise_vocab_size,
                                  frac_noise, fixed_key_size)
        seq = torch.tensor(tokens)
        inputs[i] = seq[:-1]
        if labels == "all":
            targets[i] = seq[1:]
        else:
            targets[i] = torch.where(torch.tensor(scored[1:]), seq[1:], IGNORE_INDEX)
    return inputs, targets


def _example(rng: random.Random, seq_len: int, vocab_size: int, k_size: int, v_size: int, noise_vocab: int,
             frac_noise: float, fixed_key_size: bool) -> tuple[list[int], list[bool]]:
    """seq_len + 1 tokens (inputs and the token after the last) and which of them are scored."""
    pad = vocab_size - 1
    N = vocab_size - 1 - noise_vocab
    key_tokens, value_tokens = range(0, N // 2), range(N // 2, N)
    key_sizes = [k_size] if fixed_key_size else list(range(1, k_size + 1))

    def motif(tokens: range, size: int) -> tuple[int, ...]:
        return tuple(rng.sample(tokens, size))

    probe_key, probe_value = motif(key_tokens, rng.choice(key_sizes)), motif(value_tokens, rng.randint(1, v_size))
    pair = len(probe_key) + len(probe_value)
    limit = seq_len + 1 - pair - (k_size + v_size)  # a pair may start before this length
    # Some pair starts at or after limit - (k_size + v_size): a position drawn up to there is passed.
    probe_at = rng.randint(0, max(0, limit - (k_size + v_size)))
    values: dict[tuple[int, ...], tuple[int, ...]] = {probe_key: probe_value}
    tokens: list[int] = []
    scored: list[bool] = []
    seen: set[tuple[int, ...]] = set()
    while len(tokens) < limit:
        size_k, size_v = rng.choice(key_sizes), rng.randint(1, v_size)
        if probe_key not in seen and len(tokens) >= probe_at:
            key = probe_key
        elif frac_noise and rng.random() < frac_noise:
            tokens += [rng.randrange(N, N + noise_vocab) for _ in range(size_k + size_v)]
            scored += [False] * (size_k + size_v)
            continue
        else:
            key = motif(key_tokens, size_k)
        value = values.setdefault(key, motif(value_tokens, size_v))
        tokens += [*key, *value]
        scored += [False] * len(key) + [key in seen] * len(value)
        seen.add(key)
    tokens += [*probe_key, *probe_value]
    scored += [False] * len(probe_key) + [True] * len(probe_value)
    padding = seq_len + 1 - len(tokens)
    return [pad] * padding + tokens, [False] * padding + scored
