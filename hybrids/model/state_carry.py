"""Carrying mixer states from one segment of a document to the next (segment-recurrent training
and evaluation, Transformer-XL style).

In the segment mode of a data module (``hybrids.data.ByteText(segments=True)``) every batch
slot reads one document as consecutive segments, and each batch says which slots start a new
document (``first``, (batch,) bool). The model keeps each carrying layer's state from batch to
batch, detached (truncated back-propagation: no gradient crosses a segment boundary), and
resets the slots that start a new document.

Which layers carry: a mixer whose class sets ``carries_memory = True`` always does
(:class:`~hybrids.mixers.MemorizingAttention`: its memory is the point); the others only when
the model is told to (``LanguageModel(carry_state=True)``), and only if their state can be reset
per slot: a mixer with a ``reset_state(state, first)`` method, or a state that is a dict of
per-sequence tensors (batch first), reset to the rows of a fresh ``init_state``.
"""

from __future__ import annotations

from typing import Any

import torch


class CannotCarry(TypeError):
    """A mixer's state cannot be carried across segments (it cannot be reset per slot)."""


def carries_memory(mixer: Any) -> bool:
    return bool(getattr(mixer, "carries_memory", False))


def detach_state(state: Any) -> Any:
    """The state with every tensor detached (containers rebuilt; objects with a ``detach_``
    method, or none, are kept: they hold no graph)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict) and type(state) is dict:
        return {k: detach_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(detach_state(v) for v in state)
    return state


def check_carry(mixer: Any, seq_len: int) -> None:
    """Raise unless ``mixer`` can carry its state across segments of ``seq_len`` tokens: it
    resets slots itself (``reset_state``) or its state is a dict of per-sequence tensors; and a
    mixer that works in segments of its own (``segment_length``) gets whole ones."""
    name = type(mixer).__name__
    if not hasattr(mixer, "reset_state"):
        state = mixer.init_state(1)
        if type(state) is not dict or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CannotCarry(
                f"{name} cannot carry its state across segments: its state ({type(state).__name__}) is not a dict of "
                "per-sequence tensors, so one slot cannot be reset at a document boundary; leave carry_state off"
            )
    segment = getattr(mixer, "segment_length", None)
    if segment and seq_len % segment:
        raise ValueError(
            f"{name}: the data's segments ({seq_len} tokens) must be a multiple of its segment_length ({segment}), so "
            "that a document boundary is one of its segment boundaries"
        )


def reset_slots(mixer: Any, state: Any, first: torch.Tensor) -> Any:
    """``state`` with the slots where ``first`` (batch,) is True back at the mixer's empty state
    (a state :func:`check_carry` accepted)."""
    if hasattr(mixer, "reset_state"):
        return mixer.reset_state(state, first)
    if not bool(first.any()):
        return state
    fresh = mixer.init_state(first.shape[0])
    out = {}
    for key, value in state.items():
        where = first.to(value.device).view(-1, *([1] * (value.ndim - 1)))
        out[key] = torch.where(where, fresh[key].to(value.dtype), value)
    return out
