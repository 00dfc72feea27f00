"""The ``"extension"`` backend of the causal convolution: the causal-conv1d package's CUDA kernels."""

from __future__ import annotations

import functools


@functools.cache
def package():
    """The package's (causal_conv1d_fn, causal_conv1d_update), or None where it is not installed."""
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update as update_fn
    except ImportError:
        return None
    return causal_conv1d_fn, update_fn


def causal_conv1d_extension(x, weight, bias, activation, initial_states=None):
    # The dispatcher never sends initial states here (the backend declares it does not take them).
    fn = package()[0]
    return fn(x, weight.contiguous(), None if bias is None else bias.contiguous(), activation=activation)


def causal_conv1d_update_extension(x, conv_state, weight, bias, activation):
    fn = package()[1]
    return fn(x, conv_state, weight.contiguous(), None if bias is None else bias.contiguous(), activation=activation)
