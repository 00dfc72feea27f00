"""``hybrids fit | validate | test | predict``: LightningCLI over a model and a data module.

    hybrids fit -c configs/transformer.yaml
    hybrids fit -c configs/transformer.yaml --ckpt_path last      # resume this run
    hybrids test -c configs/transformer.yaml --ckpt_path last
    hybrids fit -c configs/transformer.yaml --print_config

Defaults: CSV logs under ``runs/<name>/version_N`` (no network; ``--trainer.default_root_dir DIR``
puts them under ``DIR/<name>/version_N`` unless the logger's ``save_dir`` is given), a progress
bar, a checkpoint per epoch with ``last.ckpt`` (``--checkpoint.*`` configures it), seed 0. A run
stopped by ``--trainer.max_steps`` is validated at its last step, so it always ends with a figure.

validate, test and predict log nothing of their own and never make a new, empty version: they
write into the run they evaluate (its ``version_N`` folder, when the checkpoint is one of its
``checkpoints/``): the figures as one line of ``evaluations.jsonl``, the predictions as
``predictions.pt``. An untrained model or a checkpoint kept elsewhere has its figures printed
only, and its predictions written to ``--trainer.default_root_dir`` (the working folder).

Runs have an identity (:mod:`hybrids.train.identity`): a checkpoint is resumed or evaluated only under
the config that wrote it. Exit status: 0 done; 2 a bad config or checkpoint (before anything
runs); 3 training diverged; 75 paused by ``--pause_at_step`` after saving ``last.ckpt``; 130 / 143 stopped by
SIGINT / SIGTERM after saving ``last.ckpt``.
"""

from __future__ import annotations

import atexit
import json
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from hybrids.cli.fit_checks import first_line, text_problem, value_problem
from hybrids.cli.parse_errors import KeyedErrorParser
from hybrids.data.loading import ResumableOrder
from hybrids.learning_status import Criterion
from hybrids.train.atomic_checkpoint import AtomicCheckpointIO
from hybrids.train.callbacks import EXIT_CODES, GracefulInterrupt, Interrupted, Paused, StopWhenSolved, ValidateAtMaxSteps
from hybrids.train.checkpoints import (
    EVALUATIONS, CheckpointRequestError, checkpoint_roots, evaluated_run_folder, resolve_checkpoint,
)
from hybrids.errors import ConfigError, StateSizeUnknown, argument_at_fault, defaults_of
from hybrids.train.identity import identity_config, identity_hash, plain
from hybrids.train.divergence import DivergenceError
from hybrids.train.folders import unwritable
from hybrids.train.model_args import moved_note, nest_config, nest_key
from hybrids.train.module import LanguageModel

# The logger's save_dir is not given in the configs: it defaults to "runs", and to
# trainer.default_root_dir where that is given (before_instantiate_classes), the usual Lightning
# way of moving a run's output.
DEFAULT_SAVE_DIR = "runs"
DEFAULT_TRAINER = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": "hybrids"}},
    "max_epochs": 10,
    "log_every_n_steps": 10,
}
# `--ckpt_path untrained`: evaluate the freshly initialised model, on purpose.
# float16 arithmetic on CPU: Lightning accepts it, and the first steps give NaN.
CPU_UNSAFE_PRECISIONS = {"16", "16-true", "16-mixed", "half"}


