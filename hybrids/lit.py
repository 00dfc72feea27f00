"""The LightningModule that trains a :class:`~hybrids.model.HybridLM` on labelled token streams."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from hybrids.config import StackConfig
from hybrids.data.labels import IGNORE_INDEX
from hybrids.errors import StateSizeUnknown, config_section
from hybrids.model import HybridLM

_STACK = StackConfig.defaults()


class LanguageModel(L.LightningModule):
    """A hybrid stack trained with next-token cross-entropy on labelled positions.

    Batches are ``(inputs, labels)``, both (B, L) int64; positions whose label is -100 count in
    neither loss nor accuracy (MQAR labels only the values to recall).

    Args:
        vocab_size: set from the data module by the CLI (``data.vocab_size``).
        d_model, n_layers, pattern, mixers, mlp, mlp_expand, dropout, tie_embeddings: the stack,
            see :class:`~hybrids.config.StackConfig` (the defaults are its defaults).
        lr: peak learning rate of AdamW.
        weight_decay: applied to matrices only (``ndim >= 2``), not to norms, biases or vectors, nor
            to parameters a mixer marks with ``_no_weight_decay = True``.
        betas: AdamW betas.
        warmup_steps: linear warm-up steps; then cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = _STACK["d_model"],
        n_layers: int | None = _STACK["n_layers"],
        pattern: str = _STACK["pattern"],
        mixers: dict[str, dict[str, Any]] | None = _STACK["mixers"],
        mlp: str = _STACK["mlp"],
        mlp_expand: float = _STACK["mlp_expand"],
        dropout: float = _STACK["dropout"],
        tie_embeddings: bool = _STACK["tie_embeddings"],
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("train", "val", "test") for name in ("loss", "acc")}
        )
        with config_section("model"):
            self.config = StackConfig(**{name: self.hparams[name] for name in StackConfig.field_names()})
            self.model = HybridLM(self.config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    # -- metrics ---------------------------------------------------------------------------------

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, labels = batch
        logits = self.model(inputs)  # (B, L, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        labelled = labels != IGNORE_INDEX
        count = labelled.sum()
        correct = ((logits.argmax(-1) == labels) & labelled).sum()
        # Means weighted by each batch's labelled-token count: the epoch value is the exact token
        # accuracy (and mean token loss) over the whole set. No .item(): no device sync per step.
        weight = count.clamp(min=1).float()
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight)
        self.metrics[f"{stage}_acc"].update(correct.float() / weight, weight)
        on_step = stage == "train"
        for name in ("loss", "acc"):
            metric = self.metrics[f"{stage}_{name}"]
            self.log(f"{stage}/{name}", metric, prog_bar=True, on_step=on_step, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

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

    # -- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            if p.ndim >= 2 and not getattr(p, "_no_weight_decay", False):
                decay.append(p)
            else:
                no_decay.append(p)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        total = self.trainer.estimated_stepping_batches
        if math.isfinite(total):
            total = max(int(total), 1)
            warmup = min(hp.warmup_steps, total // 2)
        else:  # max_epochs=-1 with max_time, say: no end to decay towards
            rank_zero_warn("training length is unbounded: the learning rate stays at lr after warm-up")
            warmup = hp.warmup_steps

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not math.isfinite(total):
                return 1.0
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
