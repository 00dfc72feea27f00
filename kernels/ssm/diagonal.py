"""S4D's diagonal state matrices: discretisation (ZOH or bilinear) and the convolution kernel."""

from __future__ import annotations

import torch

from hybrids.kernels.ssm.vandermonde import vandermonde, vandermonde_log, vandermonde_reference


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