class HybridsCLI(LightningCLI):
    """LightningCLI with run identities, exact resumption, keyed errors and clean interruption."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.stack.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        # `hybrids fit` with no config trains the default stack (attention) on MQAR. The default data
        # module is given as an argument by build_cli, not here: as a parser default its arguments
        # would count as given, and a config naming another data module without all of its
        # init_args would inherit MQAR's values for the names they share (seq_len, vocab_size).
        parser.set_defaults({"model": {"class_path": "hybrids.LanguageModel"}})
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After fit, evaluate the final weights on the test set in the same process and log "
            "test/loss and test/acc beside the run's validation figures (sweeps use it).",
        )
        parser.add_argument(
            "--stop_when_solved", type=bool, default=True,
            help="End fit at the first validation where the task is solved (the data module's criterion, "
            "e.g. val/acc >= 0.99 on the synthetic tasks); false trains the whole budget.",
        )
        parser.add_argument(
            "--pause_at_step", type=Optional[int], default=None,
            help="Pause after the first validation at or after this optimiser step: save the checkpoint "
            "and exit with status 75; --ckpt_path last resumes exactly (successive halving's rungs).",
        )
        parser.add_argument(
            "--load_weights_only", type=bool, default=False,
            help="With --ckpt_path FILE: load only the model weights from a checkpoint of another run "
            "(a warm start, recorded as warm_start_from); training state and identity are not taken.",
        )

    # -- before anything is built ----------------------------------------------------------------

    def parse_arguments(self, parser, args) -> None:
        """Lightning's, after moving the flat model keys of older configs and command lines
        (``--model.init_args.lr``) under ``stack`` / ``optim`` (:mod:`hybrids.train.model_args`)."""
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
            return
        given = sys.argv[1:] if args is None else list(args)
        problem = text_problem(given)
        if problem:
            parser.error(problem)
        migrated, notes = migrate_arguments(given)
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        self.config = parser.parse_args(migrated)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would re-parse the config with the checkpoint's hyper-parameters, so that
        # the checkpoint silently replaces the model asked for; here the config is authoritative
        # and a checkpoint of another run is refused (see _resolve_checkpoint).
        return

    def _set_seed(self) -> None:
        config = self.config[self.config["subcommand"]] if self.config.get("subcommand") else self.config
        seed = config.get("seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed < 2**32:
            self.parser.error(f"seed_everything: must be in [0, 2^32), got {seed}")
        super()._set_seed()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _default_save_dir(config)
        _check_precision(self.parser, config)
        problem = value_problem(config)
        if problem:
            self.parser.error(problem)
        identity = identity_config(config)
        self.run_identity = {"hash": identity_hash(identity), "config": identity}

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # jsonargparse wraps what the classes raise; find our own error
            located = locate_config_error(err) or _missing_logger_package(err) or self._checkpoint_problem(err)
            if located is None:
                raise
            self.parser.error(located)

    def _checkpoint_problem(self, err: BaseException) -> str | None:
        """The keyed line for ModelCheckpoint refusing its settings (--checkpoint.*), or None
        where the checkpoint settings are not what failed."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        settings = dict((config.get("checkpoint") or {}).items())
        try:
            ModelCheckpoint(**settings)
        except Exception as refused:  # noqa: BLE001 (what Lightning raises for a bad setting)
            name = argument_at_fault(lambda kwargs: ModelCheckpoint(**kwargs), settings, defaults_of(ModelCheckpoint))
            return f"checkpoint.{name or '*'}: {first_line(refused)}"
        return None

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        given = ((config.get("model") or {}).get("init_args", {}).get("stack") or {}).get("vocab_size")
        data_vocab = getattr(self.datamodule, "vocab_size", None)
        if given is not None and data_vocab is not None and given != data_vocab:
            self.parser.error(
                f"model.init_args.stack.vocab_size: {given} disagrees with the data's vocabulary ({data_vocab}); "
                "leave it out: the model takes the data's"
            )
        if isinstance(self.model, LanguageModel):
            # A task scored as an auto-encoder (MAD's compression) needs the stack's readout.
            wanted, readout = getattr(self.datamodule, "readout", "tokens"), self.model.model.config.readout
            if wanted != readout:
                self.parser.error(f"model.init_args.stack.readout: {type(self.datamodule).__name__} needs readout "
                                  f"{wanted!r}, got {readout!r}")
            self.model.run_identity = self.run_identity
            _check_segment_lengths(self.parser, self.model, self.datamodule)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        # The checkpoint callback is always configured (--checkpoint.*); leave it out when the
        # trainer is told not to checkpoint (Lightning would refuse it), and for fast_dev_run,
        # whose checkpoints would land in the current folder.
        if config.get("enable_checkpointing") is False or config.get("fast_dev_run"):
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        if self.subcommand == "fit":
            callbacks = [*callbacks, GracefulInterrupt(self.config["fit"].get("pause_at_step")), ValidateAtMaxSteps()]
            criterion = getattr(self.datamodule, "criterion", None)
            solvable = isinstance(criterion, Criterion) and criterion.threshold is not None
            if solvable and self.config["fit"].get("stop_when_solved"):
                callbacks.append(StopWhenSolved(criterion))
        given = dict(config)
        try:
            trainer = super()._instantiate_trainer(config, callbacks)
        except (ValueError, TypeError, OverflowError, MemoryError, MisconfigurationException) as err:
            # Lightning checks the trainer's settings as it builds: name the one at fault.
            trial = {**given, "callbacks": [], "logger": False}
            name = argument_at_fault(lambda kwargs: self.trainer_class(**kwargs), trial, defaults_of(self.trainer_class))
            self.parser.error(f"trainer.{name or '*'}: {first_line(err)}")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default: not a user's own
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if self.subcommand in EVALUATIONS:
            # An evaluation saves no config of its own (it would land in a new, otherwise empty
            # version folder, or in the working folder once the logger is detached).
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
        return trainer

    def before_fit(self) -> None:
        self._check_output_folders("fit")
        if isinstance(self.datamodule, ResumableOrder):
            # Lightning warns that a mid-epoch resumption is unreliable unless the DataLoader itself
            # is stateful; these data modules checkpoint their position (hybrids.data.loading),
            # so the resumption is exact and the warning would be false.
            warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")

    # -- checkpoints -------------------------------------------------------------------------------

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "ckpt_path" in kwargs:
            kwargs["ckpt_path"] = self._resolve_checkpoint(subcommand, kwargs.get("ckpt_path"))
        return kwargs

    def _check_output_folders(self, subcommand: str) -> None:
        """A keyed error (exit 2) before training when the logs or the checkpoints could not be
        written: a folder under a file, a read-only filesystem or folder."""
        config = self.config[subcommand]
        trainer = config.get("trainer") or {}
        logger = self.trainer.logger
        if logger is not None and getattr(logger, "root_dir", None):
            given = trainer.get("default_root_dir")
            save_dir = getattr(logger, "save_dir", None)
            key = "trainer.default_root_dir" if given and save_dir == str(given) else "trainer.logger.init_args.save_dir"
            problem = unwritable(logger.root_dir)
            if problem:
                self.parser.error(f"{key}: the run's logs go to {logger.root_dir}, but {problem}")
        dirpath = (config.get("checkpoint") or {}).get("dirpath")
        if dirpath and self.trainer.checkpoint_callbacks:
            problem = unwritable(dirpath)
            if problem:
                self.parser.error(f"checkpoint.dirpath: {dirpath} cannot hold checkpoints: {problem}")

    def _resolve_checkpoint(self, subcommand: str, ckpt_path: str | None) -> str | None:
        """:func:`~hybrids.train.checkpoints.resolve_checkpoint` for this run: a keyed error
        (exit 2) where the request cannot be honoured; the warm start's weights loaded."""
        config = self.config[subcommand] if subcommand in self.config else self.config
        try:
            resolution = resolve_checkpoint(
                ckpt_path, subcommand, self.run_identity, checkpoint_roots(self.trainer), bool(config.get("load_weights_only"))
            )
        except CheckpointRequestError as err:
            self.parser.error(str(err))
        for line in resolution.warnings:
            rank_zero_warn(line)
        for line in resolution.info:
            rank_zero_info(line)
        if resolution.warm_start is not None:
            self._load_weights(ckpt_path, resolution.warm_start)
        if subcommand in EVALUATIONS:
            # The run evaluated is where its results go (or nowhere): no logger, no new version.
            self.evaluated_run = evaluated_run_folder(resolution.path)
            self.trainer.loggers = []
            # Nor checkpoints: an evaluation saves none, and without a logger the callback would
            # only warn that its folder moved.
            self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        else:
            self._log_identity(**resolution.logged)
        return resolution.path

    def _load_weights(self, path: str, checkpoint: dict[str, Any]) -> None:
        """Warm start: the checkpoint's weights into the model, strictly (same shapes); the
        training metrics' running sums are the other run's and are left out."""
        weights = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("metrics.")}
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
            missing = [k for k in missing if not k.startswith("metrics.")]
            if missing or unexpected:
                raise RuntimeError(f"Error(s) in loading state_dict:\n missing keys {missing}\n unexpected keys {unexpected}")
        except RuntimeError as err:
            details = "; ".join(line.strip() for line in str(err).splitlines()[1:4] if line.strip())
            self.parser.error(f"load_weights_only: the weights of {path} do not fit this model: {details}")
        rank_zero_info(f"hybrids: loaded the weights of {path} (warm start; optimiser and step start fresh)")

    def _log_identity(self, **extra: str) -> None:
        logger = self.trainer.logger
        if logger is not None:
            logger.log_hyperparams({"identity": self.run_identity["hash"], **extra})

    # -- after each subcommand --------------------------------------------------------------------

    def after_fit(self) -> None:
        print_summary(self.trainer, self.model, stage="val")
        if self.config[self.subcommand].get("test_after_fit"):
            # The weights as fit left them (the last step), not the checkpoint with the best
            # validation figure: the figure reported is the model the run ends with.
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            print_summary(self.trainer, self.model, stage="test")

    def after_validate(self) -> None:
        print_summary(self.trainer, self.model, stage="val", log_dir=self.evaluated_run)
        self._record_evaluation("validate")

    def after_test(self) -> None:
        print_summary(self.trainer, self.model, stage="test", log_dir=self.evaluated_run)
        self._record_evaluation("test")

    evaluated_run: Path | None = None

    def _record_evaluation(self, subcommand: str) -> None:
        """One line of ``evaluations.jsonl`` in the evaluated run's folder: what was evaluated,
        when, under which data settings, and the figures (the fit's metrics.csv is left alone)."""
        if self.evaluated_run is None or not self.trainer.is_global_zero:
            return
        config = self.config[subcommand]
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "subcommand": subcommand,
            "ckpt_path": str(self.trainer.ckpt_path),
            "data": plain(config.get("data")),
            "metrics": {k: float(v) for k, v in self.trainer.callback_metrics.items() if "/" in k},
        }
        with (self.evaluated_run / "evaluations.jsonl").open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def after_predict(self) -> None:
        predictions = self.trainer.predict_loop.predictions
        # The evaluated run's folder; else --trainer.default_root_dir (the working folder).
        folder = self.evaluated_run or Path(self.trainer.default_root_dir)
        if not predictions:
            return
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        folder.mkdir(parents=True, exist_ok=True)
        # Under DDP each process predicts its share of the examples and writes its own file.
        rank = self.trainer.global_rank
        target = folder / ("predictions.pt" if self.trainer.world_size == 1 else f"predictions-rank{rank}.pt")
        stacked = torch.cat([b.cpu() for b in batches])
        torch.save({"predictions": stacked, "ckpt_path": self.trainer.ckpt_path}, target)
        print(f"hybrids: predictions of {stacked.shape[0]:,} examples, shape {tuple(stacked.shape)}, written to {target}", flush=True)


