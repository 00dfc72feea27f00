"""The mixer interface shared by every sequence mixer of the zoo (docs/design.md, "The mixer contract").

A mixer maps ``(batch, L, d_model) -> (batch, L, d_model)`` and has a recurrent form::

    y = mixer(x)                                  # parallel over L
    y, state = mixer.prefill(x)                   # parallel, and the state after the prompt
    y, state = mixer.prefill(x, state)            # ... continuing from a state (chunked prefill)
    state = mixer.init_state(batch_size)          # empty recurrent cache
    y_t, state = mixer.step(x_t, state)           # (batch, d_model) -> (batch, d_model)
    n = mixer.state_size(seq_len)                 # state elements per sequence after seq_len tokens

A subclass states its state size as data, ``state_size_rules`` (formulas in ``L`` and its
attributes, :mod:`hybrids.mixers.state_size`): ``state_size`` evaluates them and the docs show them.

``forward``, ``prefill`` then ``step``, and ``step`` over the same tokens all give the same
outputs. A state is a dict of tensors whose leading dimension is the batch (plus, where needed,
plain Python ints such as a position, or objects such as a preallocated cache that count their
live elements with a ``state_elements()`` method), so that it can be counted without knowing the
mixer.

User mixers need not subclass :class:`Mixer`: the model only needs ``forward`` to train, and the
other three methods for decoding and for state-size accounting. Subclassing gives the checks.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import torch
from torch import nn

from hybrids.mixers.arguments import check_arguments
from hybrids.mixers.state_size import StateSize, evaluate

State = dict[str, Any]


class Mixer(nn.Module, abc.ABC):
    """Base class of sequence mixers. Constructors take ``d_model`` as their first argument."""

    #: The state one sequence holds after ``L`` tokens, one row per case (exactly one applies).
    state_size_rules: tuple[StateSize, ...] = ()

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model: must be a positive integer, got {d_model!r}")
        self.d_model = d_model
        # Every forward checks its input first: a wrong dtype or width fails here, naming the
        # argument, instead of deep inside a matrix product.
        self.register_forward_pre_hook(_check_forward_input)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # every argument in its range first (hybrids.mixers.arguments)
            cls.__init__ = _checked_init(cls.__dict__["__init__"])
        if "step" in cls.__dict__:  # and so does every step, and every prefill
            cls.step = _checked_step(cls.__dict__["step"])
        if "prefill" in cls.__dict__:
            cls.prefill = _checked_prefill(cls.__dict__["prefill"])

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model), causal."""

    @abc.abstractmethod
    def init_state(self, batch_size: int) -> State:
        """The empty recurrent state for ``batch_size`` sequences, on the mixer's device."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token: x (batch, d_model) -> y (batch, d_model) and the updated state."""

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (batch, L, d_model) -> outputs (batch, L, d_model) and the state after it,
        continuing from ``state`` (an empty state if None).

        This fallback steps through the prompt; mixers override it with their parallel path.
        """
        return prefill_by_steps(self, x, state)

    def state_size(self, seq_len: int) -> int:
        """Elements of recurrent state one sequence holds after ``seq_len`` tokens: the row of
        ``state_size_rules`` that applies, evaluated (a complex element counts as two)."""
        return evaluate(self, seq_len)

    def _factory(self) -> dict[str, Any]:
        """device and dtype of the mixer's parameters, for allocating states."""
        p = next(self.parameters())
        return {"device": p.device, "dtype": p.dtype}


def check_input(name: str, x: Any, d_model: int, shape: str) -> None:
    """Raise TypeError / ValueError naming ``name`` unless ``x`` is a floating-point tensor shaped
    ``shape`` ("(batch, L, d_model)" or "(batch, d_model)") with last dimension ``d_model``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor {shape}, got {x.dtype} (embed token ids first)")
    ndim = shape.count(",") + 1
    if x.ndim != ndim or x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected {shape} with d_model={d_model}, got shape {tuple(x.shape)}")


def _check_forward_input(module: Mixer, args: tuple) -> None:
    if args:
        check_input("x", args[0], module.d_model, "(batch, L, d_model)")


def _checked_init(init):
    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        check_arguments(init, args, kwargs)
        init(self, *args, **kwargs)
    return checked


def _checked_step(step):
    @functools.wraps(step)
    def checked(self, x, state, *args, **kwargs):
        check_input("x", x, self.d_model, "(batch, d_model)")
        return step(self, x, state, *args, **kwargs)

    return checked


def prefill_by_steps(mixer: nn.Module, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
    """Prefill through ``mixer.step``, one token at a time: the fallback for mixers without a
    parallel ``prefill`` (a user's mixer needs only ``init_state`` and ``step``)."""
    state = mixer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outputs.append(y_t)
    y = torch.stack(outputs, dim=1) if outputs else x.new_zeros(x.shape)
    return y, state


def _checked_prefill(prefill):
    @functools.wraps(prefill)
    def checked(self, x, state=None, *args, **kwargs):
        check_input("x", x, self.d_model, "(batch, L, d_model)")
        return prefill(self, x, state, *args, **kwargs)

    return checked


def state_elements(state: Any) -> int:
    """Real numbers held in a (nested) state, all sequences: a complex element counts as two."""
    if hasattr(state, "state_elements"):  # e.g. a preallocated cache: its live part only
        return int(state.state_elements())
    if isinstance(state, torch.Tensor):
        if state.is_complex():
            return 2 * state.numel()
        return state.numel() if state.is_floating_point() else 0
    if isinstance(state, dict):
        return sum(state_elements(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_elements(v) for v in state)
    return 0
