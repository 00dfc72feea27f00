"""Sequence mixers: one module per family, all with the interface of :class:`Mixer`."""

from hybrids.mixers.attention import Attention
from hybrids.mixers.base import Mixer, State, state_elements
from hybrids.mixers.s4 import S4, S4D

__all__ = ["S4", "S4D", "Attention", "Mixer", "State", "state_elements"]
