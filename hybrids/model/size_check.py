"""A stack too large for this machine is refused before its weights are allocated.

``d_model: 1000000000000`` or ``n_layers: 1000000000000`` used to fail inside the allocator (or
be granted by an overcommitting kernel and then kill the process when written). The parameters
are counted first: the embedding and LM head by arithmetic, one block per distinct pattern letter
built on the ``meta`` device (shapes without storage), times the layers that use that letter.
"""

from __future__ import annotations

import math

import torch

from hybrids.errors import ConfigError
from hybrids.memory import available_memory, format_bytes
from hybrids.model.blocks import MLP, Block
from hybrids.model.config import StackConfig
from hybrids.model.mixer_specs import import_class


def layers_per_letter(pattern: str, n_layers: int | None) -> dict[str, int]:
    """How many layers each letter of ``pattern`` gets (letters that get none left out),
    ``pattern`` repeated (and cut) to ``n_layers``: arithmetic, so that a huge ``n_layers``
    costs nothing to count."""
    n_layers = len(pattern) if n_layers is None else n_layers
    whole, rest = divmod(n_layers, len(pattern))
    counts = {letter: whole * pattern.count(letter) + pattern[:rest].count(letter) for letter in dict.fromkeys(pattern)}
    return {letter: n for letter, n in counts.items() if n}  # a letter cut off by n_layers is not built


def _block_parameters(config: StackConfig, letter: str) -> int | None:
    """Parameters of one block with ``letter``'s mixer, or None where it cannot be built on meta
    (a mixer whose constructor computes on real tensors, or a spec the real build will refuse
    with its own keyed error)."""
    spec = config.mixer_specs[letter]
    hidden = int(round(config.mlp_expand * config.d_model))
    key = (repr(spec), config.d_model, hidden, config.mlp)
    if key not in _BLOCK_PARAMETERS:
        _BLOCK_PARAMETERS[key] = _count_on_meta(spec, config.d_model, hidden, config.mlp)
    return _BLOCK_PARAMETERS[key]


# (spec, d_model, MLP width, MLP kind) -> parameters of one block: the same stack is built over
# and over (tests, sweeps, each CLI command), and a mixer that fails on meta fails slowly.
_BLOCK_PARAMETERS: dict[tuple, int | None] = {}


def _count_on_meta(spec, d_model: int, hidden: int, mlp: str) -> int | None:
    try:
        cls = import_class(spec["class_path"], "class_path")
        with torch.device("meta"):
            mixer = cls(d_model, **dict(spec.get("init_args") or {}))
            channel = MLP(d_model, hidden, mlp) if hidden > 0 else None
            block = Block(d_model, mixer, channel)
    except Exception:  # noqa: BLE001 (not countable this way; the real build reports a bad spec)
        return None
    return sum(p.numel() for p in block.parameters())


def count_parameters(config: StackConfig, lower_bound_only: bool = False) -> tuple[int, int]:
    """(embedding and head, blocks) parameter counts of the stack ``config`` describes, without
    building it. Blocks whose mixer cannot be built on meta count their two norms only (a lower
    bound), as do all blocks with ``lower_bound_only``."""
    d, vocab = config.d_model, config.vocab_size
    counts = layers_per_letter(config.pattern, config.n_layers)
    embedding = vocab * d * (1 if config.tie_embeddings else 2) + d  # + the final norm
    blocks = sum(counts.values()) * 2 * d
    if not lower_bound_only:
        per_letter = {letter: _block_parameters(config, letter) for letter in counts}
        blocks = sum(counts[letter] * (n if n is not None else 2 * d) for letter, n in per_letter.items())
    return embedding, blocks


def check_stack_fits(config: StackConfig, copies: int = 1, what: str = "its weights",
                     available: int | None = None) -> None:
    """Raise ConfigError (keyed at the argument that makes the stack large) when ``copies`` float32
    copies of its parameters exceed the memory available (:func:`hybrids.memory.available_memory`,
    or ``available`` bytes). Keys are StackConfig's fields."""
    if available is None:
        available = available_memory("cpu")
    if available is None or set(config.pattern) - set(config.mixer_specs):
        return  # (expand_pattern names the letters without a mixer)
    d, vocab = config.d_model, config.vocab_size
    # The lower bound first, so that an absurd width or depth is refused without building
    # anything, even on meta.
    embedding, blocks = count_parameters(config, lower_bound_only=True)
    if _bytes(embedding + blocks, copies) <= available and d * d < 2**62:
        embedding, blocks = count_parameters(config)
    total = embedding + blocks
    need = _bytes(total, copies)
    if need <= available:
        return
    counts = layers_per_letter(config.pattern, config.n_layers)
    n_layers = sum(counts.values())
    # A block is some tens of d_model^2 parameters; one far beyond that is made large by its
    # mixer's own arguments (a d_state of 10^12), which the error then names.
    heavy = [(letter, n) for letter in counts if (n := _block_parameters(config, letter)) is not None and n > 1000 * d * d]
    if heavy and embedding < blocks:
        letter, n = max(heavy, key=lambda item: counts[item[0]] * item[1])
        spec = config.mixer_specs[letter]
        arguments = ", ".join(f"{k}={v!r}" for k, v in (spec.get("init_args") or {}).items())
        name = str(spec["class_path"]).rpartition(".")[2]
        raise ConfigError(
            f"mixers.{letter}.init_args",
            f"{name}(d_model={d:,}{', ' if arguments else ''}{arguments}) holds about {_count(n)} parameters a layer "
            f"({counts[letter]:,} layers): {what} take {format_bytes(need)}, more than the {format_bytes(available)} "
            "of memory available",
        )
    if embedding >= blocks:
        key = "vocab_size" if vocab >= d else "d_model"
    else:
        key = "n_layers" if n_layers >= d else "d_model"
    raise ConfigError(
        key,
        f"a stack of {n_layers:,} layers of width {d:,} with a vocabulary of {vocab:,} holds about "
        f"{_count(total)} parameters: {what} take {format_bytes(need)}, more than the {format_bytes(available)} "
        "of memory available",
    )


def _bytes(parameters: int, copies: int) -> int:
    return parameters * 4 * copies  # float32


def _count(n: int) -> str:
    return f"{n:,}" if n < 1e12 else f"{n:.1e}".replace("e+", "e")
