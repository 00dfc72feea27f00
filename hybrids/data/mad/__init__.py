"""MAD's synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"): generators written from the semantics of mad-lab's instance generators, and
their data modules. Where a task differs from the zoo's own version (MQAR, Mamba's selective
copying), both are kept and the differences are documented in the generator's module."""

from hybrids.data.mad.compression import compression
from hybrids.data.mad.copying import mad_selective_copying
from hybrids.data.mad.fuzzy_recall import fuzzy_in_context_recall
from hybrids.data.mad.memorization import kv_map, memorization
from hybrids.data.mad.recall import in_context_recall
from hybrids.data.mad.tasks import (
    Compression,
    FuzzyInContextRecall,
    InContextRecall,
    MADSelectiveCopying,
    Memorization,
    NoisyInContextRecall,
)

__all__ = [
    "Compression",
    "FuzzyInContextRecall",
    "InContextRecall",
    "MADSelectiveCopying",
    "Memorization",
    "NoisyInContextRecall",
    "compression",
    "fuzzy_in_context_recall",
    "in_context_recall",
    "kv_map",
    "mad_selective_copying",
    "memorization",
]
