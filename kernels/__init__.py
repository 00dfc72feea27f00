"""hybrids.kernels: pure functions on tensors (installed from the top-level ``kernels/`` folder).

One package per op, each with a plain-PyTorch reference beside its fast paths and its decode
step where the op has one; one dispatcher (:mod:`hybrids.kernels.dispatch`) picks the backend of
every call. ``python -m hybrids.kernels`` prints which backends are available here.

Nothing here imports Lightning or any module of ``hybrids`` outside ``hybrids.kernels`` (see
docs/design.md, "Layers": the import-linter contract in pyproject.toml checks it).
"""

if __name__ == "kernels":
    # This folder is hybrids.kernels. It is imported under the top-level name "kernels" only where
    # the repository's root is on sys.path (python -c or -m, a notebook or pytest started there),
    # and there it shadows the PyPI package "kernels", which transformers imports whenever that
    # package is installed (it depends on it). Hand such an import over to the PyPI package.
    import os as _os
    import sys as _sys
    from importlib import machinery as _machinery
    from importlib import util as _util

    _root = _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))
    _elsewhere = [p for p in _sys.path if _os.path.realpath(p or _os.curdir) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _elsewhere)
    if _spec is not None and _spec.origin and _os.path.realpath(_spec.origin) == _os.path.realpath(__file__):
        _spec = None  # this folder again, under another spelling of its path
    if _spec is None or _spec.loader is None:
        raise ImportError("no module named 'kernels' outside this repository: its kernels/ folder is "
                          "hybrids.kernels, imported as such", name="kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _module  # what the import statement returns
    _spec.loader.exec_module(_module)
else:
    from hybrids.kernels.conv import causal_conv1d, causal_conv1d_update
    from hybrids.kernels.dispatch import REGISTRY, Backend, BackendUnavailable, Op, describe
    from hybrids.kernels.dtypes import at_least_float32, widen
    from hybrids.kernels.linear import linear_attention, linear_attention_step, log_decay_floor
    from hybrids.kernels.lsh import lsh_attention, lsh_attention_step, lsh_buckets
    from hybrids.kernels.recurrence import linear_recurrence
    from hybrids.kernels.rotary import apply_rotary, rotary_cos_sin
    from hybrids.kernels.scan import selective_scan, selective_state_update
    from hybrids.kernels.sparse import SparsePattern, sparse_attention
    from hybrids.kernels.ssm import (
        cauchy,
        cauchy_reference,
        conjugate_full,
        dense_ssm_state,
        diagonal_kernel,
        diagonal_ssm,
        diagonal_ssm_recurrent,
        direct_conv,
        discretize_diagonal,
        dplr_bilinear_dense,
        dplr_c_tilde,
        dplr_double_c_tilde,
        dplr_kernel,
        dplr_precompute,
        dplr_ssm,
        dplr_ssm_recurrent,
        fft_conv,
        krylov_matrix,
        vandermonde,
        vandermonde_log,
        vandermonde_reference,
        vandermonde_transpose_log,
    )

    __all__ = [
        "Backend",
        "BackendUnavailable",
        "Op",
        "REGISTRY",
        "SparsePattern",
        "apply_rotary",
        "at_least_float32",
        "cauchy",
        "cauchy_reference",
        "causal_conv1d",
        "causal_conv1d_update",
        "conjugate_full",
        "dense_ssm_state",
        "describe",
        "linear_recurrence",
        "diagonal_kernel",
        "diagonal_ssm",
        "diagonal_ssm_recurrent",
        "direct_conv",
        "discretize_diagonal",
        "dplr_bilinear_dense",
        "dplr_c_tilde",
        "dplr_double_c_tilde",
        "dplr_kernel",
        "dplr_precompute",
        "dplr_ssm",
        "dplr_ssm_recurrent",
        "fft_conv",
        "krylov_matrix",
        "linear_attention",
        "linear_attention_step",
        "log_decay_floor",
        "lsh_attention",
        "lsh_attention_step",
        "lsh_buckets",
        "rotary_cos_sin",
        "selective_scan",
        "selective_state_update",
        "sparse_attention",
        "vandermonde",
        "vandermonde_log",
        "vandermonde_reference",
        "vandermonde_transpose_log",
        "widen",
    ]
