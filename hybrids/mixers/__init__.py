"""Sequence mixers: one module per family, all with the interface of :class:`Mixer`."""

from hybrids.mixers.attention import Attention
from hybrids.mixers.base import Mixer, State, state_elements

__all__ = ["Attention", "Mixer", "State", "state_elements"]
