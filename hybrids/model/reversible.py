"""Reversible residual stacks (RevNet, Gomez et al. 2017; Reformer, Kitaev et al. 2020, section 3).

An ordinary stack keeps every block's activations for the backward pass, so training memory grows
with depth. A reversible stack carries two streams ``x = [x1 | x2]`` (..., 2 * d_model) through
couplings whose inputs can be recomputed exactly from their outputs, so the backward pass keeps
only the last block's output and rebuilds each block's input on the way down:

- a block with an MLP (Reformer's layout)::

      y1 = x1 + f(x2)           x2 = y2 - g(y1)
      y2 = x2 + g(y1)           x1 = y1 - f(x2)

- a block without one: the streams swap, so that the next mixer reads this one's output (with
  ``y1 = x1 + f(x2), y2 = x2`` every mixer would read the same, never-updated stream)::

      y1 = x2                   x2 = y1
      y2 = x1 + f(x2)           x1 = y2 - f(x2)

where ``f = dropout(mixer(mixer_norm(.)))`` and ``g = dropout(mlp(mlp_norm(.)))`` are the
block's own modules: a reversible stack has exactly the parameters of the ordinary one. The
embedding enters both streams; the stack's output is their mean.

The backward pass recomputes ``f`` and ``g`` once each per block (about one extra forward pass in
all) and restores the random state each saw, so dropout draws the same masks. Parameter
gradients are accumulated from inside the backward pass (as re-entrant checkpointing does), so
the parameters need not be inputs of the autograd function. Hence the limits: train with
``loss.backward()`` (``torch.autograd.grad``, ``backward(inputs=...)`` and ``create_graph=True``
do not see those gradients), and when nothing before the stack needs a gradient (a frozen
embedding) the stack runs as an ordinary one, keeping its activations. Untested under DDP and
``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hybrids.model.blocks import Block
from hybrids.mixers.base import State, prefill_by_steps


class _RandomState:
    """The CPU (and, for a CUDA tensor, that device's) random state at one moment."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class ReversibleBlock(Block):
    """A :class:`~hybrids.model.blocks.Block` as a reversible coupling of two streams (module docstring).

    Inputs and outputs are (..., 2 * d_model): ``forward``, ``step`` and ``prefill`` take the
    two streams side by side, so the stack's recurrent form (decoding, chunked prefill) runs
    through the same couplings.
    """

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mixer(self.mixer_norm(x)))

    def g(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(self.mlp_norm(x)))

    def _couple(self, x1: torch.Tensor, x2: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        """The outputs from the inputs and the mixer branch ``mixed = f(x2)``."""
        if self.mlp is None:
            return torch.cat([x2, x1 + mixed], dim=-1)
        y1 = x1 + mixed
        return torch.cat([y1, x2 + self.g(y1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return self._couple(x1, x2, self.f(x2))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x1, x2 = x.chunk(2, dim=-1)
        y, state = self.mixer.step(self.mixer_norm(x2), state)
        return self._couple(x1, x2, self.dropout(y)), state

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x1, x2 = x.chunk(2, dim=-1)
        prefill = getattr(self.mixer, "prefill", None)
        h = self.mixer_norm(x2)
        y, state = prefill(h, state) if prefill is not None else prefill_by_steps(self.mixer, h, state)
        return self._couple(x1, x2, self.dropout(y)), state

    def backward_pass(
        self, y: torch.Tensor, dy: torch.Tensor, random_f: _RandomState, random_g: _RandomState | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """From the block's output ``y`` and its gradient ``dy``: the input ``x`` and its gradient
        ``dx``; the parameters' gradients are accumulated into ``.grad`` on the way. ``random_f``
        / ``random_g``: the random states ``f`` / ``g`` saw in the forward pass."""
        y1, y2 = y.chunk(2, dim=-1)
        dy1, dy2 = dy.chunk(2, dim=-1)
        if self.mlp is None:
            # y1 = x2, y2 = x1 + f(x2)
            x2 = y1.detach()
            mixed, dx2_through_f = _replay(self.f, x2, dy2, random_f)
            return torch.cat([y2 - mixed, x2], dim=-1), torch.cat([dy2, dy1 + dx2_through_f], dim=-1)
        # y1 = x1 + f(x2), y2 = x2 + g(y1)
        y1 = y1.detach()
        channel, dy1_through_g = _replay(self.g, y1, dy2, random_g)
        x2 = y2 - channel
        dy1 = dy1 + dy1_through_g  # y1 reaches the loss directly and through g
        mixed, dx2_through_f = _replay(self.f, x2, dy1, random_f)
        return torch.cat([y1 - mixed, x2], dim=-1), torch.cat([dy1, dy2 + dx2_through_f], dim=-1)


def _replay(
    fn, x: torch.Tensor, grad: torch.Tensor, random: _RandomState
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute ``fn(x)`` under the random state it saw in the forward pass and send ``grad``
    back through it: (the value, detached; the gradient reaching ``x``). The parameters of
    ``fn`` accumulate their gradients on the way."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        random.restore()
        value = fn(x)
    torch.autograd.backward(value, grad)
    return value.detach(), x.grad


class _ReversibleStack(torch.autograd.Function):
    """Runs the blocks without keeping their activations; rebuilds them in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: Sequence[ReversibleBlock]) -> torch.Tensor:  # type: ignore[override]
        ctx.blocks = blocks
        ctx.autocast = _autocast_state(x.device.type)
        ctx.random = []
        with torch.no_grad():
            for block in blocks:
                random_f = _RandomState(x.device)
                x1, x2 = x.chunk(2, dim=-1)
                mixed = block.f(x2)
                random_g = _RandomState(x.device) if block.mlp is not None else None
                x = block._couple(x1, x2, mixed)
                ctx.random.append((random_f, random_g))
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        device = y.device
        # Recomputation restores the forward pass's random states; the caller's own random
        # stream continues afterwards as if the backward pass had drawn nothing.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _autocast(*ctx.autocast):
            y = y.detach()
            for block, (random_f, random_g) in zip(reversed(ctx.blocks), reversed(ctx.random)):
                y, dy = block.backward_pass(y, dy, random_f, random_g)
        return dy, None


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def _autocast(device_type: str, enabled: bool, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


def reversible_stack(x: torch.Tensor, blocks: Sequence[ReversibleBlock]) -> torch.Tensor:
    """The blocks over the two streams x (B, L, 2 * d_model), keeping no activations for the
    backward pass (module docstring). Without gradients to compute it is the plain loop."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        # Nothing upstream needs a gradient (or none is recorded): the function would not be
        # called back for the parameters' gradients, so build the ordinary graph instead.
        for block in blocks:
            x = block(x)
        return x
    return _ReversibleStack.apply(x, list(blocks))