def migrate_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """(``args`` in the current spelling, notes on what was moved): flat model keys on the command
    line (``--model.init_args.d_model=32``, ``--model.d_model=32``) and in config files or YAML
    strings given with ``-c`` / ``--config`` in any of argparse's forms. A config that needs no
    change is passed on as it was given."""
    out, notes = [], []
    moved_flags: list[str] = []
    i = 0
    while i < len(args):
        item = args[i]
        if item.startswith("--model."):
            flag, eq, value = item.partition("=")
            new = "--" + nest_key(flag[2:])
            if new != flag:
                moved_flags.append(flag[2:].split(".")[-1])
            out.append(new + eq + value)
        elif item in ("-c", "--config") and i + 1 < len(args):
            out += [item, _migrated_config(args[i + 1], notes)]
            i += 1
        elif item.startswith("--config="):
            out.append("--config=" + _migrated_config(item[len("--config="):], notes))
        elif item.startswith("-c") and not item.startswith("--") and len(item) > 2:  # -cPATH, -c=PATH
            value = item[3:] if item[2] == "=" else item[2:]
            out += ["-c", _migrated_config(value, notes)]
        else:
            out.append(item)
        i += 1
    if moved_flags:
        notes.append(moved_note(moved_flags, "the command line"))
    return out, notes


