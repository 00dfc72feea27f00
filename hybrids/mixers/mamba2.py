"""Mamba-2: the SSD block of Dao & Gu (2024), "Transformers are SSMs: Generalized Models and
Efficient Algorithms Through Structured State Space Duality", with the parameter names of
mamba_ssm's ``Mamba2`` module, run on ``hybrids.kernels.linear_attention``.

One block, for x (batch, L, d_model), d_inner = expand * d_model split into H = d_inner / P
heads of width P = headdim, and B, C shared by the heads of each of G = ngroups groups::

    z, xBC, dt = in_proj(x).split(d_inner, d_inner + 2 G N, H)
    x, B, C    = silu(causal depthwise conv1d(xBC)).split(d_inner, G N, G N)
    dt         = softplus(dt + dt_bias)                # (batch, L, H): one step per head
    h_t        = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T   # (N, P) per head; A = -exp(A_log) < 0
    y_t        = h_t^T C_t + D x_t
    out        = out_proj(rmsnorm(y * silu(z)))        # mamba_ssm's RMSNormGated, per group

SSD is linear attention with a scalar, input-dependent decay per head: ``q = C``, ``k = B``,
``v = dt * x``, ``g = dt * A`` and scale 1, so it runs on the chunked kernel that serves the
linearised-attention mixers. The recurrent state per sequence is the SSM state (H, N, P) in
float32 (mamba_ssm keeps it as (H, P, N)) and the conv's last ``d_conv - 1`` inputs of width
``d_inner + 2 G N``: ``state_size = H N P + (d_inner + 2 G N)(d_conv - 1)``.

Initialisation as mamba_ssm: ``A`` uniform in [1, 16] per head (stored as its log), ``dt_bias``
the inverse softplus of steps drawn log-uniformly in [dt_min, dt_max], ``D = 1``; none of the
three is weight-decayed.

Paths: ``forward`` and ``prefill`` run the conv and the kernel (with their initial and final
states for prefill); ``step`` runs ``causal_conv1d_update`` and ``linear_attention_step``. On
CUDA with mamba-ssm installed, ``use_fast_path`` and not float64, ``forward`` runs the SSD part
with mamba_ssm's ``mamba_chunk_scan_combined`` on the same parameters; on CPU (``use_fast_path``, no
backend forced, float32 or float64 throughout) the conv and the SSD run as one fused C++ block
(``hybrids.kernels.mamba_block``), from a zero state. The call is tested on
CPU against a stand-in written from that function's documented contract (same output as the
path on our kernel); mamba_ssm's kernel itself has not run here (no GPU lent).
"""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import at_least_float32, causal_conv1d, causal_conv1d_update, linear_attention, linear_attention_step
from hybrids.kernels import widen as _wide
from hybrids.kernels.conv import BACKEND_ENV as CONV_BACKEND_ENV
from hybrids.kernels.linear import BACKEND_ENV as LINEAR_BACKEND_ENV
from hybrids.kernels.linear import BACKENDS as LINEAR_BACKENDS
from hybrids.kernels.mamba_block import cpu_unavailable as cpu_block_unavailable
from hybrids.kernels.mamba_block import mamba2_block_cpu
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize


