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
