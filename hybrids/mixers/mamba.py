"""Mamba: the selective state-space block of Gu & Dao (2023), "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", with the parameter names of mamba_ssm's ``Mamba`` module.

One block, for x (batch, L, d_model)::

    x, z  = in_proj(x).chunk(2)                    # (batch, d_inner, L) each, d_inner = expand * d_model
    x     = silu(causal depthwise conv1d(x))       # width d_conv
    dt, B, C = x_proj(x).split(dt_rank, d_state, d_state)
    delta = softplus(dt_proj(dt))                  # (batch, d_inner, L): input-dependent step
    y     = selective_scan(x, delta, A, B, C, D, z) # A = -exp(A_log), S4D-Real init -(1..d_state)
    out   = out_proj(y)

Falcon-Mamba's variant (``ssm_input_norm_eps``) RMS-normalises dt, B and C, without weights,
right after ``x_proj``; Jamba's gives those norms weights (``ssm_input_norm_weights``).

``dt_proj``'s bias is handed to the scan as ``delta_bias`` (with ``delta_softplus``), as
mamba_ssm does, so that the kernel fuses it. The recurrent state per sequence is the scan state
``h`` (d_inner, d_state), kept in float32, and the last ``d_conv - 1`` inputs of the
convolution (d_inner, d_conv - 1), all that the next output reads besides the new input
(mamba_ssm's cache keeps ``d_conv`` columns, one of them dead weight):
``state_size = d_inner * (d_state + d_conv - 1)`` whatever the sequence length.

Paths:

- ``forward``: ``hybrids.kernels.conv`` then ``hybrids.kernels.scan`` (whose
  dispatcher picks the backend for the device; ``scan_backend`` forces one).
- On CUDA with mamba-ssm and causal-conv1d installed, ``use_fast_path`` and no backend forced
  (not ``scan_backend``, ``HYBRIDS_SELECTIVE_SCAN_BACKEND`` nor ``HYBRIDS_CAUSAL_CONV1D_BACKEND``),
  2 <= d_conv <= 4 and not float64: mamba_ssm's fused
  ``mamba_inner_fn`` on the same parameters. Not exercised by the test suite (no GPU here).
- On CPU, ``use_fast_path``, no backend forced and float32 or float64 throughout: our fused C++
  block between the projections (``hybrids.kernels.mamba_block``), from a zero state.
- ``prefill``: the unfused path with the kernels' initial and final states (conv tail, scan
  state), never the fused block, which returns no state.
- ``step``: ``causal_conv1d_update`` and ``selective_state_update``.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import at_least_float32, causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from hybrids.kernels import widen as _wide
from hybrids.kernels.conv import BACKEND_ENV as CONV_BACKEND_ENV
from hybrids.kernels.mamba_block import cpu_unavailable as cpu_block_unavailable
from hybrids.kernels.mamba_block import mamba_block_cpu
from hybrids.kernels.scan import BACKEND_ENV as SCAN_BACKEND_ENV
from hybrids.kernels.scan import BACKENDS as SCAN_BACKENDS
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize

DT_INITS = ("random", "constant")
# Device types on which mamba_ssm's fused block may run (a test widens it to check the plumbing).
_FUSED_DEVICES = ("cuda",)


@functools.cache
def _mamba_inner_fn():
    """mamba_ssm's fused block function, or None where mamba-ssm/causal-conv1d are missing."""
    try:
        import causal_conv1d_cuda  # noqa: F401  (mamba_inner_fn needs the compiled conv)
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn
    except ImportError:
        return None
    return mamba_inner_fn