@functools.cache
def _chunk_scan_combined():
    """mamba_ssm's fused SSD function, or None where mamba-ssm is missing."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError:
        return None
    return mamba_chunk_scan_combined


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over groups of ``group_size`` channels (mamba_ssm's
    ``RMSNormGated`` with ``norm_before_gate=False``)."""

    def __init__(self, width: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        work = at_least_float32(y.dtype)
        gated = (y.to(work) * F.silu(z.to(work))).unflatten(-1, (-1, self.group_size))
        # torch's rms_norm (fused where the torch version has a fused CPU kernel) rather than the
        # mean-square written out.
        normed = F.rms_norm(gated, (self.group_size,), eps=self.eps)
        return (normed.flatten(-2) * self.weight.to(work)).to(y.dtype)


class Mamba2(Mixer):
    """The Mamba-2 block (module docstring).

    Args:
        d_model: model width.
        d_state: N, the state size per head and channel (128 in mamba_ssm; 16-64 at small widths).
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        headdim: P, channels per head (must divide d_inner; 64 in mamba_ssm).
        ngroups: G, groups sharing B and C (must divide the heads).
        A_init_range: A's magnitudes start uniform in this range.
        dt_min, dt_max, dt_init_floor: initial steps, log-uniform in [dt_min, dt_max], floored.
        conv_bias: bias in the convolution.
        bias: biases in in_proj and out_proj.
        norm_eps: epsilon of the gated RMS norm.
        use_fast_path: a fused path where one can run: mamba_ssm's SSD kernel on CUDA (installed), our C++
            block on CPU (hybrids.kernels.mamba_block).
        kernel_backend: force a ``linear_attention`` backend; None lets the dispatcher choose.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: float = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        use_fast_path: bool = True,
        kernel_backend: str | None = None,
    ) -> None:
        super().__init__(d_model)
        d_inner = int(expand * d_model)
        for name, value in (("d_state", d_state), ("d_conv", d_conv), ("headdim", headdim), ("ngroups", ngroups)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
        if d_inner <= 0 or d_inner % headdim:
            raise ValueError(f"headdim: must divide d_inner = expand * d_model = {d_inner}, got {headdim}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"ngroups: must divide the number of heads ({nheads} = d_inner / headdim), got {ngroups}")
        low, high = A_init_range
        if not 0 < low <= high:
            raise ValueError(f"A_init_range: need 0 < low <= high, got {A_init_range}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if kernel_backend is not None and kernel_backend not in LINEAR_BACKENDS:
            raise ValueError(f"kernel_backend: unknown {kernel_backend!r}; use one of {LINEAR_BACKENDS} or None")
        self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups = d_state, d_conv, expand, headdim, ngroups
        self.d_inner, self.nheads = d_inner, nheads
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.use_fast_path, self.kernel_backend = use_fast_path, kernel_backend

        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1,
                                bias=conv_bias)
        dt = torch.exp(torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(low, high)))
        self.D = nn.Parameter(torch.ones(nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(d_inner, d_inner // ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    # -- pieces ------------------------------------------------------------------------------

    def _split_in(self, zxbcdt: torch.Tensor):
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _ssd_inputs(self, xbc: torch.Tensor, dt: torch.Tensor):
        """Conv output xBC (..., conv_dim) and raw dt (..., H) -> q = C, k = B (..., H, N),
        v = dt x (..., H, P), g = dt A (..., H), x (..., H, P); dt in float32 or wider."""
        x, b, c = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        per_group = self.nheads // self.ngroups
        b = b.unflatten(-1, (self.ngroups, self.d_state)).repeat_interleave(per_group, dim=-2)  # (..., H, N)
        c = c.unflatten(-1, (self.ngroups, self.d_state)).repeat_interleave(per_group, dim=-2)
        x = x.unflatten(-1, (self.nheads, self.headdim))  # (..., H, P)
        dt = F.softplus(_wide(dt) + _wide(self.dt_bias))  # (..., H)
        g = dt * -torch.exp(_wide(self.A_log))
        v = (x.to(dt.dtype) * dt[..., None]).to(x.dtype)
        return c, b, v, g, x

    def _finish(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """SSM output y and the heads' inputs x (..., H, P), gate z (..., d_inner) -> (..., d_model)."""
        y = y + x * self.D.to(x.dtype)[:, None]
        return self.out_proj(self.norm(y.flatten(-2), z))

    def fused_path_unavailable(self, device_type: str, dtype: torch.dtype) -> str | None:
        """None if ``forward`` runs mamba_ssm's fused SSD kernel here, else why not."""
        if not self.use_fast_path:
            return "use_fast_path=False"
        if device_type != "cuda":
            return f"mamba_ssm's SSD kernel runs on CUDA tensors, got {device_type}"
        if self.kernel_backend is not None:
            return "a kernel backend is forced (kernel_backend)"
        if dtype == torch.float64:
            return "mamba_ssm's Triton kernels take float32, float16 and bfloat16"
        if _chunk_scan_combined() is None:
            return "mamba-ssm is not installed (`pip install -e '.[cuda]'`)"
        return None

    # -- parallel ------------------------------------------------------------------------------

    def cpu_block_unavailable(self, zxbcdt: torch.Tensor, A: torch.Tensor) -> str | None:
        """None if ``forward`` runs the fused C++ block (hybrids.kernels.mamba_block) on in_proj's
        output ``zxbcdt`` and ``A``, else why not."""
        if not self.use_fast_path:
            return "use_fast_path=False"
        if self.kernel_backend is not None or os.environ.get(LINEAR_BACKEND_ENV) or os.environ.get(CONV_BACKEND_ENV):
            return "a kernel backend is forced (kernel_backend or an environment variable)"
        return cpu_block_unavailable(zxbcdt, A, self.conv1d.weight, self.conv1d.bias, self.dt_bias, self.D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_path_unavailable(x.device.type, x.dtype) is None:
            return self._fused(x)
        zxbcdt = self.in_proj(x)
        A = -torch.exp(_wide(self.A_log))  # (H,)
        if self.cpu_block_unavailable(zxbcdt, A) is None:
            y = mamba2_block_cpu(zxbcdt, self.conv1d.weight[:, 0, :], self.conv1d.bias, self.dt_bias, A, self.D,
                                 self.ngroups)  # (B, L, d_inner), D x included
            return self.out_proj(self.norm(y, zxbcdt[..., : self.d_inner]))
        return self._parallel(x, zxbcdt=zxbcdt)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (B, L, d_model) -> outputs and the state after it, from ``state`` (zero if
        None): the conv and the chunked kernel with their initial and final states."""
        return self._parallel(x, state, final_state=True)

    def _conv(self, xbc: torch.Tensor, state: State | None, final_state: bool):
        """xBC (B, L, conv_dim) -> silu(conv) (B, L, conv_dim) [and the conv's last inputs]."""
        conv0 = None if state is None else state["conv"].to(xbc.dtype)
        out = causal_conv1d(xbc.transpose(1, 2), self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu",
                            initial_states=conv0, return_final_states=final_state)
        out, conv = out if final_state else (out, None)
        return out.transpose(1, 2), conv

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False,
                  zxbcdt: torch.Tensor | None = None):
        z, xbc, dt = self._split_in(self.in_proj(x) if zxbcdt is None else zxbcdt)
        xbc, conv = self._conv(xbc, state, final_state)
        q, k, v, g, xh = self._ssd_inputs(xbc, dt)  # (B, L, H, .)
        kwargs = {} if self.kernel_backend is None else {"backend": self.kernel_backend}
        h0 = None if state is None else state["ssm"]
        out = linear_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), g.transpose(1, 2),
                               scale=1.0, initial_state=h0, output_final_state=final_state, **kwargs)
        y, h = out if final_state else (out, None)  # (B, H, L, P) [, (B, H, N, P)]
        result = self._finish(y.transpose(1, 2).to(x.dtype), xh, z)
        if not final_state:
            return result
        dtype = self._factory()["dtype"]
        conv = conv.to(dtype).clone(memory_format=torch.contiguous_format)
        return result, {"conv": conv, "ssm": h.to(at_least_float32(dtype))}

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """The SSD part on mamba_ssm's ``mamba_chunk_scan_combined`` (CUDA only)."""
        z, xbc, dt = self._split_in(self.in_proj(x))
        xbc, _ = self._conv(xbc, None, False)
        xs, b, c = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        y = _chunk_scan_combined()(
            xs.unflatten(-1, (self.nheads, self.headdim)), dt, -torch.exp(self.A_log.float()),
            b.unflatten(-1, (self.ngroups, self.d_state)), c.unflatten(-1, (self.ngroups, self.d_state)),
            chunk_size=256, D=self.D, z=None, dt_bias=self.dt_bias, dt_softplus=True,
        )  # (B, L, H, P), D included
        return self.out_proj(self.norm(y.flatten(-2), z))

    # -- recurrent -----------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        factory = self._factory()
        return {
            "conv": torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, **factory),
            "ssm": torch.zeros(batch_size, self.nheads, self.d_state, self.headdim, device=factory["device"],
                               dtype=at_least_float32(factory["dtype"])),
        }

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        conv, ssm = state["conv"].clone(), state["ssm"].clone()  # updated in place below
        z, xbc, dt = self._split_in(self.in_proj(x))
        xbc = causal_conv1d_update(xbc, conv, self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu")
        q, k, v, g, xh = self._ssd_inputs(xbc, dt)  # (B, H, .)
        y = linear_attention_step(q, k, v, g, ssm, scale=1.0)  # (B, H, P)
        return self._finish(y.to(x.dtype), xh, z), {"conv": conv, "ssm": ssm}

    state_size_rules = (StateSize(
        "nheads * d_state * headdim + conv_dim * (d_conv - 1)",
        "SSD state (nheads, d_state, headdim), conv inputs of x, B, C (conv_dim, d_conv - 1)"),)
