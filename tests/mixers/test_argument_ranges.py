"""Mixer arguments out of range are refused by name before the constructor runs
(hybrids/mixers/arguments.py), sizes that cannot be allocated are named, and the memory a mixer
allocates whole is checked at construction."""

import inspect

import numpy as np
import pytest

import hybrids.mixers as mixers
from hybrids.errors import ConfigError
from hybrids.mixers import S4, Attention, LinearAttention, Mamba, MemorizingAttention, RGLRU, SparseAttention
from hybrids.mixers.arguments import RANGES
from hybrids.mixers.base import Mixer
from hybrids.model.mixer_specs import build_mixer


@pytest.mark.parametrize("cls, name, value", [
    (Attention, "heads", 0), (Attention, "rotary_base", -1.0), (Attention, "dropout", 1.0),
    (Attention, "head_dim", 0), (Mamba, "d_state", -3), (Mamba, "dt_scale", float("nan")),
    (LinearAttention, "seed", 1.5), (SparseAttention, "global_tokens", -1), (RGLRU, "a_max", 1.0),
    (MemorizingAttention, "memory_size", -1), (S4, "B_clip", 0.0),
])
def test_an_argument_out_of_range_is_named(cls, name, value):
    with pytest.raises(ValueError, match=f"^{name}: must be "):
        cls(16, **{name: value})


def test_values_that_were_valid_stay_valid():
    Attention(16, kv_heads=None, head_dim=None, heads=np.int64(2))  # numpy integers are integers
    S4(16, d_state=4, B_clip=None)
    LinearAttention(16, heads=2, eps=0.0, seed=-1)  # manual_seed takes negative seeds
    SparseAttention(16, heads=2, seed=-5)
    Mamba(16, d_state=4, dt_init_floor=0.0)
    with pytest.raises(ValueError, match=r"^seed: must be an integer, got None"):  # no "(or null)": 0 is its default
        SparseAttention(16, heads=2, seed=None)


def test_a_users_mixer_is_not_held_to_the_zoos_names():
    class Chunky(Mixer):  # chunk_size None means something else here
        def __init__(self, d_model, chunk_size=None):
            super().__init__(d_model)
            self.chunk_size = chunk_size

        def forward(self, x):
            return x

        def init_state(self, batch_size):
            return {}

        def step(self, x, state):
            return x, state

    Chunky(8, chunk_size=None)
    Chunky(8, chunk_size=-3)


def test_every_ranged_name_is_an_argument_of_some_mixer():
    """No stale entries: each name in RANGES is taken by a mixer of hybrids.mixers."""
    taken = {name for cls in vars(mixers).values() if inspect.isclass(cls) and issubclass(cls, Mixer)
             for name in inspect.signature(cls.__init__).parameters}
    assert set(RANGES) <= taken, set(RANGES) - taken


def test_a_size_that_cannot_be_allocated_is_named():
    spec = {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 10**12, "dropout": 0.1}}
    with pytest.raises(ConfigError) as refused:
        build_mixer(spec, 16, key="mixers.A")
    assert refused.value.key == "mixers.A.init_args.d_state"
    assert "is too large: S4D(d_model=16, d_state=1000000000000) cannot be allocated" in refused.value.message


@pytest.mark.parametrize("cls, settings, key", [
    (MemorizingAttention, {"memory_size": 10**9}, "memory_size"),
    (MemorizingAttention, {"head_dim": 10**7, "memory_size": 64}, "head_dim"),
    (S4, {"d_state": 4, "l_max": 10**9}, "l_max"),
])
def test_memory_allocated_whole_is_checked_at_construction(monkeypatch, cls, settings, key):
    monkeypatch.setattr(f"{cls.__module__}.available_memory", lambda device: 10**9)
    with pytest.raises(ValueError, match=f"^{key}: .*more than the 1.0 GB of memory available"):
        cls(16, **settings)