class Mamba(Mixer):
    """The Mamba-1 block (module docstring).

    Args:
        d_model: model width.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the step projection; "auto" = ceil(d_model / 16).
        dt_min, dt_max: initial steps are drawn log-uniformly in [dt_min, dt_max] ...
        dt_init_floor: ... and floored at this value; dt_proj's bias is their inverse softplus.
        dt_init: "random" (dt_proj weight uniform in +-dt_rank^-0.5 * dt_scale) or "constant".
        dt_scale: scale of dt_proj's initial weight.
        conv_bias: bias in the convolution.
        bias: biases in in_proj and out_proj.
        use_fast_path: use a fused block where one can run: mamba_ssm's on CUDA (installed), ours on CPU
            (hybrids.kernels.mamba_block).
        scan_backend: force a ``selective_scan`` backend ("reference", "torch", "cpu", "triton",
            "extension"); None lets the dispatcher choose.
        ssm_input_norm_eps: Falcon-Mamba's variant: the low-rank step, B and C (x_proj's three
            outputs) each RMS-normalised without a weight, with this epsilon, before use. None
            (Mamba) leaves them as they are. The fused blocks have no such norms, so a mixer
            with it set runs the unfused path.
        ssm_input_norm_weights: give those norms learned weights (``dt_norm``, ``b_norm``,
            ``c_norm``, starting at 1), as Jamba's Mamba layers have; needs ``ssm_input_norm_eps``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        scan_backend: str | None = None,
        ssm_input_norm_eps: float | None = None,
        ssm_input_norm_weights: bool = False,
    ) -> None:
        super().__init__(d_model)
        if not isinstance(d_state, int) or d_state <= 0:
            raise ValueError(f"d_state: must be a positive int, got {d_state!r}")
        if not isinstance(d_conv, int) or d_conv <= 0:
            raise ValueError(f"d_conv: must be a positive int (4 in Mamba), got {d_conv!r}")
        if expand <= 0 or int(expand * d_model) <= 0:
            raise ValueError(f"expand: expand * d_model must be at least 1, got expand={expand}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or isinstance(dt_rank, bool) or dt_rank <= 0:
            raise ValueError(f"dt_rank: must be a positive int or 'auto' (ceil(d_model / 16)), got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init not in DT_INITS:
            raise ValueError(f"dt_init: unknown {dt_init!r}; use one of {DT_INITS}")
        if dt_init_floor < 0:
            raise ValueError(f"dt_init_floor: must be >= 0, got {dt_init_floor}")
        if scan_backend is not None and scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend: unknown {scan_backend!r}; use one of {SCAN_BACKENDS} or None")
        if ssm_input_norm_eps is not None and (isinstance(ssm_input_norm_eps, bool) or not 0 < ssm_input_norm_eps < 1):
            raise ValueError(f"ssm_input_norm_eps: must be in (0, 1) or None, got {ssm_input_norm_eps!r}")
        if not isinstance(ssm_input_norm_weights, bool) or (ssm_input_norm_weights and ssm_input_norm_eps is None):
            raise ValueError(f"ssm_input_norm_weights: true or false, and true only with ssm_input_norm_eps set, "
                             f"got {ssm_input_norm_weights!r}")
        self.ssm_input_norm_eps, self.ssm_input_norm_weights = ssm_input_norm_eps, ssm_input_norm_weights
        self.d_state, self.d_conv, self.expand, self.dt_rank = d_state, d_conv, expand, dt_rank
        self.d_inner = int(expand * d_model)
        self.use_fast_path, self.scan_backend = use_fast_path, scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

        # Step: dt_proj(dt) starts at scale dt_rank^-0.5 * dt_scale; its bias makes the initial
        # softplus steps log-uniform in [dt_min, dt_max] (floored), per channel.
        std = dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        # S4D-Real: A[d, n] = -(n + 1), stored as its log so that A stays negative.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        if ssm_input_norm_weights:  # Jamba's norms on dt, B and C
            self.dt_norm = nn.Parameter(torch.ones(dt_rank))
            self.b_norm = nn.Parameter(torch.ones(d_state))
            self.c_norm = nn.Parameter(torch.ones(d_state))
        # The SSM's own parameters are not regularised (mamba_ssm's practice; hybrids.train.module reads it).
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True

    # -- parallel ------------------------------------------------------------------------------

    def _scan_kwargs(self) -> dict:
        return {} if self.scan_backend is None else {"backend": self.scan_backend}

    def _ssm_inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The conv's output u (..., d_inner) -> x_proj's low-rank step (..., dt_rank), B and C
        (..., d_state), each RMS-normalised (in float32 or wider) where ssm_input_norm_eps is set."""
        parts = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.ssm_input_norm_eps is None:
            return parts
        weights = (self.dt_norm, self.b_norm, self.c_norm) if self.ssm_input_norm_weights else (None,) * 3
        return tuple(  # type: ignore[return-value]
            F.rms_norm(_wide(p), (p.shape[-1],), weight=None if w is None else _wide(w), eps=self.ssm_input_norm_eps).to(p.dtype)
            for p, w in zip(parts, weights)
        )

    def fused_path_unavailable(self, device_type: str, dtype: torch.dtype) -> str | None:
        """None if ``forward`` runs mamba_ssm's fused block on inputs of this device and dtype,
        else why not."""
        if not self.use_fast_path:
            return "use_fast_path=False"
        if self.ssm_input_norm_eps is not None:
            return "ssm_input_norm_eps is set (Falcon-Mamba's norms): the fused block has none"
        if device_type not in _FUSED_DEVICES:
            return f"mamba_ssm's fused block runs on CUDA tensors, got {device_type}"
        if self.scan_backend is not None or os.environ.get(SCAN_BACKEND_ENV) or os.environ.get(CONV_BACKEND_ENV):
            return "a kernel backend is forced (scan_backend or an environment variable)"
        if not 2 <= self.d_conv <= 4:
            return f"causal-conv1d supports widths 2 to 4, got d_conv={self.d_conv}"
        if dtype == torch.float64:
            return "mamba_ssm's CUDA kernels take float32, float16 and bfloat16"
        if _mamba_inner_fn() is None:
            return "mamba-ssm and causal-conv1d are not installed (`pip install -e '.[cuda]'`)"
        return None

    def cpu_block_unavailable(self, xz: torch.Tensor, A: torch.Tensor) -> str | None:
        """None if ``forward`` runs the fused C++ block (hybrids.kernels.mamba_block) on in_proj's
        output ``xz`` and ``A``, else why not."""
        if not self.use_fast_path:
            return "use_fast_path=False"
        if self.ssm_input_norm_eps is not None:
            return "ssm_input_norm_eps is set (Falcon-Mamba's norms): the fused block has none"
        if self.scan_backend is not None or os.environ.get(SCAN_BACKEND_ENV) or os.environ.get(CONV_BACKEND_ENV):
            return "a kernel backend is forced (scan_backend or an environment variable)"
        return cpu_block_unavailable(xz, A, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                                     self.dt_proj.bias, self.D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x)  # (B, L, 2 * d_inner)
        A = -torch.exp(_wide(self.A_log))  # (d_inner, N)
        if self.fused_path_unavailable(x.device.type, x.dtype) is None:
            return _mamba_inner_fn()(
                xz.transpose(1, 2).contiguous(), self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, A, None, None, _wide(self.D),
                delta_bias=_wide(self.dt_proj.bias), delta_softplus=True,
            )
        if self.cpu_block_unavailable(xz, A) is None:
            y = mamba_block_cpu(xz, self.conv1d.weight[:, 0, :], self.conv1d.bias, self.x_proj.weight,
                                self.dt_proj.weight, self.dt_proj.bias, A, self.D)  # (B, L, d_inner)
            return self.out_proj(y)
        return self._unfused(xz.transpose(1, 2), A)

    def _unfused(self, xz: torch.Tensor, A: torch.Tensor, state: State | None = None, final_state: bool = False):
        """The block on our kernels from in_proj's output xz (B, 2 * d_inner, L): the mixer's
        output (B, L, d_model) [and the state after it]. ``state`` (None: zero) feeds the conv's
        last d_conv - 1 inputs and the scan's h to the kernels as their initial states; with
        ``final_state`` the kernels return theirs (the causal-conv1d package's and mamba_ssm's
        argument names), which forces no backend but rules out those that cannot return or take
        them (the dispatcher's choice)."""
        u, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        weight = self.conv1d.weight[:, 0, :]  # (d_inner, d_conv)
        conv0 = None if state is None else state["conv"].to(u.dtype)  # (B, d_inner, d_conv - 1)
        out = causal_conv1d(u, weight, self.conv1d.bias, activation="silu", initial_states=conv0,
                            return_final_states=final_state)
        u, conv = out if final_state else (out, None)  # (B, d_inner, L), its last d_conv - 1 inputs
        dt, B, C = self._ssm_inputs(u.transpose(1, 2))
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); bias goes to the scan
        # Only a given state goes to the scan, so that a prefill from zero can still run on a
        # backend that takes no initial_state (mamba_ssm's "extension").
        h0 = None if state is None else state["ssm"]  # (B, d_inner, d_state)
        out = selective_scan(
            u, delta, A, B.transpose(1, 2), C.transpose(1, 2), _wide(self.D), z=z,
            delta_bias=_wide(self.dt_proj.bias), delta_softplus=True, return_last_state=final_state,
            initial_state=h0, **self._scan_kwargs(),
        )  # (B, d_inner, L) [, (B, d_inner, d_state)]
        if not final_state:
            return self.out_proj(out.transpose(1, 2))
        y, h = out
        # Back in init_state's layout and dtypes: conv (B, d_inner, d_conv - 1) in the parameters'
        # dtype, a copy (not a view that keeps the whole prompt alive); h in float32 or wider.
        dtype = self._factory()["dtype"]
        conv = conv.to(dtype).clone(memory_format=torch.contiguous_format)
        return self.out_proj(y.transpose(1, 2)), {"conv": conv, "ssm": h.to(at_least_float32(dtype))}

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (B, L, d_model) -> outputs (B, L, d_model) and the state after it, from
        ``state`` (zero if None): the parallel conv and scan over the prompt, never ``step``.

        Always on our kernels: mamba_ssm's fused ``mamba_inner_fn`` (which ``forward`` may take
        on CUDA) returns no state. Chunked prefill, each call from the last one's state, equals
        one call over the whole.
        """
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2 * d_inner, L)
        return self._unfused(xz, -torch.exp(_wide(self.A_log)), state, final_state=True)

    # -- recurrent -----------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        factory = self._factory()
        ssm_dtype = at_least_float32(factory["dtype"])
        return {
            "conv": torch.zeros(batch_size, self.d_inner, self.d_conv - 1, **factory),
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=factory["device"], dtype=ssm_dtype),
        }

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # The kernels update states in place: work on copies, so the caller's state stays valid.
        conv, ssm = state["conv"].clone(), state["ssm"].clone()
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, d_inner) each
        u = causal_conv1d_update(u, conv, self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu")
        dt, B, C = self._ssm_inputs(u)
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(_wide(self.A_log))
        y = selective_state_update(
            ssm, u, dt, A, B, C, _wide(self.D), z=z, dt_bias=_wide(self.dt_proj.bias), dt_softplus=True
        )
        return self.out_proj(y), {"conv": conv, "ssm": ssm}

    state_size_rules = (StateSize("d_inner * d_state + d_inner * (d_conv - 1)",
                                  "scan state (d_inner, d_state), conv inputs (d_inner, d_conv - 1)"),)
