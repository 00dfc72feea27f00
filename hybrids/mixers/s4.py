"""S4 (diagonal plus low rank) and S4D (diagonal) state-space mixers.

Each of the H = d_model channels runs its own linear time-invariant SSM

    x'(t) = A x(t) + B u(t),    y(t) = Re(C x(t)) + D u(t)

with N states kept as N/2 complex modes by conjugate symmetry. Training uses the convolution
form: the length-L kernel K is generated from (A, B, C, dt) and applied with an FFT in
O(L log L) (the kernels' ``diagonal_ssm`` / ``dplr_ssm``, which also start from and return a
recurrent state, for prefill and chunked evaluation). Decoding uses the recurrent form, one
discretised step per token. The output passes through GELU, dropout, and a GLU gate
(Linear(H, 2H) then GLU), as in the S4 papers' blocks.

Initialisation follows state-spaces/s4: HiPPO-derived B is clipped to |Im B| <= ``B_clip``
(2.0) after the change of basis to the modes (S4, every measure; S4D-LegS), and the random C is
the output matrix itself, which S4 turns into its C~ for the kernel length (see :class:`S4`).

Shapes: x (batch, L, H) at the mixer boundary, u (batch, H, L) inside; Lambda, B, C (H, N2)
complex; P (rank, H, N2) complex; dt (H,).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import widen as _wide
from hybrids.kernels.ssm import (
    DISCRETISATIONS,
    conjugate_full,
    diagonal_kernel,
    diagonal_ssm,
    discretize_diagonal,
    dplr_bilinear_dense,
    dplr_c_tilde,
    dplr_double_c_tilde,
    dplr_kernel,
    dplr_precompute,
    dplr_ssm,
)
from hybrids.memory import available_memory, format_bytes
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize
from hybrids.kernels.ssm.hippo import DIAGONAL_INITS, MEASURES, diagonal_init, nplr, required_rank

# HiPPO-LegT, LagT and FouT put the real part of every mode of Lambda at exactly 0 (their
# normal parts are skew-symmetric); the exp parametrisation needs it strictly negative, so it
# starts at -REAL_FLOOR instead. The full A = Lambda - P P^* stays strictly stable.
REAL_FLOOR = 1e-4


def complex_parameter(value: torch.Tensor) -> nn.Parameter:
    """Complex values stored as a real (..., 2) parameter, so that .double()/.half() cast them."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex128).contiguous()).to(torch.float32).clone())


