"""Callbacks the CLI adds to every ``fit``: stopping cleanly on SIGTERM / SIGINT, a validation at
the last step of a run stopped by ``max_steps``, and stopping once the task is solved."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from hybrids.learning_status import Criterion

# Exit status of a run stopped by a signal: the shell's convention, 128 + the signal's number.
EXIT_CODES = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


class Interrupted(Exception):
    """Training was stopped by a signal after saving a checkpoint (``checkpoint``, or None)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, why_unsaved: str = "checkpointing is off") -> None:
        name = signal.Signals(signum).name
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else f"no checkpoint saved ({why_unsaved})"
        super().__init__(f"{name} at step {step}: {saved}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signum]


class Paused(Exception):
    """Training was paused at the first validation at or after ``--pause_at_step`` (successive
    halving's rungs, hybrids.lab.sweeps.halving), after saving a checkpoint to resume from."""

    exit_code = 75  # sysexits' EX_TEMPFAIL: not finished, run it again to go on

    def __init__(self, step: int, validated_at: int, checkpoint: Path | None) -> None:
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved (checkpointing is off)"
        super().__init__(f"paused after the validation at step {validated_at} (--pause_at_step): {saved}")
        self.step, self.validated_at, self.checkpoint = step, validated_at, checkpoint


class GracefulInterrupt(Callback):
    """On SIGTERM or SIGINT during ``fit``: stop at the next point where the training state is
    whole, save ``last.ckpt`` there, and raise :class:`Interrupted`, which the CLI turns into exit
    status 143 (SIGTERM) or 130 (SIGINT).

    Where the run stops:

    - during a training epoch, after the batch that completes the current optimiser step (with
      ``accumulate_grad_batches > 1`` a checkpoint in the middle of an accumulation would lose
      the gradients accumulated so far); ``--ckpt_path last`` resumes exactly there;
    - during validation (or the sanity check), validation first finishes: mid-epoch, the run stops
      at the next training step; at the end of an epoch, once the epoch's checkpoint is written.

    A second SIGINT stops at once (Ctrl-C twice); a second SIGTERM is ignored while the checkpoint
    is written. Under distributed training the processes agree (any process that received the
    signal stops them all at the same step). Lightning's own SIGTERM handling, which would exit
    with status 0 and no checkpoint, is held back while this callback acts.

    ``pause_at``: after the first validation at or after this optimiser step, stop at the end of
    the next training step the same way (the checkpoint where the training state is whole, so the
    run resumes exactly) and raise :class:`Paused`, unless the run is ending there anyway (solved,
    or its budget reached).
    """

    def __init__(self, pause_at: int | None = None) -> None:
        self.pause_at = pause_at
        self._validated_at: int | None = None  # the validation that triggered the pause
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._trainer: L.Trainer | None = None

    def _handle(self, signum, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            # The second Ctrl-C: stop now, wherever the run is. Not KeyboardInterrupt, which
            # Lightning turns into exit status 1: the run was stopped by SIGINT, so 130. The last
            # checkpoint written stays whole (checkpoints are replaced atomically).
            step = self._trainer.global_step if self._trainer is not None else -1
            raise Interrupted(signal.SIGINT, step, None, why_unsaved="a second Ctrl-C stopped it at once")
        self.received = self.received or signum

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        self._trainer = trainer
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pause_at is not None and not trainer.sanity_checking and trainer.global_step >= self.pause_at:
            if self._validated_at is None:
                self._validated_at = trainer.global_step

    def _pending(self, trainer: L.Trainer) -> int | None:
        """The signal to act on, agreed by every process (None: carry on); 0 for a due pause."""
        self._hold_back_lightning(trainer)
        received = self.received
        if trainer.world_size > 1:
            code = torch.tensor(int(received or 0), device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(code, reduce_op="max")) or None
        budget_reached = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if received is None and self._validated_at is not None and not trainer.should_stop and not budget_reached:
            # A pause: every process validated at the same step, so every process agrees. Not when
            # the run ends here anyway (solved: should_stop is set; or its budget of steps reached,
            # checked here because ValidateAtMaxSteps runs after this callback).
            received = 0
        return received

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        accumulate = trainer.accumulate_grad_batches
        at_step_boundary = (batch_idx + 1) % accumulate == 0 or trainer.is_last_batch
        if not at_step_boundary:
            self._hold_back_lightning(trainer)
            return
        signum = self._pending(trainer)
        if signum is not None:
            self._stop(trainer, signum, save=True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._hold_back_lightning(trainer)  # finish validation first

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signum = self._pending(trainer)
        if signum is None:
            return
        if signum == 0 or not (trainer.max_epochs is not None and trainer.max_epochs > 0):
            # Wait for the next training step's end, which resumes exactly: a checkpoint taken
            # here, at an epoch's end, resumes one step off when the run is bounded by max_steps
            # alone (Lightning's max_epochs -1: the logged steps shifted by one and different
            # figures; tests/train/test_runs.py). A pause always waits (after the last epoch there
            # is no next step: the run ends, done, not paused); a signal waits when the run has no
            # epoch bound, where a next step always exists until max_steps ends the run.
            return
        # The epoch is complete. The checkpoint callback (which runs after this one) has either
        # saved at the end of validation already or would save now: save here either way.
        self._stop(trainer, signum, save=True)

    def _hold_back_lightning(self, trainer: L.Trainer) -> None:
        # Lightning registers its SIGTERM handler after on_fit_start (ours runs too, through its
        # handler chain) and would raise its own exit (status 0, no checkpoint) at its next check:
        # take the notice over from it.
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and getattr(connector, "received_sigterm", False):
            connector.received_sigterm = False
            self.received = self.received or signal.SIGTERM

    def _stop(self, trainer: L.Trainer, signum: int, save: bool) -> None:
        checkpoint = None
        callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
        if save and callback is not None and callback.dirpath:
            checkpoint = Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            trainer.save_checkpoint(checkpoint)
            why = signal.Signals(signum).name if signum else "paused"
            rank_zero_info(f"hybrids: {why}: saved {checkpoint} at step {trainer.global_step}")
        if not signum:
            raise Paused(trainer.global_step, self._validated_at, checkpoint)
        raise Interrupted(signum, trainer.global_step, checkpoint)


class ValidateAtMaxSteps(Callback):
    """Validate after the last step when ``max_steps`` ends training mid-epoch.

    Lightning validates at epoch ends (or every ``val_check_interval``), so a run stopped by
    ``--trainer.max_steps 50`` would end with no validation figure at all. Asking the trainer to
    stop at that step, as early stopping does, makes its loop validate first; a stop that falls
    on a validation anyway validates once.
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class StopWhenSolved(Callback):
    """End ``fit`` at the first validation where the task is solved (its
    :class:`~hybrids.learning_status.Criterion`: ``val/acc >= 0.99`` on the synthetic tasks), so
    that a solved run frees its core for the slow learners. The run ends as one stopped by
    ``max_steps`` does: its checkpoints written, its figures those of that validation."""

    def __init__(self, criterion: Criterion) -> None:
        self.criterion = criterion
        self.solved_step: int | None = None

    # The solved step is saved in checkpoints: a solved run resumed (a retry, or a run stopped by a
    # signal during the validation that solved it) stops at once instead of training on.
    def state_dict(self) -> dict[str, int | None]:
        return {"solved_step": self.solved_step}

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        self.solved_step = state_dict.get("solved_step")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.solved_step is not None:
            trainer.should_stop = True
            rank_zero_info(f"hybrids: this run was solved at step {self.solved_step}; not training further "
                           "(--stop_when_solved false trains on)")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.solved_step is not None:
            return
        value = trainer.callback_metrics.get(self.criterion.metric)
        if value is None or not self.criterion.reached(float(value)):
            return
        self.solved_step = trainer.global_step
        trainer.should_stop = True
        rank_zero_info(f"hybrids: solved at step {trainer.global_step}: {self.criterion.metric} {float(value):.4f} "
                       f"reached {self.criterion.threshold}; stopping (--stop_when_solved false trains the whole budget)")
