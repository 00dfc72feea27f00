"""hybrids.kernels: pure functions on tensors (installed from the top-level ``kernels/`` folder).

Each op has a plain-PyTorch reference beside its fast paths. Nothing here imports Lightning or
any module of ``hybrids`` outside ``hybrids.kernels`` (see DESIGN.md, "The house").
"""

from hybrids.kernels.rotary import apply_rotary, rotary_cos_sin

__all__ = ["apply_rotary", "rotary_cos_sin"]
