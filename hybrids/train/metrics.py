"""What the LightningModule measures: token-weighted epoch means that keep NaN, the extra metrics
a data module may ask for, and their per-length variants."""

from __future__ import annotations

import torch
from torchmetrics import Metric

# Metrics a data module may ask for beyond loss and accuracy (its ``extra_metrics``).
EXTRA_METRICS = ("exact", "bpb")


def length_key(name: str, length: int) -> str:
    """The metric's key for one test length (logged as ``test/<name>@<length>``)."""
    return f"test_{name}_at_{length}"


def exact_fraction(rows: torch.Tensor, valid: torch.Tensor, hit: torch.Tensor, batch: int):
    """(fraction of the batch's labelled examples whose every labelled token is right, their count).

    ``rows``: the example of each target; ``valid``, ``hit``: whether each target is labelled and
    predicted right (all (n,)); ``batch``: the number of examples."""
    labelled = torch.bincount(rows[valid], minlength=batch)
    right = torch.bincount(rows[hit], minlength=batch)
    examples = labelled > 0
    count = examples.sum().clamp(min=1).float()
    return ((examples & (right == labelled)).sum().float() / count, count)


class WeightedMean(Metric):
    """Weighted mean over an epoch that keeps NaN: a non-finite value makes the mean NaN.

    (torchmetrics' MeanMetric drops NaN by default, and with ``nan_strategy="disable"`` it also
    drops the weights.)
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        self.total += (value.float() * weight.float()).sum()
        self.weight += weight.float().sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.weight
