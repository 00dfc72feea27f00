"""Depthwise causal 1-D convolution, with the contract of the causal-conv1d package (Tri Dao).

For every batch ``b``, channel ``d`` and position ``t``, with ``width = weight.shape[1]``::

    out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (width - 1) + k])

where inputs before the start are zero, so ``out[t]`` reads ``x[t - width + 1 .. t]`` only (the
last tap, ``weight[:, -1]``, multiplies the current input). ``act`` is the identity
(``activation=None``) or SiLU (``"silu"`` / ``"swish"``). This is ``nn.Conv1d(dim, dim, width,
groups=dim, padding=width - 1)`` cut to the first L outputs, with the weight as ``(dim, width)``.

- ``causal_conv1d(x, weight, bias=None, activation=None, initial_states=None,
  return_final_states=False)``: ``x`` (batch, dim, L) -> (batch, dim, L). ``initial_states``
  (batch, dim, width - 1) are the inputs before the first one (zeros if None), oldest first;
  with ``return_final_states`` the last ``width - 1`` inputs of the history come too, ready to
  continue the sequence (the causal-conv1d package's names and shapes).
- ``causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)``: decoding. ``x``
  is one token (batch, dim) or a few (batch, dim, seqlen); ``conv_state`` (batch, dim,
  state_len) with ``state_len >= width - 1`` holds the latest inputs, oldest first. The new
  inputs are appended and ``conv_state`` keeps the last ``state_len`` of them, updated in place;
  the output has ``x``'s shape. Stepping a sequence through a zero state gives
  ``causal_conv1d`` of it.

Outputs have ``x``'s dtype; the arithmetic runs in the wider of ``x``'s and ``weight``'s dtypes.

Backends (``backend=`` argument, else ``HYBRIDS_CAUSAL_CONV1D_BACKEND`` /
``HYBRIDS_CAUSAL_CONV1D_UPDATE_BACKEND``, else the dispatcher's choice):

- ``"reference"`` (:mod:`.reference`, convolution only): ``F.conv1d(..., groups=dim)`` on the
  input preceded by its initial states, autograd for gradients.
- ``"torch"`` (:mod:`.taps`): plain PyTorch, one multiply-add per tap (the sum that
  ``F.conv1d(..., groups=dim)`` computes, faster here: see ``taps``), with a hand-written
  backward by taps too. Any device, dtype and width.
- ``"cpu"`` (:mod:`.cpp`, convolution only): a compiled C++ loop, one (batch, channel) row at a
  time with the time axis vectorised and the SiLU fused, forward and backward; float32 and
  float64 arithmetic (half-precision inputs are computed in float32). Any width, initial states.
- ``"extension"`` (:mod:`.extension`): the causal-conv1d package's CUDA kernels (``pip install
  -e '.[cuda]'`` on a CUDA machine). CUDA tensors, widths 2 to 4, float32/float16/bfloat16
  only, and no initial or final states (their channel-last layout is not wired up here).

Automatic choice: ``"extension"`` where it is installed and can take the arguments; on CPU
``"cpu"`` where a C++ compiler is found; else ``"torch"``. The decode step stays on ``"torch"``
(one token: nothing to vectorise over).
"""

from __future__ import annotations

import torch

from hybrids.kernels.conv.extension import package as _package
from hybrids.kernels.dispatch import Backend, Op

ACTIVATIONS = (None, "silu", "swish")
_PACKAGE = "hybrids.kernels.conv"
_INSTALL = "`pip install -e '.[cuda]'` on a CUDA machine"
# What the package's CUDA kernels accept.
_EXTENSION_WIDTHS = (2, 3, 4)
_EXTENSION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# A constant to torch.compile: the build is looked for once, not traced (its file checks would
# end the graph).
@torch.compiler.assume_constant_result
def _cpp_available(device: str) -> str | None:
    from hybrids.kernels import cpp_build

    return cpp_build.unavailable_reason("causal_conv1d")


def _extension_available(device: str) -> str | None:
    return None if _package() is not None else "the causal-conv1d package is not installed"


def _extension_accepts(call) -> str | None:
    if call.get("width") not in _EXTENSION_WIDTHS:
        return f"the causal-conv1d package supports widths 2 to 4, got {call.get('width')}"
    if call.get("states"):
        return "initial_states / return_final_states are not wired to the causal-conv1d package here"
    return None


