"""Rotary settings of a transformers config: transformers 5 keeps them in ``rope_parameters``,
older configs at the top level."""

from __future__ import annotations

from typing import Any

from hybrids.hf.names import ConversionError


def rope_settings(config: dict[str, Any], default_factor: float = 1.0) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor); any RoPE type but the default is refused by name."""
    scaling = config.get("rope_scaling")  # the key before transformers 5 moved it into rope_parameters
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ConversionError(f"rope_scaling: {scaling.get('rope_type', scaling.get('type'))!r} has no counterpart "
                              "in the zoo (supported: plain RoPE)")
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    factor = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", default_factor))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConversionError(f"rope_parameters.rope_type: {rope_type!r} has no counterpart in the zoo "
                              "(supported: 'default')")
    return float(theta), float(factor)
