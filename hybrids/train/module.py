"""The LightningModule that trains a :class:`~hybrids.model.HybridLM` on labelled token streams.

Its jobs are delegated by topic: what it measures (:mod:`.metrics`), divergence (:mod:`.divergence`),
the optimiser (:mod:`.optim`), exact resumption (:mod:`.resume`), the states carried in segment
mode (:mod:`.segment_carry`) and long sequences read in chunks (:mod:`.long_context`).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import ConfigError, StateSizeUnknown, config_section
from hybrids.model import HybridLM, StackConfig
from hybrids.model.moe import MoEConfig
from hybrids.train.checkpoints import IDENTITY_KEY
from hybrids.train.divergence import NEVER, DivergenceError
from hybrids.train.long_context import LengthTooLong, labelled_logits_chunked
from hybrids.train.metrics import EXTRA_METRICS, WeightedMean, exact_fraction, length_key
from hybrids.train.model_args import merged_arguments
from hybrids.train.optim import OptimConfig, adamw_warmup_cosine, check_max_loss
from hybrids.train.resume import RNG_KEY, epoch_finished, rng_states, set_rng_states, zero_epoch_means
from hybrids.train.segment_carry import SegmentCarry

__all__ = ["DivergenceError", "LanguageModel"]


def _as_config(value: Any, cls: type, name: str):
    """A dataclass argument as the dataclass: given as one, or as a mapping of its fields."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}", f"{cls.__name__} has no field {unknown[0]!r}; it has {sorted(known)}")
        with config_section("model", name):
            return cls(**value)
    raise ConfigError(name, f"must be a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")


