"""The ranges of the mixers' constructor arguments, by name: an argument means the same in every
mixer that takes it (``heads``, ``d_state``, ``rotary_base``...), so its range is stated once.

:class:`~hybrids.mixers.base.Mixer` checks the arguments a subclass is given against
:data:`RANGES` before its constructor runs, and raises the mixer contract's
``ValueError("<argument>: <what is wrong>")``, which the CLI keys
(``model.init_args.stack.mixers.A.init_args.heads: ...``). Checks that relate arguments to each
other (``heads`` dividing ``d_model``, ``top_k <= memory_size``) stay in the mixers. An argument
of a user's mixer is not checked (the same name may mean something else there).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: Any) -> bool:
    return _integer(value)


def positive_int(value: Any) -> bool:
    return _integer(value) and value >= 1


def non_negative_int(value: Any) -> bool:
    return _integer(value) and value >= 0


def positive_number(value: Any) -> bool:
    return _number(value) and value > 0


def non_negative_number(value: Any) -> bool:
    return _number(value) and value >= 0


def fraction(value: Any) -> bool:  # [0, 1)
    return _number(value) and 0 <= value < 1


def open_unit(value: Any) -> bool:  # (0, 1)
    return _number(value) and 0 < value < 1


_RULES: dict[Callable[[Any], bool], str] = {
    integer: "an integer",
    positive_int: "a positive integer",
    non_negative_number: "a finite number >= 0",
    non_negative_int: "an integer >= 0",
    positive_number: "a finite number > 0",
    fraction: "in [0, 1)",
    open_unit: "in (0, 1)",
}

# argument name -> (rule, whether None is allowed)
RANGES: dict[str, tuple[Callable[[Any], bool], bool]] = {
    **{name: (positive_int, False) for name in (
        "heads", "d_state", "d_conv", "headdim", "ngroups", "n_buckets", "n_hashes", "chunk_size",
        "block_size", "dilation", "segment_length", "top_k", "hnsw_m", "ivf_lists", "ivf_probe", "gate_rank",
        "filter_order", "short_filter")},
    **{name: (positive_int, True) for name in (
        "kv_heads", "head_dim", "d_rnn", "window", "l_max", "rank", "num_features", "feature_dim")},
    **{name: (non_negative_int, False) for name in ("global_tokens", "random_blocks", "memory_size", "filter_depth")},
    "seed": (integer, True),  # torch.Generator.manual_seed takes any 64-bit integer
    **{name: (positive_number, False) for name in (
        "rotary_base", "expand", "dt_min", "dt_max", "dt_scale", "norm_eps", "gate_temperature", "c",
        "fast_decay_pct", "slow_decay_pct", "frequency")},
    **{name: (non_negative_number, False) for name in ("dt_init_floor", "eps")},
    "B_clip": (positive_number, True),
    "dropout": (fraction, False),
    "a_min": (open_unit, False),
    "a_max": (open_unit, False),
    "target": (open_unit, False),
}


@functools.lru_cache(maxsize=None)
def _signature(init: Callable[..., None]) -> inspect.Signature:
    return inspect.signature(init)  # once per constructor: every mixer built passes here


def check_arguments(init: Callable[..., None], args: tuple, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError("<argument>: must be ..., got ...")`` for the first argument given to
    the constructor ``init`` (after ``self``) that is out of its range in :data:`RANGES`. Only the
    zoo's own mixers are checked: a user's mixer may mean something else by the same name."""
    if not getattr(init, "__module__", "").startswith("hybrids."):
        return
    signature = _signature(init)
    try:
        bound = signature.bind_partial(None, *args, **kwargs)
    except TypeError:
        return  # a wrong call: Python's own error says what
    for name, value in bound.arguments.items():
        rule = RANGES.get(name)
        if rule is None:
            continue
        check, none_ok = rule
        parameter = signature.parameters[name]
        takes_none = none_ok and (parameter.default is None or "None" in str(parameter.annotation))
        if (value is None and takes_none) or check(value):
            continue
        raise ValueError(f"{name}: must be {_RULES[check]}{' (or null)' if takes_none else ''}, got {value!r}")