def as_complex(parameter: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(_wide(parameter).contiguous())


def stable_diagonal(log_neg_real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """Lambda = -exp(log_neg_real) + i imag, (H, N2) complex."""
    return torch.complex(-torch.exp(_wide(log_neg_real)), _wide(imag))


def no_weight_decay(*parameters: nn.Parameter) -> None:
    # The SSM's own parameters (dynamics, input matrix, step) are not regularised (S4's practice).
    for p in parameters:
        p._no_weight_decay = True


class _SSMMixer(Mixer):
    """What S4 and S4D share: the step size, D, the conv/recurrent plumbing and the output gate."""

    def __init__(
        self, d_model: int, d_state: int, dt_min: float, dt_max: float, dropout: float, B_clip: float | None
    ) -> None:
        super().__init__(d_model)
        if d_state <= 0 or d_state % 2:
            raise ValueError(f"d_state: must be a positive even number (N/2 complex modes), got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if B_clip is not None and not B_clip > 0:
            raise ValueError(f"B_clip: must be positive or None (no clipping), got {B_clip}")
        self.d_state, self.B_clip = d_state, B_clip
        # log dt ~ U[log dt_min, log dt_max] per channel.
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, 2 * d_model)
        no_weight_decay(self.log_dt)

    def _init_modes(self, Lambda: torch.Tensor, B: torch.Tensor) -> None:
        """Per-channel copies of the initial modes Lambda, B (N2,) and a random C (H, N2)."""
        Lambda = Lambda.expand(self.d_model, -1)
        # Re(Lambda) = -exp(log_neg_real) < 0 keeps every mode stable whatever training does.
        self.log_neg_real = nn.Parameter(torch.log((-Lambda.real).clamp(min=REAL_FLOOR)).float())
        self.imag = nn.Parameter(Lambda.imag.float().clone())
        self.B = complex_parameter(B.expand(self.d_model, -1))
        C = torch.randn(self.d_model, self.d_state // 2, dtype=torch.complex128) * math.sqrt(0.5)
        self.C = complex_parameter(C)
        no_weight_decay(self.log_neg_real, self.imag, self.B)

    # Subclasses provide the kernel, the SSM over a sequence (conv mode) and the discrete system
    # (recurrent mode).
    def kernel(self, length: int) -> torch.Tensor:  # (H, length) real
        raise NotImplementedError

    def _ssm(self, u: torch.Tensor, initial_state: torch.Tensor | None = None, output_final_state: bool = False):
        """The SSM (D included, before the gate) over u (B, H, L) from a state (B, H, N2), in
        parallel: y (B, H, L) [and the state after u, as ``step`` keeps it]. ``forward`` runs it
        from zero; a prefill is ``self._ssm(u, state["x"], True)``."""
        raise NotImplementedError

    def _recurrence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A_bar, B_bar, C) for the kept modes: see ``_advance``."""
        raise NotImplementedError

    def _advance(self, A_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """(..., H) SSM output -> gated (..., H) mixer output."""
        return F.glu(self.out_proj(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.transpose(1, 2)  # (B, H, L)
        y = self._ssm(u)  # kernel + FFT convolution; the kernel stays in float32 or wider
        return self._output(y.transpose(1, 2))

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (B, L, H) -> outputs (B, L, H) and the state {"x": (B, H, N2) complex} after
        it, from ``state`` (zero if None), in parallel: the SSM op's kernel + FFT convolution for
        the outputs and its closed-form final state, never a loop over L.

        The op runs a chunk from a state whatever the chunk's position in the sequence, so
        chunked prefill (each call continuing from the last one's state) equals one call over
        the whole. S4: a prompt longer than ``l_max`` grows the kernel length first (``_ssm``
        attunes C~, as ``forward`` does); ``step`` then rebuilds its recurrence for the new
        length, which represents the same C.
        """
        u = x.transpose(1, 2)  # (B, H, L)
        x0 = None if state is None else state["x"]  # (B, H, N2) complex, or None: zero
        y, final = self._ssm(u, x0, True)  # (B, H, L), (B, H, N2) in Lambda's complex dtype
        # In step's complex dtype (complex64, complex128 for float64 parameters), and a tensor of
        # its own: S4's op returns the kept half of a (B, H, N) state, a view of twice the memory.
        final = final.to(self._complex_dtype()).clone(memory_format=torch.contiguous_format)
        return self._output(y.transpose(1, 2)), {"x": final}

    def _complex_dtype(self) -> torch.dtype:
        return torch.complex128 if self.D.dtype == torch.float64 else torch.complex64

    def init_state(self, batch_size: int) -> State:
        zeros = torch.zeros(batch_size, self.d_model, self.d_state // 2, dtype=self._complex_dtype(), device=self.D.device)
        return {"x": zeros}

    def _cached_recurrence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Building the discrete system can cost O(H N^3) (S4): do it once per parameter version
        # (and kernel length: S4 recovers C from C~ with it).
        key = self._parameter_version()
        cache = getattr(self, "_recurrence_cache", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                cache = (key, self._recurrence())
            self._recurrence_cache = cache
        return cache[1]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # For decoding: the discrete system is built without gradients to the SSM parameters
        # (train with forward; gradients still flow to x, D and the output projection).
        A_bar, B_bar, C = self._cached_recurrence()
        u = x  # (B, H)
        h = self._advance(A_bar, state["x"]) + B_bar * u[..., None].to(B_bar.dtype)  # (B, H, N2)
        y = 2 * (C * h).sum(-1).real.to(x.dtype) + self.D * u
        return self._output(y), {"x": h}

    def _length_key(self) -> int:
        return 0

    def _parameter_version(self) -> tuple:
        """Changes whenever a parameter is replaced or updated in place, or the dtype or kernel
        length changes: the key of what is computed once from the parameters."""
        return tuple((p.data_ptr(), p._version) for p in self.parameters()) + (self.D.dtype, self._length_key())

    # N/2 complex modes per channel, counted as two reals each.
    state_size_rules = (StateSize("d_model * d_state", "d_state / 2 complex modes per channel"),)


class S4D(_SSMMixer):
    """S4D: diagonal state matrices, Vandermonde kernel (Gu et al. 2022).

    Args:
        d_model: channels H.
        d_state: state size N per channel (N/2 complex modes).
        init: "legs" (S4D-LegS), "lin" (S4D-Lin), "inv" (S4D-Inv) or "real" (S4D-Real).
        discretization: "zoh" or "bilinear".
        dt_min, dt_max: range of the log-uniform initial step.
        dropout: after the activation.
        learn_B: train B (otherwise fixed at its initialisation).
        B_clip: clip the imaginary part of the initial B to [-B_clip, B_clip], None for no
            clipping. As state-spaces/s4 (2.0), where it only touches S4D-LegS: the other inits
            have B = 1. At N = 64, S4D-LegS has 11 of its 32 modes clipped.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "legs",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        learn_B: bool = True,
        B_clip: float | None = 2.0,
    ) -> None:
        super().__init__(d_model, d_state, dt_min, dt_max, dropout, B_clip)
        if init not in DIAGONAL_INITS:
            raise ValueError(f"init: unknown S4D initialisation {init!r}; use one of {DIAGONAL_INITS}")
        if discretization not in DISCRETISATIONS:
            raise ValueError(f"discretization: unknown {discretization!r}; use one of {DISCRETISATIONS}")
        self.init, self.discretization = init, discretization
        Lambda, B = diagonal_init(init, d_state, B_clip=B_clip)  # (N2,) each
        self._init_modes(Lambda, B)
        self.B.requires_grad_(learn_B)

    def _system(self):
        return stable_diagonal(self.log_neg_real, self.imag), as_complex(self.B), as_complex(self.C), torch.exp(_wide(self.log_dt))

    def kernel(self, length: int) -> torch.Tensor:
        Lambda, B, C, dt = self._system()
        return diagonal_kernel(Lambda, B, C, dt, length, self.discretization)

    def _ssm(self, u, initial_state=None, output_final_state=False):
        Lambda, B, C, dt = self._system()
        return diagonal_ssm(u, Lambda, B, C, dt, self.D, self.discretization, initial_state, output_final_state)

    def _recurrence(self):
        Lambda, B, C, dt = self._system()
        A_bar, B_bar = discretize_diagonal(Lambda, B, dt, self.discretization)
        return A_bar, B_bar, C

    def _advance(self, A_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return A_bar * x


class S4(_SSMMixer):
    """S4: diagonal plus low-rank state matrices from HiPPO, Cauchy kernel (Gu et al. 2022).

    A = Lambda - P P^* starts as the NPLR form of the HiPPO matrix of ``measure`` and is trained
    in that form.

    The kernel length and C~. The kernel is evaluated through its generating function truncated
    at a length ``l_max``, which needs S4's C~ = C (I - A_bar^l_max) rather than C; the learned
    parameter ``C`` holds C~, and the buffer ``l_max`` (in the state_dict, so checkpoints load
    with their length) the length it is attuned to. A sequence of length L <= l_max uses the
    first L taps of the length-l_max kernel. As in state-spaces/s4:

    * the random initial C is the output matrix C itself (``l_max`` 0: not attuned yet, C~ = C,
      the limit of an infinitely long kernel); the first input of length L (or an explicit
      ``l_max``, at construction) turns it into C~ for that length;
    * a longer input doubles the length as often as needed, updating C~ in place without
      gradient by C~_2L = C~_L (I + A_bar^L), so the C it represents stays the same (up to
      rounding). With an explicit ``l_max`` this warns once. Do not let it happen between a
      forward and its backward (the in-place update invalidates the graph).

    The recurrent form (``step``) recovers C = C~ (I - A_bar^l_max)^-1 with the current length.

    Args:
        d_model: channels H.
        d_state: state size N per channel (N/2 complex modes).
        measure: HiPPO measure of the initialisation: "legs", "legt", "lagt", "fout" or
            "fourier2" (see :mod:`hybrids.kernels.ssm.hippo` for their conventions).
        rank: rank of the low-rank term; default: the least the measure needs (legt 2, others 1);
            at most ``d_state`` (the rank the correction can reach on d_state states).
        l_max: initial kernel length; None (default) takes it from the first input.
        dt_min, dt_max: range of the log-uniform initial step.
        dropout: after the activation.
        B_clip: clip the imaginary part of the initial B (in the modes' basis) to
            [-B_clip, B_clip], None for no clipping. 2.0 as in state-spaces/s4; at N = 64 it
            clips 11 of LegS's 32 modes (sum |B|^2 over the kept modes: 2048 -> 74.9).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        measure: str = "legs",
        rank: int | None = None,
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        B_clip: float | None = 2.0,
    ) -> None:
        super().__init__(d_model, d_state, dt_min, dt_max, dropout, B_clip)
        if measure not in MEASURES:
            raise ValueError(f"measure: unknown HiPPO measure {measure!r}; use one of {MEASURES}")
        if l_max is not None and (not isinstance(l_max, int) or l_max <= 0):
            raise ValueError(f"l_max: must be a positive int or None (taken from the first input), got {l_max!r}")
        # The kernel is computed at l_max taps (complex, at l_max frequencies) at the first
        # forward: refuse a length whose kernel cannot be held, before training starts.
        available = available_memory("cpu") if l_max is not None else None
        if available is not None and d_model * l_max * 8 > available:
            raise ValueError(f"l_max: a kernel of {l_max:,} taps x {d_model:,} channels takes at least "
                             f"{format_bytes(d_model * l_max * 8)}, more than the {format_bytes(available)} of memory available")
        rank = required_rank(measure) if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise ValueError(f"rank: must be an int (or None for the least the measure needs), got {rank!r}")
        if rank < required_rank(measure):
            raise ValueError(f"rank: measure {measure!r} needs rank >= {required_rank(measure)}, got {rank}")
        if rank > d_state:
            # Each row of P is a real N-vector (P and conj(P) in the full basis), so the correction
            # P P^* on the N-dimensional state has rank <= N = d_state. Rows beyond add parameters
            # and a larger Woodbury solve per frequency, and nothing the model could express.
            # Ranks between d_state / 2 and d_state do add: a row carries N real degrees of freedom.
            raise ValueError(
                f"rank: must be <= d_state ({d_state}): the low-rank term acts on d_state states, so a larger rank "
                f"adds parameters and cost but no expressiveness; got {rank}"
            )
        self.measure, self.rank = measure, rank
        system = nplr(measure, d_state, rank=rank, B_clip=B_clip)
        self._init_modes(system.Lambda, system.B)
        self.P = complex_parameter(system.P[:, None, :].expand(-1, d_model, -1))
        no_weight_decay(self.P)
        # The length C~ is attuned to; 0: not yet (the parameter holds C itself).
        self.register_buffer("l_max", torch.tensor(0, dtype=torch.long))
        # The same length as a Python int, so that reading it never syncs with a GPU; kept equal
        # to the buffer by _attune and by loading a state dict.
        self._kernel_length = 0
        self._warn_on_growth = l_max is not None
        if l_max is not None:
            self._attune(l_max)

    def _system(self, dtype: torch.dtype | None = None):
        Lambda = stable_diagonal(self.log_neg_real, self.imag)
        parts = (Lambda, as_complex(self.P), as_complex(self.B), as_complex(self.C), torch.exp(_wide(self.log_dt)))
        return parts if dtype is None else tuple(p.to(dtype) if p.is_complex() else p.double() for p in parts)

    def _length_key(self) -> int:
        return self._kernel_length

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._kernel_length = int(self.l_max)  # once per load, not per forward

    def _attune(self, length: int) -> None:
        """Make the kernel length at least ``length``, keeping the represented C (see the class)."""
        current = self._kernel_length
        if length <= current:
            return
        with torch.no_grad():
            # Dense powers of A_bar in double precision, as the recurrent form builds them.
            Lambda, P, _, C_tilde, dt = self._system(torch.complex128)
            if current == 0:
                C_tilde, current = dplr_c_tilde(C_tilde, Lambda, P, dt, length), length
            else:
                if self._warn_on_growth:
                    grown = current * 2 ** math.ceil(math.log2(length / current))
                    warnings.warn(
                        f"S4: input of length {length} exceeds l_max={current}; doubling the kernel length to "
                        f"{grown} (C~ updated in place, C unchanged). Set l_max >= {length}, or None to take "
                        "it from the first input.",
                        stacklevel=3,
                    )
                    self._warn_on_growth = False
                while current < length:
                    C_tilde, current = dplr_double_c_tilde(C_tilde, Lambda, P, dt, current), current * 2
            self.C.copy_(torch.view_as_real(C_tilde))
            self.l_max.fill_(current)
            self._kernel_length = current

    def kernel(self, length: int) -> torch.Tensor:
        self._attune(length)
        Lambda, P, B, C_tilde, dt = self._system()
        return dplr_kernel(Lambda, P, B, C_tilde, dt, self._kernel_length)[:, :length]

    def _ssm(self, u, initial_state=None, output_final_state=False):
        self._attune(u.shape[-1])
        Lambda, P, B, C_tilde, dt = self._system()
        # Without gradients (inference), the kernel and the dense system depend on the parameters
        # alone: computed once per parameter version and kernel length, so that a decoder
        # prefilling prompt after prompt pays for an FFT convolution and a contraction only. Not
        # in training mode: a reversible stack's forward pass also runs without gradients, and
        # the parameters change every step (the cache would be rebuilt, and held, each time).
        precomputed = None
        if not torch.is_grad_enabled() and not self.training:
            key = self._parameter_version()
            cache = getattr(self, "_precomputed_cache", None)
            if cache is None or cache[0] != key:
                cache = (key, dplr_precompute(Lambda, P, B, C_tilde, dt, self._kernel_length))
                self._precomputed_cache = cache
            precomputed = cache[1]
        return dplr_ssm(u, Lambda, P, B, C_tilde, dt, self._kernel_length, self.D, None, initial_state,
                        output_final_state, precomputed=precomputed)

    def _recurrence(self):
        # Exact recurrence of the same system, built densely in double precision: the rank term
        # couples all modes, so A_bar is an (N/2 x N) block per channel on the kept half.
        Lambda, P, B, C_tilde, dt = self._system(torch.complex128)
        A_bar, B_bar = dplr_bilinear_dense(Lambda, P, B, dt)  # (H, N, N), (H, N)
        l_max = self._kernel_length
        if l_max == 0:  # not attuned to a length yet: the parameter holds C itself
            C = conjugate_full(C_tilde)
        else:  # C = C~ (I - A_bar^l_max)^-1, solved as a transposed system
            eye = torch.eye(A_bar.shape[-1], dtype=A_bar.dtype, device=A_bar.device)
            power = torch.linalg.matrix_power(A_bar, l_max)
            C = torch.linalg.solve((eye - power).mT, conjugate_full(C_tilde)[..., None])[..., 0]
        half = self.d_state // 2
        dtype = self._complex_dtype()
        return A_bar[:, :half, :].to(dtype), B_bar[:, :half].to(dtype), C[:, :half].to(dtype)

    def _advance(self, A_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Full state = (x, conj x); the kept rows of A_bar act on both halves.
        return torch.einsum("hnm,bhm->bhn", A_bar, conjugate_full(x))
