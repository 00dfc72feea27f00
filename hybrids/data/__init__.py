"""Data: task generators (pure functions) and their LightningDataModules."""

from hybrids.data.byte_text import ByteText
from hybrids.data.datamodule import MQAR, InductionHeads, SelectiveCopying
from hybrids.data.induction_heads import induction_heads
from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.mad import (
    Compression,
    FuzzyInContextRecall,
    InContextRecall,
    MADSelectiveCopying,
    Memorization,
    NoisyInContextRecall,
)
from hybrids.data.mqar import multiquery_ar
from hybrids.data.selective_copying import selective_copying
from hybrids.data.token_text import TokenizedText

__all__ = [
    "IGNORE_INDEX",
    "ByteText",
    "Compression",
    "FuzzyInContextRecall",
    "InContextRecall",
    "MADSelectiveCopying",
    "Memorization",
    "NoisyInContextRecall",
    "MQAR",
    "InductionHeads",
    "SelectiveCopying",
    "TokenizedText",
    "induction_heads",
    "multiquery_ar",
    "selective_copying",
]
