"""The ``hybrids`` command (and ``python -m hybrids``): LightningCLI over a model and a data module.

    hybrids fit -c configs/transformer.yaml
    hybrids fit -c configs/transformer.yaml --ckpt_path last      # resume the newest run
    hybrids test -c configs/transformer.yaml --ckpt_path last
    hybrids fit -c configs/transformer.yaml --print_config

Defaults: CSV logs under ``runs/<name>/version_N`` (no network), a progress bar, and a checkpoint
per epoch with ``last.ckpt`` (``--checkpoint.*`` configures it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from hybrids.config import ARCHITECTURE_KEYS
from hybrids.errors import ConfigError, StateSizeUnknown
from hybrids.lit import LanguageModel

DEFAULT_TRAINER = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "hybrids"}},
    "max_epochs": 10,
}


def _same_architecture(checkpoint: Path, model: L.LightningModule) -> bool:
    # mmap: only the small hyper-parameter dict is read, not the weights.
    saved = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False).get("hyper_parameters", {})
    current = dict(model.hparams)
    return all(saved.get(key) == current.get(key) for key in ARCHITECTURE_KEYS if key in current)


def find_last_checkpoint(trainer: L.Trainer, model: L.LightningModule) -> Path | None:
    """The newest ``last*.ckpt`` of this run's name whose model has the current architecture.

    Lightning resolves ``ckpt_path="last"`` inside the *new* version's directory, which is empty,
    so a plain ``--ckpt_path last`` would silently start from scratch; we look at every version
    under the logger's ``save_dir/name``, newest first, and skip checkpoints of other shapes (a
    sweep over ``d_model`` shares one name).
    """
    logger = trainer.logger
    root = getattr(logger, "root_dir", None) if logger is not None else None
    if not root or not Path(root).exists():
        return None
    candidates = sorted(Path(root).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if _same_architecture(p, model)), None)


class HybridsCLI(LightningCLI):
    """LightningCLI with the data module's vocabulary wired into the model and clear config errors."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        # `hybrids fit` with no config trains the default stack (attention) on MQAR.
        parser.set_defaults({"model": {"class_path": "hybrids.LanguageModel"}, "data": {"class_path": "hybrids.data.MQAR"}})

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # jsonargparse wraps what the classes raise; find our own error
            located = locate_config_error(err)
            if located is None:
                raise
            self.parser.error(located)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        # The checkpoint callback is always configured (--checkpoint.*); leave it out when the
        # trainer is told not to checkpoint, which Lightning would otherwise refuse.
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer, self.model)
            if found is not None:
                rank_zero_info(f"hybrids: using checkpoint {found}")
                kwargs["ckpt_path"] = str(found)
                if subcommand == "fit" and self.trainer.logger is not None:
                    # hybrids.analysis drops the run this one continues, so it is not counted twice.
                    self.trainer.logger.log_hyperparams({"resumed_from": str(found)})
            elif subcommand == "fit":
                rank_zero_warn("--ckpt_path last: no last checkpoint found for this run; starting from scratch")
                kwargs["ckpt_path"] = None
            else:  # evaluating an untrained model by accident helps nobody
                root = getattr(self.trainer.logger, "root_dir", None)
                self.parser.error(f"ckpt_path: no last checkpoint found under {root}; run `fit` first")
        return kwargs

    def after_fit(self) -> None:
        print_summary(self.trainer, self.model, stage="val")

    def after_validate(self) -> None:
        print_summary(self.trainer, self.model, stage="val")

    def after_test(self) -> None:
        print_summary(self.trainer, self.model, stage="test")


def locate_config_error(err: BaseException) -> str | None:
    """``"<section>.init_args.<key>: <message>"`` for a ConfigError in ``err``'s cause chain.

    ConfigError keys are relative to the class that raised them; the class declares its section
    of the config (``model`` or ``data``) with :class:`hybrids.errors.config_section`.
    """
    seen = set()
    while err is not None and id(err) not in seen and not isinstance(err, ConfigError):
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    if not isinstance(err, ConfigError):
        return None
    return f"{err.full_key}: {err.message}"


def print_summary(trainer: L.Trainer, model: L.LightningModule, stage: str) -> None:
    """One line with the figures a researcher compares: accuracy, parameters, state size."""
    if trainer.sanity_checking or not trainer.is_global_zero:
        return
    metrics = trainer.callback_metrics
    parts = []
    acc = metrics.get(f"{stage}/acc")
    if acc is not None:
        parts.append(f"{stage} accuracy {float(acc):.4f}")
    if hasattr(model, "num_parameters"):
        parts.append(f"parameters {model.num_parameters():,}")
    seq_len = getattr(trainer.datamodule, "seq_len", None)
    if seq_len is not None and hasattr(model, "state_size"):
        try:
            parts.append(f"recurrent state {model.state_size(seq_len):,} elements/sequence at seq_len {seq_len}")
        except StateSizeUnknown:
            parts.append("recurrent state unknown (a mixer has no state_size)")
    if trainer.log_dir:
        parts.append(f"logs {trainer.log_dir}")
    print("hybrids: " + " | ".join(parts), flush=True)


def build_cli(args: list[str] | None = None, run: bool = True) -> HybridsCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), instantiate, and run the subcommand if ``run``."""
    return HybridsCLI(
        LanguageModel,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=DEFAULT_TRAINER,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """Entry point of the ``hybrids`` console script and of ``python -m hybrids``."""
    build_cli()


if __name__ == "__main__":
    main()
