"""Sequence mixers: one module per family, all with the interface of :class:`Mixer`."""

from hybrids.mixers.attention import Attention
from hybrids.mixers.base import Mixer, State, state_elements
from hybrids.mixers.base_conv import BaseConv
from hybrids.mixers.h3 import H3
from hybrids.mixers.hyena import Hyena
from hybrids.mixers.linear_attention import LinearAttention
from hybrids.mixers.lsh_attention import LSHAttention
from hybrids.mixers.mamba import Mamba
from hybrids.mixers.memorizing_attention import MemorizingAttention
from hybrids.mixers.mamba2 import Mamba2
from hybrids.mixers.rglru import RGLRU
from hybrids.mixers.s4 import S4, S4D
from hybrids.mixers.short_conv import ShortConv
from hybrids.mixers.sparse_attention import SparseAttention
from hybrids.mixers.state_size import StateSize, state_size_table

__all__ = [
    "S4",
    "S4D",
    "Attention",
    "BaseConv",
    "H3",
    "Hyena",
    "LinearAttention",
    "LSHAttention",
    "Mamba",
    "Mamba2",
    "MemorizingAttention",
    "Mixer",
    "RGLRU",
    "ShortConv",
    "SparseAttention",
    "State",
    "StateSize",
    "state_size_table",
    "state_elements",
]
