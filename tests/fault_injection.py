"""Callbacks that inject faults into a real CLI run (used as ``--trainer.callbacks+=...``)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Send ``signum`` (SIGTERM by default) to this process once ``global_step`` reaches ``step``."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class HangAtStep(Callback):
    """Block forever once ``global_step`` reaches ``step`` (for a test to SIGKILL the process),
    after touching ``marker`` so the test knows when."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            open(self.marker, "w").close()
            signal.pause()
