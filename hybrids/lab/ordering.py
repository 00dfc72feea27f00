"""The order of a sweep's axis values, shared by the two places that break ties between settings:
successive halving's rungs (hybrids.lab.sweeps.halving) and the final selection
(hybrids.lab.analysis.select_points), so both prefer the same setting. Light on purpose: the
analysis must not import the sweep runner (and through it Lightning)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def order_key(value: Any) -> tuple:
    """A sort key over mixed axis values: numbers by value, then text, then missing values last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, 0, "")
    if isinstance(value, (bool, np.bool_)):
        return (0, int(value), "")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value), "")
    return (1, 0, str(value))
