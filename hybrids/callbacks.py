"""Callbacks the CLI adds to every ``fit``: stopping cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

# Exit status of a run stopped by a signal: the shell's convention, 128 + the signal's number.
EXIT_CODES = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


class Interrupted(Exception):
    """Training was stopped by a signal after saving a checkpoint (``checkpoint``, or None)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        name = signal.Signals(signum).name
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved (checkpointing is off)"
        super().__init__(f"{name} at step {step}: {saved}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signum]


class GracefulInterrupt(Callback):
    """On SIGTERM or SIGINT during ``fit``, finish the current batch, save ``last.ckpt`` (a
    mid-epoch checkpoint from which ``--ckpt_path last`` resumes exactly) and raise
    :class:`Interrupted`, which the CLI turns into exit status 143 (SIGTERM) or 130 (SIGINT).

    A second signal while the checkpoint is written is ignored; the handlers in place before
    ``fit`` are restored after it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signum

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        for signum in EXIT_CODES:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook's worker): leave signals alone
                pass

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.received is None:
            return
        checkpoint = None
        callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
        if callback is not None and callback.dirpath:
            checkpoint = Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            trainer.save_checkpoint(checkpoint)
            rank_zero_info(f"hybrids: {signal.Signals(self.received).name}: saved {checkpoint} at step {trainer.global_step}")
        raise Interrupted(self.received, trainer.global_step, checkpoint)
