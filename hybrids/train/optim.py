"""The optimiser: AdamW with decoupled weight decay on matrices only, linear warm-up then cosine
decay, its settings (:class:`OptimConfig`) and their checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
from torch import nn

from hybrids.errors import ConfigError, config_section


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimiser's settings, ``LanguageModel``'s ``optim`` argument (``--model.init_args.optim.lr``).

    Args:
        lr: peak learning rate of AdamW.
        weight_decay: applied to matrices only (``ndim >= 2``), not to norms, biases or vectors, nor
            to parameters a mixer marks with ``_no_weight_decay = True``.
        betas: AdamW betas, each in [0, 1).
        warmup_steps: linear warm-up steps; then cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``, in [0, 1].
    """

    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1

    @config_section("model", "optim")
    def __post_init__(self) -> None:
        check_optimisation(self.lr, self.weight_decay, self.betas, self.warmup_steps, self.min_lr_ratio)
        object.__setattr__(self, "betas", tuple(self.betas))


def _finite_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value!r}")


def check_max_loss(max_loss) -> None:
    """Raise ConfigError unless ``max_loss`` (the divergence limit) is a finite number > 0."""
    _finite_number("max_loss", max_loss)
    if max_loss <= 0:
        raise ConfigError("max_loss", f"must be > 0, got {max_loss}")


def check_optimisation(lr, weight_decay, betas, warmup_steps, min_lr_ratio) -> None:
    """Raise ConfigError naming the optimisation argument out of range (before any training)."""

    _finite_number("lr", lr)
    if lr <= 0:
        raise ConfigError("lr", f"must be > 0, got {lr}")
    _finite_number("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ConfigError("weight_decay", f"must be >= 0, got {weight_decay}")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigError("betas", f"must be two numbers (beta1, beta2), got {betas!r}")
    for beta in betas:
        _finite_number("betas", beta)
        if not 0 <= beta < 1:
            raise ConfigError("betas", f"each must be in [0, 1), got {list(betas)}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError("warmup_steps", f"must be an integer >= 0, got {warmup_steps!r}")
    _finite_number("min_lr_ratio", min_lr_ratio)
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError("min_lr_ratio", f"must be in [0, 1] (a fraction of lr), got {min_lr_ratio}")


def parameter_groups(parameters: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW's groups: matrices (``ndim >= 2``) decay, norms, biases, vectors and parameters a
    mixer marks ``_no_weight_decay = True`` (the SSMs' own) do not."""
    decay, no_decay = [], []
    for p in parameters:
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not getattr(p, "_no_weight_decay", False):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: float, min_lr_ratio: float):
    """The learning-rate factor per step: linear warm-up over ``warmup_steps`` (at most half the
    run), then cosine decay to ``min_lr_ratio`` at ``total_steps``; with no finite end
    (``total_steps`` infinite) it stays at 1 after the warm-up."""
    if math.isfinite(total_steps):
        total = max(int(total_steps), 1)
        warmup = min(warmup_steps, total // 2)
    else:
        total, warmup = total_steps, warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not math.isfinite(total):
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def adamw_warmup_cosine(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float, betas, warmup_steps: int,
    min_lr_ratio: float, total_steps: float,
) -> dict:  # fmt: skip
    """Lightning's ``configure_optimizers`` answer: AdamW on :func:`parameter_groups` and a
    per-step :func:`warmup_cosine` schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(parameters, weight_decay), lr=lr, betas=tuple(betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
