"""Callbacks that inject faults into a real CLI run (used as ``--trainer.callbacks+=...``)."""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Send ``signum`` (SIGTERM by default) to this process once ``global_step`` reaches ``step``:
    at the start of that training batch, so that it arrives while the step runs (``during=
    "train"``), or during the first validation batch after it (``during="validation"``)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), during: str = "train") -> None:
        self.step, self.signum, self.during, self.sent = step, signum, during, False

    def _send(self, trainer) -> None:
        if not self.sent and trainer.global_step >= self.step and not trainer.sanity_checking:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.during == "train":
            self._send(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.during == "validation":
            self._send(trainer)


class HangAtStep(Callback):
    """Block forever once ``global_step`` reaches ``step`` (for a test to SIGKILL the process),
    after touching ``marker`` so the test knows when."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            open(self.marker, "w").close()
            signal.pause()


class PauseOnceAtStep(Callback):
    """Once ``global_step`` reaches ``step``, touch ``marker`` and wait for a signal (for a test
    to interrupt the run at a known point); a run that finds ``marker`` already there, such as
    the same run resumed, does not wait."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker
        self.armed = not os.path.exists(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.armed and trainer.global_step >= self.step:
            self.armed = False
            open(self.marker, "w").close()
            signal.pause()  # returns once a handled signal (the CLI's SIGINT handler) arrives


class TwoSignalsAtStep(Callback):
    """Send ``signum`` twice, ``gap_s`` apart, at the start of the training batch of ``step``: a
    user pressing Ctrl-C twice in quick succession, the second arriving while the run still
    trains."""

    def __init__(self, step: int, signum: int = int(signal.SIGINT), gap_s: float = 0.05) -> None:
        self.step, self.signum, self.gap_s, self.sent = step, signum, gap_s, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step >= self.step and not trainer.sanity_checking:
            self.sent = True
            os.kill(os.getpid(), self.signum)
            time.sleep(self.gap_s)
            os.kill(os.getpid(), self.signum)
