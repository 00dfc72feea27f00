"""Multi-query associative recall (MQAR), after HazyResearch/zoology's generator.

One example of length ``seq_len``::

    k1 v1 k2 v2 ... kN vN | filler ... k3 filler ... k1 filler ...
    \\______ context ______/ \\________ queries, power-law gaps ________/

- keys are drawn from the first half of the vocabulary (token 0 excluded, it marks filler before
  the filler is randomised), values from the second half; N = ``num_kv_pairs`` distinct keys;
- the pairs stand at the front; each key is asked again once, later, at an even offset ``2 g``
  into the query region, with gaps ``g`` drawn without replacement from p(g) ~ g^(power_a - 1);
- the label at a query's position is the value paired with that key; every other label is -100;
- filler positions get random tokens when ``random_non_queries`` (as zoology's default).

Labels are already shifted: ``labels[t]`` is the token the model must predict after reading
``inputs[: t + 1]``.
"""

from __future__ import annotations

import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError

CHUNK_EXAMPLES = 32_768


def check_mqar_arguments(seq_len: int, num_kv_pairs: int, vocab_size: int) -> None:
    """Raise ConfigError (a ValueError) naming the argument, for settings that give no examples."""
    if num_kv_pairs <= 0:
        raise ConfigError("num_kv_pairs", f"must be positive, got {num_kv_pairs}")
    if seq_len % 2:
        raise ConfigError("seq_len", f"must be even, got {seq_len}")
    if 4 * num_kv_pairs > seq_len:
        raise ConfigError(
            "seq_len", f"{seq_len} is too short for num_kv_pairs={num_kv_pairs}: need seq_len >= 4 * num_kv_pairs"
        )
    if vocab_size // 2 - 1 < num_kv_pairs or vocab_size - vocab_size // 2 < num_kv_pairs:
        raise ConfigError(
            "vocab_size",
            f"{vocab_size} has too few keys or values for num_kv_pairs={num_kv_pairs}: "
            "need vocab_size >= 2 * num_kv_pairs + 2",
        )


def _sample_without_replacement(logits: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices per row, drawn sequentially with probabilities softmax(logits).

    The Gumbel-top-k trick: the top k of ``logits + Gumbel noise`` have exactly the law of k
    draws without replacement. logits (n, m) -> indices (n, k).
    """
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    gumbel = -torch.log((-torch.log(uniform)).clamp_min(1e-300))
    return (logits + gumbel).topk(k, dim=1).indices


def multiquery_ar(
    num_examples: int,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR examples: (inputs, labels), both (num_examples, seq_len) int64. Deterministic by seed.

    Examples are generated in chunks so that the (chunk, vocab_size / 2) random matrices that draw
    distinct keys and values stay near 2^24 elements, whatever the number of examples.
    """
    check_mqar_arguments(seq_len, num_kv_pairs, vocab_size)
    if not 0 < power_a:
        raise ConfigError("power_a", f"must be positive, got {power_a}")
    g = torch.Generator().manual_seed(seed)
    chunk = max(1, min(CHUNK_EXAMPLES, 2**24 // vocab_size))
    parts = [
        _mqar_chunk(min(chunk, num_examples - start), seq_len, num_kv_pairs, vocab_size, power_a, random_non_queries, g)
        for start in range(0, num_examples, chunk)
    ]
    if not parts:
        empty = torch.empty(0, seq_len, dtype=torch.long)
        return empty, empty.clone()
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _mqar_chunk(
    n: int, seq_len: int, pairs: int, vocab_size: int, power_a: float, random_non_queries: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples drawn from the generator ``g`` (see :func:`multiquery_ar`)."""
    context = 2 * pairs
    half = vocab_size // 2

    # Distinct keys in [1, half) and distinct values in [half, vocab_size) per example.
    keys = 1 + torch.rand(n, half - 1, generator=g).argsort(dim=1)[:, :pairs]
    values = half + torch.rand(n, vocab_size - half, generator=g).argsort(dim=1)[:, :pairs]

    # The query region holds seq_len - context positions, paired up, so `space` even slots.
    space = (seq_len - context) // 2
    gap_weight = torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = _sample_without_replacement(gap_weight.log().expand(n, space), pairs, g)  # (n, pairs)

    # Build a sequence of seq_len + 1 tokens, then shift: inputs = seq[:-1], labels = seq[1:].
    seq = torch.zeros(n, seq_len + 1, dtype=torch.long)
    seq[:, 0:context:2] = keys
    seq[:, 1:context:2] = values
    query_pos = context + 2 * gaps  # where each key is asked again
    seq.scatter_(1, query_pos, keys)
    target = torch.full((n, seq_len + 1), IGNORE_INDEX, dtype=torch.long)
    target.scatter_(1, query_pos + 1, values)  # the value must come right after its key
    inputs, labels = seq[:, :-1].clone(), target[:, 1:].clone()

    if random_non_queries:
        filler = inputs == 0
        noise = torch.randint(vocab_size, inputs.shape, generator=g)
        inputs[filler] = noise[filler]
    return inputs, labels