CAUSAL_CONV1D = Op(
    "causal_conv1d",
    (
        Backend("reference", f"{_PACKAGE}.reference:causal_conv1d_reference", priority=0, automatic=()),
        Backend("torch", f"{_PACKAGE}.taps:causal_conv1d_torch", priority=10),
        Backend(
            "cpu", f"{_PACKAGE}.cpp:causal_conv1d_cpu", devices=("cpu",), priority=15, available=_cpp_available,
            install="install g++ or clang++ (or set CXX); HYBRIDS_DISABLE_CPP=1 turns it off",
        ),
        Backend(
            "extension", f"{_PACKAGE}.extension:causal_conv1d_extension", devices=("cuda",),
            dtypes=_EXTENSION_DTYPES, priority=20, available=_extension_available, accepts=_extension_accepts,
            install=_INSTALL,
        ),
    ),
)
CAUSAL_CONV1D_UPDATE = Op(
    "causal_conv1d_update",
    (
        Backend("torch", f"{_PACKAGE}.taps:causal_conv1d_update_torch", priority=10),
        Backend(
            "extension", f"{_PACKAGE}.extension:causal_conv1d_update_extension", devices=("cuda",),
            dtypes=_EXTENSION_DTYPES, priority=20, available=_extension_available, accepts=_extension_accepts,
            install=_INSTALL,
        ),
    ),
)
BACKENDS = CAUSAL_CONV1D.names
BACKEND_ENV = CAUSAL_CONV1D.env


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
):
    """Depthwise causal convolution (module docstring): x (batch, dim, L) -> (batch, dim, L), and
    the final states (batch, dim, width - 1) if ``return_final_states``."""
    _check_tensor("x", x)
    if x.ndim != 3:
        raise ValueError(f"x: expected (batch, dim, L), got shape {tuple(x.shape)}")
    batch, dim, length = x.shape
    _check_weights(x, weight, bias, activation)
    width = weight.shape[1]
    if initial_states is not None:
        _check_tensor("initial_states", initial_states, x)
        if tuple(initial_states.shape) != (batch, dim, width - 1):
            raise ValueError(
                f"initial_states: expected (batch={batch}, dim={dim}, width - 1={width - 1}), "
                f"got {tuple(initial_states.shape)}"
            )
    states = initial_states is not None or return_final_states
    name = CAUSAL_CONV1D.select(x.device, x.dtype, backend, width=width, states=states)
    if x.numel() == 0:
        name = "torch"  # the taps handle empty batches and lengths (F.conv1d refuses L = 0)
    out = CAUSAL_CONV1D.function(name)(x, weight, bias, activation, initial_states=initial_states)
    if not return_final_states:
        return out
    return out, _final_states(x, initial_states, width)


def _final_states(x: torch.Tensor, initial_states: torch.Tensor | None, width: int) -> torch.Tensor:
    """The last width - 1 inputs of (initial_states, x), oldest first: (batch, dim, width - 1)."""
    keep, length = width - 1, x.shape[2]
    if length >= keep:
        return x[:, :, length - keep :]
    before = x.new_zeros(*x.shape[:2], keep) if initial_states is None else initial_states.to(x.dtype)
    return torch.cat((before[:, :, length:], x), dim=2)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One or a few decoding steps (module docstring); ``conv_state`` is updated in place."""
    _check_tensor("x", x)
    if x.ndim not in (2, 3):
        raise ValueError(f"x: expected (batch, dim) or (batch, dim, seqlen), got shape {tuple(x.shape)}")
    batch, dim = x.shape[:2]
    _check_weights(x, weight, bias, activation)
    _check_tensor("conv_state", conv_state, x)
    width = weight.shape[1]
    if conv_state.ndim != 3 or conv_state.shape[:2] != (batch, dim) or conv_state.shape[2] < width - 1:
        raise ValueError(
            f"conv_state: expected (batch={batch}, dim={dim}, state_len) with state_len >= width - 1 = "
            f"{width - 1}, got {tuple(conv_state.shape)}"
        )
    name = CAUSAL_CONV1D_UPDATE.select(x.device, x.dtype, backend, width=width)
    return CAUSAL_CONV1D_UPDATE.function(name)(x, conv_state, weight, bias, activation)


def _check_tensor(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{name}: expected x's device {like.device}, got {t.device}")


def _check_weights(x: torch.Tensor, weight, bias, activation) -> None:
    dim = x.shape[1]
    _check_tensor("weight", weight, x)
    if weight.ndim != 2 or weight.shape[0] != dim or weight.shape[1] < 1:
        hint = "; an nn.Conv1d weight (dim, 1, width) needs [:, 0, :]" if weight.ndim == 3 else ""
        raise ValueError(f"weight: expected (dim={dim}, width >= 1), got shape {tuple(weight.shape)}{hint}")
    if bias is not None:
        _check_tensor("bias", bias, x)
        if tuple(bias.shape) != (dim,):
            raise ValueError(f"bias: expected (dim={dim},), got shape {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; use None, 'silu' or 'swish'")


__all__ = ["BACKENDS", "BACKEND_ENV", "CAUSAL_CONV1D", "CAUSAL_CONV1D_UPDATE", "causal_conv1d", "causal_conv1d_update"]