def _migrated_config(value: str, notes: list[str]) -> str:
    """A ``-c`` value in the current spelling: a file that needs migrating becomes a migrated copy
    beside it (so that paths inside it still resolve against its folder; removed at exit), or YAML
    text where that folder cannot be written; a YAML string is migrated as a string."""
    path = Path(value)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a YAML string too long or odd to be a path
        is_file = False
    try:
        text = path.read_text() if is_file else value
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return value  # not readable YAML: jsonargparse says why
    if not isinstance(config, dict):
        return value
    migrated, moved = nest_config(config)
    if not moved:
        return value
    notes.append(moved_note(moved, value if is_file else "the -c string"))
    text = yaml.safe_dump(migrated, sort_keys=False)
    if not is_file:
        return text
    try:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f".{path.stem}.migrated-",
                                             dir=path.resolve().parent, delete=False)
    except OSError:
        return text
    with handle:
        handle.write(text)
    atexit.register(Path(handle.name).unlink, missing_ok=True)
    return handle.name


def _check_segment_lengths(parser, model: LanguageModel, datamodule) -> None:
    """In segment mode every mixer that works in segments (MemorizingAttention) must divide the
    data's seq_len, or a document boundary would fall inside a segment: checked here, where the
    model and the data first meet, instead of failing at the first validation batch."""
    seq_len = getattr(datamodule, "seq_len", None)
    if not (getattr(datamodule, "segments", False) and seq_len):
        return
    stack = model.model
    for letter, block in zip(stack.layer_letters, stack.blocks):
        check = getattr(block.mixer, "check_sequence_length", None)
        if check is None:
            continue
        try:
            check(seq_len)
        except ValueError as err:
            parser.error(f"model.init_args.stack.mixers.{letter}.init_args.{err}")


