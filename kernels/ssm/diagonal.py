"""S4D's diagonal state matrices: discretisation (ZOH or bilinear), the convolution kernel, and
the SSM applied to a sequence from a state and to its final state."""

from __future__ import annotations

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.ssm.fftconv import fft_conv
from hybrids.kernels.ssm.vandermonde import (
    vandermonde,
    vandermonde_log,
    vandermonde_reference,
    vandermonde_transpose_log,
)


DISCRETISATIONS = ("zoh", "bilinear")


def discretize_diagonal(
    Lambda: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete (A_bar, B_bar) of the diagonal system dx/dt = Lambda x + B u with step dt.

    Lambda, B: (H, N2) complex; dt: (H,) real. ZOH: A_bar = exp(dt Lambda),
    B_bar = (A_bar - 1) / Lambda * B. Bilinear: A_bar = (1 + dt/2 Lambda) / (1 - dt/2 Lambda),
    B_bar = dt B / (1 - dt/2 Lambda).
    """
    dt_lambda = dt[:, None] * Lambda
    if method == "zoh":
        A_bar = torch.exp(dt_lambda)
        return A_bar, torch.expm1(dt_lambda) / Lambda * B
    if method == "bilinear":
        half = dt_lambda / 2
        return (1 + half) / (1 - half), dt[:, None] * B / (1 - half)
    raise ValueError(f"unknown discretisation {method!r}; use one of {DISCRETISATIONS}")


def diagonal_kernel(
    Lambda: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    length: int,
    method: str = "zoh",
    backend: str | None = None,
) -> torch.Tensor:
    """S4D convolution kernel ``K[h, l] = 2 Re sum_n C_n B_bar_n A_bar_n^l`` -> (H, length) real."""
    from hybrids.kernels.ssm import VANDERMONDE

    A_bar, B_bar = discretize_diagonal(Lambda, B, dt, method)
    if VANDERMONDE.select(Lambda.device, None, backend) == "reference":
        return vandermonde_reference(C * B_bar, A_bar, length)
    if method == "zoh":  # log A_bar is dt * Lambda exactly: no complex log needed
        return vandermonde_log(C * B_bar, dt[:, None] * Lambda, length)
    return vandermonde(C * B_bar, A_bar, length, backend=backend)


def diagonal_ssm(
    u: torch.Tensor,
    Lambda: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor | None = None,
    method: str = "zoh",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
):
    """Run S4D's SSM over ``u`` from an optional state -> y (batch, H, L) [, final state].

    The recurrence, with x_(-1) = ``initial_state`` and (A_bar, B_bar) from
    :func:`discretize_diagonal`::

        x_t = A_bar x_(t-1) + B_bar u_t,        y_t = 2 Re(C . x_t) + D u_t

    Shapes: u (batch, H, L) real; Lambda, B, C (H, N2) complex; dt, D (H,); states
    (batch, H, N2), the kept half of the modes as in the S4D mixer's ``{"x": ...}``, in the
    complex dtype of Lambda. Returns y in u's dtype, and the state after the last input when
    ``output_final_state``.

    The parallel path (the default backend) is the kernel + FFT convolution of the zero-state
    case plus two Vandermonde-type sums, chunked over L like the kernel (never a
    (batch, H, L, N2) tensor): the state's share of the outputs,
    ``2 Re sum_n C_n A_bar_n^(t+1) x0_n``, and the final state,
    ``A_bar^L x0 + B_bar sum_s A_bar^(L-1-s) u_s``. ``backend="recurrent"``
    (``HYBRIDS_DIAGONAL_SSM_BACKEND``) steps the recurrence instead: the reference.
    """
    from hybrids.kernels.ssm import DIAGONAL_SSM

    if not u.is_floating_point():
        raise TypeError(f"u: expected a floating-point tensor (batch, H, L), got {u.dtype}")
    if u.ndim != 3 or u.shape[1] != Lambda.shape[-2]:
        raise ValueError(f"u: expected (batch, H={Lambda.shape[-2]}, L), got shape {tuple(u.shape)}")
    if DIAGONAL_SSM.select(u.device, u.dtype, backend) == "recurrent":
        return diagonal_ssm_recurrent(u, Lambda, B, C, dt, D, method, initial_state, output_final_state)
    length = u.shape[-1]
    if length == 0:
        y = u.clone()
        if not output_final_state:
            return y
        zeros = torch.zeros(u.shape[0], *Lambda.shape, dtype=Lambda.dtype, device=u.device)
        return y, zeros if initial_state is None else initial_state.to(Lambda.dtype)
    kernel = diagonal_kernel(Lambda, B, C, dt, length, method)  # (H, L)
    if initial_state is None and not output_final_state:
        return fft_conv(u, kernel, D)
    A_bar, B_bar = discretize_diagonal(Lambda, B, dt, method)  # (H, N2) each
    # log A_bar: exactly dt Lambda for ZOH; any branch gives the same integer powers otherwise.
    log_A = dt[:, None] * Lambda if method == "zoh" else torch.log(A_bar)
    if initial_state is None:
        y = fft_conv(u, kernel, D)
    else:
        x0 = initial_state.to(Lambda.dtype)  # (batch, H, N2)
        from_state = vandermonde_log(C * A_bar * x0, log_A, length)  # (batch, H, L)
        work = torch.promote_types(at_least_float32(u.dtype), kernel.dtype)
        y = (fft_conv(u.to(work), kernel, D) + from_state).to(u.dtype)
    if not output_final_state:
        return y
    state = B_bar * vandermonde_transpose_log(u, log_A)  # (batch, H, N2)
    if initial_state is not None:
        state = state + torch.exp(length * log_A) * x0
    return y, state


def diagonal_ssm_recurrent(
    u: torch.Tensor,
    Lambda: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor | None = None,
    method: str = "zoh",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
):
    """:func:`diagonal_ssm` by stepping the recurrence, one Python step per input: the reference."""
    A_bar, B_bar = discretize_diagonal(Lambda, B, dt, method)  # (H, N2)
    batch, H, length = u.shape
    x = (torch.zeros(batch, H, Lambda.shape[-1], dtype=Lambda.dtype, device=u.device) if initial_state is None
         else initial_state.to(Lambda.dtype))
    outputs = []
    for t in range(length):
        x = A_bar * x + B_bar * u[..., t, None].to(Lambda.dtype)
        outputs.append(2 * (C * x).sum(-1).real)
    y = torch.stack(outputs, dim=-1) if outputs else u.new_zeros(u.shape, dtype=Lambda.real.dtype)
    if D is not None:
        y = y + u * D[:, None]
    y = y.to(u.dtype)
    return (y, x) if output_final_state else y