class LanguageModel(L.LightningModule):
    """A hybrid stack trained with next-token cross-entropy on labelled positions.

    Batches are ``(inputs, labels)``, both (B, L) int64; positions whose label is -100 count in
    neither loss nor accuracy (MQAR labels only the values to recall).

    Args:
        stack: the architecture, a :class:`~hybrids.model.config.StackConfig` (or a dict of its
            fields); the CLI sets ``stack.vocab_size`` from the data module (``data.vocab_size``).
        optim: the optimiser's settings, a :class:`~hybrids.train.optim.OptimConfig` (or a dict).
        max_loss: a training loss above this (or not finite) stops the run with
            :class:`DivergenceError`; cross-entropy starts near ``log(vocab_size)``, so 1e4 is
            far past anything a healthy run shows.
        carry_state: in the segment mode of a data module (batches ``(inputs, labels, first)``,
            e.g. ``ByteText(segments=True)``), every layer carries its state from a document's
            segment to the next (truncated back-propagation), not only the layers with a memory
            (:mod:`hybrids.model.state_carry`). Ignored for ordinary batches.

    Training logs ``train/loss_step`` (the batch loss, on the progress bar, every
    ``trainer.log_every_n_steps`` steps) and ``train/loss_epoch``, ``train/acc_epoch``,
    ``val/loss``, ``val/acc`` (token-weighted means over the epoch, NaN kept: a non-finite
    batch makes the mean NaN rather than vanishing from it).
    """

    def __init__(
        self,
        stack: StackConfig,
        optim: OptimConfig = OptimConfig(),
        max_loss: float = 1e4,
        carry_state: bool = False,
    ) -> None:
        super().__init__()
        with config_section("model"):
            stack = _as_config(stack, StackConfig, "stack")
            optim = _as_config(optim, OptimConfig, "optim")
            check_max_loss(max_loss)
            if not isinstance(carry_state, bool):
                raise ConfigError("carry_state", f"must be true or false, got {carry_state!r}")
        # Recorded flat (hparams.yaml and checkpoints): one level the analysis reads, the same for
        # runs written before the stack and the optimiser became dataclasses (train.model_args).
        self.save_hyperparameters({**dataclasses.asdict(stack), **dataclasses.asdict(optim), "betas": list(optim.betas),
                                   "max_loss": max_loss, "carry_state": carry_state})
        self.optim = optim
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": WeightedMean() for stage in ("train", "val", "test")
             for name in ("loss", "acc", *EXTRA_METRICS)}
        )
        # Per test length (``test/acc@L``), made in setup() from the data module's test_lengths.
        self.length_metrics = nn.ModuleDict()
        self._extra_metrics: tuple[str, ...] = ()
        self._test_lengths: list[int] = []
        self._eval_chunk: int | None = None
        self._skipped_lengths: set[int] = set()  # test lengths skipped for memory (warned once each)
        for name in ("train_loss", "train_acc"):
            # Saved in checkpoints, so that an epoch resumed mid-way ends with the same means.
            self.metrics[name].persistent(True)
        # The first step whose loss was not finite or above max_loss (-1: none yet), tracked on
        # the device so that training needs no host sync per step; read every few steps.
        self.register_buffer("_diverged_at", torch.tensor(-1, dtype=torch.long), persistent=False)
        self.register_buffer("_diverged_loss", torch.tensor(0.0), persistent=False)
        # The global step, counted on the device (set once at the start of fit): writing the
        # step into _diverged_at then needs no host-to-device copy per step.
        self.register_buffer("_step_on_device", torch.tensor(0, dtype=torch.long), persistent=False)
        # Random states restored from a checkpoint, applied at the first resumed batch (after the
        # loaders have drawn their seeds, as in the uninterrupted run).
        self._pending_rng: dict[str, Any] | None = None
        # Whether labels are sparse enough to apply the head to labelled positions only (None:
        # not seen a batch yet); see _sparse_labels.
        self._labels_sparse: bool | None = None
        # Segment mode: each stage's carried states (emptied at the start and end of every pass).
        self._segments = SegmentCarry()
        # Set by the CLI: {"hash": ..., "config": ...} (hybrids.train.identity), saved in checkpoints.
        self.run_identity: dict[str, Any] | None = None
        self.config = stack
        with config_section("model", "stack"):
            self.model = HybridLM(self.config)  # refused first if its weights cannot fit (size_check)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **overrides):  # fmt: skip
        """Lightning's, for checkpoints whose hyper-parameters are recorded flat (all of them: see
        ``__init__``). Overrides may be flat (``lr=1e-3``) or nested (``optim={"lr": 1e-3}``, merged
        into the saved settings); ``hparams_file`` (YAML) replaces the saved hyper-parameters."""
        from lightning.fabric.utilities.cloud_io import _load as load_checkpoint
        from lightning.pytorch.core.saving import load_hparams_from_yaml

        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location, weights_only=weights_only)
        saved = checkpoint.get("hyper_parameters") or {}
        if hparams_file is not None:
            saved = load_hparams_from_yaml(hparams_file) or {}
        checkpoint["hyper_parameters"] = merged_arguments(saved, overrides)
        # Lightning reads a path or a file once; the migrated checkpoint goes to it in memory.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        return super().load_from_checkpoint(buffer, map_location=map_location, strict=strict, weights_only=weights_only)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    # -- metrics ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Read from the data module what it asks to be measured: ``extra_metrics`` (``"exact"``,
        ``"bpb"``), the lengths of its test sets (``test_lengths``: one test loader per length,
        logged as ``test/acc@L``) and the chunk in which to read long examples (``eval_chunk``)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        self._extra_metrics = tuple(getattr(datamodule, "extra_metrics", ()) or ())
        unknown = set(self._extra_metrics) - set(EXTRA_METRICS)
        if unknown:
            raise ValueError(f"data module asks for unknown metrics {sorted(unknown)}; known: {EXTRA_METRICS}")
        self._test_lengths = list(getattr(datamodule, "test_lengths", None) or [])
        self._eval_chunk = getattr(datamodule, "eval_chunk", None)
        for length in self._test_lengths:
            for name in ("loss", "acc", *self._extra_metrics):
                key = length_key(name, length)
                if key not in self.length_metrics:
                    self.length_metrics[key] = WeightedMean()
        self._skipped_lengths = set()

    def _segment_features(self, inputs: torch.Tensor, first: torch.Tensor, stage: str) -> torch.Tensor:
        """Segment mode: the hidden states of one segment per slot (:class:`SegmentCarry`)."""
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            raise ValueError("segment mode: each slot reads its document in order on one process; it cannot run under DDP")
        return self._segments.features(self.model, inputs, first, stage, self.hparams.carry_state)

    def on_train_epoch_start(self) -> None:
        self._segments.reset("train")

    def on_validation_epoch_start(self) -> None:
        self._segments.reset("val")

    def on_test_epoch_start(self) -> None:
        self._segments.reset("test")

    def on_validation_epoch_end(self) -> None:
        self._segments.reset("val")

    def on_test_epoch_end(self) -> None:
        self._segments.reset("test")

    def _shared_step(self, batch: tuple[torch.Tensor, ...], stage: str, dataloader_idx: int = 0):
        inputs, labels, *first = batch  # segment mode adds first (B,): the slots starting a document
        chunk = getattr(self, "_eval_chunk", None)
        if first:
            hidden = self._segment_features(inputs, first[0], stage)
            targets, logits = labels.flatten(), self.model.logits(hidden).flatten(0, 1)
            rows_of = lambda: torch.arange(  # noqa: E731
                inputs.shape[0], device=inputs.device).repeat_interleave(inputs.shape[1])
        elif stage != "train" and chunk is not None and inputs.shape[1] > chunk:
            # A test example longer than a chunk: read through the recurrent form, chunk by chunk
            # (hybrids.train.long_context), in sub-batches that fit in memory.
            try:
                logits, targets, rows = labelled_logits_chunked(self.model, inputs, labels, chunk)
            except LengthTooLong as err:
                self._skip_length(inputs.shape[1], err)
                return None
            rows_of = lambda: rows  # noqa: E731
        else:
            hidden = self.model.features(inputs)  # (B, L, d_model)
            labelled = labels != IGNORE_INDEX
            if self._sparse_labels(labelled):
                # The head over the labelled positions only (n, V): the same loss and accuracy as
                # over all positions, without the (B, L, V) logits nothing reads.
                targets = labels[labelled]
                logits = self.model.logits(hidden[labelled])
                rows_of = lambda: labelled.nonzero()[:, 0]  # noqa: E731  (the example of each target)
            else:
                targets = labels.flatten()
                logits = self.model.logits(hidden).flatten(0, 1)
                rows_of = lambda: torch.arange(  # noqa: E731
                    inputs.shape[0], device=inputs.device).repeat_interleave(inputs.shape[1])
        valid = targets != IGNORE_INDEX
        loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
        hit = (logits.argmax(-1) == targets) & valid
        # Means weighted by each batch's labelled-token count: the epoch value is the exact token
        # accuracy (and mean token loss) over the whole set. No .item(): no device sync per step.
        weight = valid.sum().clamp(min=1).float()
        values = {"loss": (loss.detach(), weight), "acc": (hit.sum().float() / weight, weight)}
        if "bpb" in self._extra_metrics:
            # Bits per predicted byte: the mean cross-entropy in nats over ln 2.
            values["bpb"] = (loss.detach() / math.log(2), weight)
        if "exact" in self._extra_metrics:
            values["exact"] = exact_fraction(rows_of(), valid, hit, inputs.shape[0])
        if stage == "test" and self._test_lengths:
            length = self._test_lengths[dataloader_idx]
            for name, (value, w) in values.items():
                metric = self.length_metrics[length_key(name, length)]
                metric.update(value, w)
                self.log(f"test/{name}@{length}", metric, on_step=False, on_epoch=True, add_dataloader_idx=False)
            if dataloader_idx != 0:  # test/acc, test/loss: the training length, the first loader
                return loss
        for name, (value, w) in values.items():
            self.metrics[f"{stage}_{name}"].update(value, w)
        if stage == "train":
            # The batch loss itself (a Metric object logged on_step shows nothing: it is only
            # updated, never called), and the epoch means under their own names.
            self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
            for name in values:
                self.log(f"train/{name}_epoch", self.metrics[f"train_{name}"], on_step=False, on_epoch=True)
        else:
            for name in values:
                self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], prog_bar=name in ("loss", "acc"),
                         on_step=False, on_epoch=True, add_dataloader_idx=False)
        return loss

    def _skip_length(self, length: int, err: Exception) -> None:
        if length not in self._skipped_lengths:
            self._skipped_lengths.add(length)
            rank_zero_warn(f"test at length {length:,} skipped (test/acc@{length} not logged): {err}")

    def _sparse_labels(self, labelled: torch.Tensor) -> bool:
        """Whether to apply the head to the labelled positions only (under half of them are
        labelled), decided once from the first batch. Indexing by the mask then costs one small
        host sync per step (the number of labelled positions), far less on a large vocabulary
        than the (B, L, V) logits it saves."""
        if self._labels_sparse is None:
            self._labels_sparse = bool(2 * labelled.sum() < labelled.numel())
        return self._labels_sparse

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, "train")
        aux = self.model.moe_aux_loss()
        if aux is not None:
            # The experts' load-balancing loss, weighted as the stack's moe.aux_loss says: part of
            # what is minimised, not of the task's loss the metrics report.
            self.log("train/moe_aux", aux.detach(), on_step=True, on_epoch=False)
            loss = loss + MoEConfig.of(self.model.config.moe).aux_loss * aux
        bad = ~torch.isfinite(loss.detach()) | (loss.detach() > self.hparams.max_loss)
        first = bad & (self._diverged_at < 0)
        self._diverged_at.copy_(torch.where(first, self._step_on_device, self._diverged_at))
        self._diverged_loss.copy_(torch.where(first, loss.detach().float(), self._diverged_loss))
        self._step_on_device.add_(1)
        return loss

    def on_train_start(self) -> None:
        self._step_on_device.fill_(self.global_step)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        interval = max(1, getattr(self.trainer, "log_every_n_steps", 1) or 1)
        if self.global_step % interval == 0 or self.trainer.is_last_batch:
            self.check_divergence()

    def on_train_epoch_end(self) -> None:
        self.check_divergence()

    def check_divergence(self) -> None:
        """Raise :class:`DivergenceError` if a training loss was not finite or above ``max_loss``."""
        first = torch.where(self._diverged_at < 0, torch.full_like(self._diverged_at, NEVER), self._diverged_at)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Every process decides alike (one raising while the others wait would hang them).
            first = trainer.strategy.reduce(first, reduce_op="min")
        step = int(first)  # the one host sync, every log_every_n_steps steps
        if step == NEVER:
            return
        raise DivergenceError(step, float(self._diverged_loss), self.hparams, self._precision())

    def _precision(self) -> str | None:
        trainer = self._trainer
        return str(trainer.precision) if trainer is not None else None

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._shared_step(batch, "test", dataloader_idx)

    def predict_step(self, batch, batch_idx):
        """Greedy predictions (B, L) for the inputs of a batch."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(inputs).argmax(-1)

    # -- accounting ------------------------------------------------------------------------------

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    def state_size(self, seq_len: int) -> int:
        return self.model.state_size(seq_len)

    def data_seq_len(self) -> int | None:
        """The sequence length of the attached data module, if it declares one."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return getattr(datamodule, "seq_len", None)

    def on_fit_start(self) -> None:
        # self.log is not allowed in this hook; the loggers take the figures directly. They are
        # logged once per run so that analysis code can read them next to the accuracy.
        figures: dict[str, float] = {"params": self.num_parameters()}
        seq_len = self.data_seq_len()
        if seq_len is not None:
            try:
                figures["state_size"] = self.state_size(seq_len)
                figures["seq_len"] = seq_len
            except StateSizeUnknown as err:  # a user mixer without state_size: train anyway
                rank_zero_warn(f"state size not logged: {err}")
        for logger in self.loggers:
            logger.log_metrics(figures, step=0)

    # -- checkpoints -----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_identity is not None:
            checkpoint[IDENTITY_KEY] = dict(self.run_identity)
        # Random states, so that a run resumed mid-epoch draws what the uninterrupted one would
        # (dropout masks, sampling); Lightning does not save them.
        checkpoint[RNG_KEY] = rng_states()
        trainer = self._trainer
        if trainer is not None and epoch_finished(trainer):
            # The running epoch means are checkpointed so that an epoch resumed mid-way ends with
            # the uninterrupted run's means; not those of a finished epoch.
            zero_epoch_means(checkpoint, ("train_loss", "train_acc"))

    def check_checkpoint_weights(self, state_dict: Mapping[str, Any]) -> None:
        """ConfigError (keyed ``ckpt_path``) for a checkpoint trained without a rotation this
        model applies: RetNet before its rotation existed. Its weights would load (the rotation
        adds none) and silently compute something else."""
        missing = [key for key in self.state_dict() if key.endswith(".rotation_base") and key not in state_dict]
        if missing:
            layers = sorted({key.split(".mixer.")[0] for key in missing})
            raise ConfigError("ckpt_path", f"its {', '.join(layers)} were trained without the rotation this config's "
                              "LinearAttention applies (RetNet before it had one); add rotary: false to that mixer's "
                              "init_args to use it as it was trained")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_checkpoint_weights(checkpoint.get("state_dict") or {})
        states = checkpoint.get(RNG_KEY)
        if states and self._trainer is not None and self.trainer.state.fn == "fit":
            self._pending_rng = states

    # -- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.optim
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):  # max_epochs=-1 with max_time, say: no end to decay towards
            rank_zero_warn("training length is unbounded: the learning rate stays at lr after warm-up")
        return adamw_warmup_cosine(
            self.parameters(), hp.lr, hp.weight_decay, hp.betas, hp.warmup_steps, hp.min_lr_ratio, total
        )