def _default_save_dir(config) -> None:
    """``--trainer.default_root_dir DIR`` moves the logs of a logger left at the default save_dir
    (``runs``) to ``DIR``: as in Lightning, whose default logger writes under default_root_dir."""
    trainer = config.get("trainer") or {}
    root = trainer.get("default_root_dir")
    if not root:
        return
    logger = trainer.get("logger")
    for spec in logger if isinstance(logger, list) else [logger]:
        init_args = spec.get("init_args") if hasattr(spec, "get") else None
        if init_args is not None and init_args.get("save_dir") == DEFAULT_SAVE_DIR:
            init_args["save_dir"] = str(root)


def _check_precision(parser, config) -> None:
    trainer = config.get("trainer") or {}
    precision = str(trainer.get("precision")) if trainer.get("precision") is not None else None
    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in CPU_UNSAFE_PRECISIONS and on_cpu:
        parser.error(
            f"trainer.precision: {precision} on CPU computes in float16, which overflows within a few steps "
            "here (NaN losses); use 32-true, bf16-mixed or bf16-true on CPU"
        )


def _missing_logger_package(err: BaseException) -> str | None:
    """One line for a logger whose package is missing (TensorBoardLogger without tensorboard)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ModuleNotFoundError) and "tensorboard" in str(err).lower():
            return (
                "trainer.logger: TensorBoardLogger needs the tensorboard package: "
                "pip install -e '.[tensorboard]' (or use the default CSVLogger)"
            )
        err = err.__cause__ or err.__context__
    return None


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


def print_summary(trainer: L.Trainer, model: L.LightningModule, stage: str, log_dir: Path | str | None = "") -> None:
    """One line with the figures a researcher compares: accuracy, parameters, state size.

    ``log_dir``: the folder to name ("" asks the trainer's logger; None names none)."""
    # trainer.log_dir broadcasts from rank 0 under DDP: every process must ask, not rank 0 alone.
    if log_dir == "":
        log_dir = trainer.log_dir if trainer.loggers else None
    if trainer.sanity_checking or not trainer.is_global_zero:
        return
    metrics = trainer.callback_metrics
    parts = []
    acc = metrics.get(f"{stage}/acc")
    if acc is not None:
        parts.append(f"{stage} accuracy {float(acc):.4f}")
    for name, label in (("exact", "exact copies"), ("bpb", "bits/byte")):
        value = metrics.get(f"{stage}/{name}")
        if value is not None:
            parts.append(f"{stage} {label} {float(value):.4f}")
    by_length = sorted((int(k.rpartition("@")[2]), float(v)) for k, v in metrics.items()
                       if k.startswith(f"{stage}/acc@") and k.rpartition("@")[2].isdigit())
    if by_length:
        parts.append("accuracy by length " + ", ".join(f"{length}: {value:.3f}" for length, value in by_length))
    if hasattr(model, "num_parameters"):
        parts.append(f"parameters {model.num_parameters():,}")
    seq_len = getattr(trainer.datamodule, "seq_len", None)
    if seq_len is not None and hasattr(model, "state_size"):
        try:
            parts.append(f"recurrent state {model.state_size(seq_len):,} elements/sequence at seq_len {seq_len}")
        except StateSizeUnknown:
            parts.append("recurrent state unknown (a mixer has no state_size)")
    if log_dir:
        parts.append(f"logs {log_dir}")
    print("hybrids: " + " | ".join(parts), flush=True)


DEFAULT_DATA = "hybrids.data.MQAR"


def with_default_data(args: list[str], subcommand: bool = True) -> list[str]:
    """``args`` with ``--data hybrids.data.MQAR`` first (after the subcommand, when ``args`` start
    with one), so that ``hybrids fit`` alone trains on MQAR. Given as the first argument, not as a
    parser default: a config or a later argument naming another data module then gets that
    module's own defaults for what it leaves out (jsonargparse keeps a default's init_args across a
    change of class), and a config setting only MQAR's init_args still finds MQAR."""
    if subcommand and (not args or args[0] not in ("fit", "validate", "test", "predict")):
        return args  # --help, or an unknown subcommand: the parser answers
    head, rest = (args[:1], args[1:]) if subcommand else ([], args)
    return [*head, "--data", DEFAULT_DATA, *rest]


def build_cli(args: list[str] | None = None, run: bool = True) -> HybridsCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), instantiate, and run the subcommand if ``run``."""
    args = with_default_data(list(sys.argv[1:] if args is None else args), subcommand=run)
    return HybridsCLI(
        LanguageModel,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=DEFAULT_TRAINER,
        parser_class=KeyedErrorParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _end_process_group() -> None:
    """Shut down a DDP process group before the interpreter exits.

    Lightning leaves the group open after fit. Left to interpreter shutdown, gloo's worker threads
    can be destroyed while still joinable, and the process aborts ("terminate called without an
    active exception", exit -6) after a run that finished; the barrier first lets every rank get
    here before any rank's group goes away.
    """
    import datetime

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            # A rank that died never arrives: fail after a while instead of waiting forever.
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=300))
        else:
            dist.barrier()
        dist.destroy_process_group()


def fit_main() -> None:
    """``hybrids fit | validate | test | predict``: LightningCLI, with the exit statuses of the
    module docstring."""
    try:
        build_cli()
        _end_process_group()
    except Interrupted as stop:
        print(f"hybrids: stopped by {stop}; resume with --ckpt_path last", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except Paused as pause:
        print(f"hybrids: {pause}; resume with --ckpt_path last", file=sys.stderr, flush=True)
        sys.exit(pause.exit_code)
    except DivergenceError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(DivergenceError.exit_code)
    except ConfigError as err:  # found as training started: a checkpoint that does not fit the config
        print(f"error: {err.full_key}: {err.message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except SIGTERMException:
        # Lightning's own stop (a SIGTERM before training began, where no checkpoint is due).
        print("hybrids: stopped by SIGTERM before training; nothing to resume", file=sys.stderr, flush=True)
        sys.exit(EXIT_CODES[signal.SIGTERM])
