"""The ``"extension"`` backend of the selective scan: mamba_ssm's CUDA op, where installed."""

from __future__ import annotations


def selective_scan_extension(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=None
):
    # The dispatcher never sends an initial_state here (the backend declares it cannot take one).
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
