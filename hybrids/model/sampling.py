"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import math

import torch


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError naming the sampling argument out of range."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: must be a positive integer (or None), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p: must be in (0, 1] (or None), got {top_p!r}")


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (batch, vocab) -> token ids (batch,).

    ``temperature == 0``: the argmax (greedy). Otherwise sample from ``softmax(logits /
    temperature)`` restricted to the ``top_k`` most likely tokens and then to the smallest set
    whose probability reaches ``top_p`` (the most likely token always stays).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    # A tiny temperature overflows float32 (|logit| / 1e-40 > 3.4e38), and softmax of inf (or of
    # 0 / 0 = nan) scores is nan. For such rows, shift the best logit to 0 first, so that it stays
    # exactly 0 whatever the temperature and every other score is <= 0, and divide in float64:
    # a score that still overflows becomes -inf, probability 0, which is the T -> 0 limit (greedy,
    # ties shared). Rows that did not overflow keep the plain float32 scores, so ordinary
    # temperatures sample exactly as before; torch.where instead of an `if` keeps a GPU decode
    # free of a host sync per token.
    overflowed = (~scores.isfinite() & logits.isfinite()).any(dim=-1, keepdim=True)
    wide = logits.double()
    shifted = ((wide - wide.max(dim=-1, keepdim=True).values) / temperature).float()
    scores = torch.where(overflowed, shifted, scores)
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1:
        ordered, order = scores.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop = (cumulative - ordered.softmax(dim=-1)) >= top_p
        scores = scores.scatter(-1, order, ordered.masked_fill(drop, -math.inf))
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
