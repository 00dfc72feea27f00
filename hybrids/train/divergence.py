"""Stopping a run whose loss diverged, with a message that says what likely caused it."""

from __future__ import annotations

from typing import Any

# "No divergent step yet", when the first divergent step is reduced over processes by min.
NEVER = 2**62


class DivergenceError(RuntimeError):
    """The training loss became non-finite or exceeded ``max_loss``; the message names the step
    and the likely causes. The CLI exits with status 3."""

    exit_code = 3

    def __init__(self, step: int, loss: float, hparams: Any, precision: str | None) -> None:
        causes = []
        if precision and precision.startswith("16"):
            causes.append(f"precision {precision}: float16 overflows easily; use bf16-mixed (CUDA) or 32-true")
        lr = float(hparams.get("lr", 0.0))
        if lr > 1e-2:
            causes.append(f"lr={lr:g} is high for AdamW (the configs use 1e-3 to 1e-2); lower it")
        causes.append("exploding gradients: lower lr, add warm-up steps, or clip (--trainer.gradient_clip_val=1.0)")
        super().__init__(
            f"training diverged: the loss was {loss:g} at step {step} (limit max_loss={hparams.get('max_loss')}). "
            "Likely causes: " + "; ".join(causes)
        )
        self.step, self.loss = step, loss
