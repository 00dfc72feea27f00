"""Reading checkpoints safely, and choosing the one a run resumes or evaluates.

A checkpoint that cannot be read (truncated by a crash, overwritten, not a checkpoint at all)
gives a :class:`CheckpointError` that names the file and what is wrong, instead of torch's
``OSError: [Errno 22]`` or its advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybrids.train.identity import identity_config, identity_diff, same_run

# The key under which the CLI stores a run's identity in its checkpoints.
IDENTITY_KEY = "hybrids"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the reason."""


def read_checkpoint(path: str | Path, weights: bool = False) -> dict[str, Any]:
    """The checkpoint dict in ``path`` (memory-mapped unless ``weights``: reading the metadata of a
    large checkpoint then touches only its small parts).

    Checkpoints are written by this project's runs (they hold Python objects such as the
    hyper-parameters), so they are unpickled in full; never point this at files you do not trust.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes): the write was interrupted")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a torch checkpoint (no zip archive: truncated, or another kind of file; "
            f"{path.stat().st_size:,} bytes)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=not weights, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as err:
        # It pickles a class that does not import here (another project's checkpoint).
        raise CheckpointError(f"{path}: cannot be unpickled here: {err}") from err
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a damaged file; all mean the same)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {first_line}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def checkpoint_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"hash": ..., "config": ...}`` stored by the CLI, or None (a checkpoint from elsewhere)."""
    value = checkpoint.get(IDENTITY_KEY)
    return value if isinstance(value, dict) and "hash" in value else None


def checkpoints_under(*roots: str | Path | None) -> list[Path]:
    """Every ``*.ckpt`` under the given folders (e.g. all versions of a run's name, and a
    ``--checkpoint.dirpath``), newest first, each once."""
    found: dict[Path, Path] = {}
    for root in roots:
        if root is None or not Path(root).exists():
            continue
        for path in Path(root).rglob("*.ckpt"):
            found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=lambda p: p.stat().st_mtime, reverse=True)


# --ckpt_path values besides a file: this run's newest checkpoint, or none on purpose.
LAST = "last"
UNTRAINED = "untrained"
# Subcommands that evaluate a model: without a checkpoint they would evaluate random weights.
EVALUATIONS = ("validate", "test", "predict", "generate")


class CheckpointRequestError(ValueError):
    """A ``--ckpt_path`` request that cannot be honoured; ``key`` is the argument at fault
    (``ckpt_path`` or ``load_weights_only``), the message says what would be valid."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class Resolution:
    """What a ``--ckpt_path`` request comes to (:func:`resolve_checkpoint`).

    Attributes:
        path: the checkpoint to resume or evaluate (None: none).
        logged: what to record beside the run's identity (``resumed_from``, ``ckpt_path``,
            ``warm_start_from``), so that the analysis can tell runs apart.
        warm_start: with ``load_weights_only``, the checkpoint whose weights to load (its
            training state and identity are not taken).
        info, warnings: lines to tell the user.
    """

    path: str | None = None
    logged: dict[str, str] = field(default_factory=dict)
    warm_start: dict[str, Any] | None = None
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_last(roots: Sequence[str | Path], identity_hash: str) -> tuple[Path | None, list[str]]:
    """(the newest checkpoint under ``roots`` written under this identity, or None; why each
    unreadable checkpoint was passed over). Checkpoints of other identities (another lr, width,
    seed, data setting) are passed over silently."""
    skipped = []
    for path in checkpoints_under(*roots):
        try:
            saved = checkpoint_identity(read_checkpoint(path))
        except CheckpointError as err:
            skipped.append(str(err))
            continue
        if saved is not None and same_run(saved, identity_hash):
            return path, skipped
    return None, skipped


def resolve_checkpoint(
    request: str | None, subcommand: str, identity: Mapping[str, Any], roots: Sequence[str | Path],
    weights_only: bool = False,
) -> Resolution:  # fmt: skip
    """The checkpoint a subcommand uses for ``--ckpt_path request``, under the identity rules:
    ``last`` is this run's newest under ``roots`` (every version of the logger's folder and the
    checkpoint callback's), a file must have been written under this run's ``identity``
    (``{"hash", "config"}``) unless only its weights are taken, ``untrained`` evaluates the
    initial weights on purpose. Raises :class:`CheckpointRequestError` where the request cannot
    be honoured."""
    run = identity["hash"]
    resumed = "resumed_from" if subcommand == "fit" else "ckpt_path"
    if request is None:
        if subcommand in EVALUATIONS:
            raise CheckpointRequestError(
                "ckpt_path", f"{subcommand} without a checkpoint would evaluate random weights; give --ckpt_path "
                f"{LAST} (this run's newest) or a file, or --ckpt_path {UNTRAINED} to do it on purpose",
            )  # fmt: skip
        if weights_only:
            raise CheckpointRequestError("load_weights_only", "needs --ckpt_path FILE (the checkpoint to take weights from)")
        return Resolution()
    if request == UNTRAINED:
        if weights_only:
            raise CheckpointRequestError("load_weights_only", f"there are no weights to load with --ckpt_path {UNTRAINED}")
        if subcommand == "fit":
            raise CheckpointRequestError("ckpt_path", f"'{UNTRAINED}' is for evaluating; fit starts untrained without --ckpt_path")
        return Resolution(logged={"ckpt_path": UNTRAINED}, warnings=[f"--ckpt_path {UNTRAINED}: evaluating the untrained model, as asked"])
    if request == LAST:
        if weights_only:
            raise CheckpointRequestError("load_weights_only", f"give the checkpoint file (--ckpt_path FILE), not '{LAST}'")
        found, skipped = find_last(roots, run)
        warnings = [f"--ckpt_path last: skipping {len(skipped)} unreadable checkpoint(s): " + "; ".join(skipped)] if skipped else []
        if found is None:
            where = " or ".join(str(r) for r in roots) or "(no logger or checkpoint folder)"
            if subcommand != "fit":  # evaluating an untrained model by accident helps nobody
                raise CheckpointRequestError("ckpt_path", f"no last checkpoint of this run (identity {run}) under {where}; run `fit` first")
            return Resolution(warnings=[*warnings, f"--ckpt_path last: no checkpoint of this run under {where}; starting from scratch"])
        # hybrids.lab.analysis drops the run a fit continues, so it is not counted twice.
        return Resolution(str(found), {resumed: str(found)}, info=[f"hybrids: using checkpoint {found}"], warnings=warnings)
    try:
        checkpoint = read_checkpoint(request, weights=weights_only)
    except CheckpointError as err:
        raise CheckpointRequestError("ckpt_path", str(err)) from err
    if weights_only:
        return Resolution(logged={"warm_start_from": str(request)}, warm_start=checkpoint)
    saved = checkpoint_identity(checkpoint)
    if saved is None:
        raise CheckpointRequestError(
            "ckpt_path", f"{request} has no run identity (it was not written by the hybrids CLI), so it cannot be "
            "checked against this config; add --load_weights_only to load its weights only",
        )  # fmt: skip
    if not same_run(saved, run):
        stored = saved.get("config")
        # Normalised again, as same_run compares it: arguments added since are not listed.
        diff = identity_diff(identity_config(stored) if isinstance(stored, dict) else {}, identity["config"])
        raise CheckpointRequestError(
            "ckpt_path", f"{request} belongs to another run (identity {saved['hash']}, this config {run}); what "
            "differs:\n  " + "\n  ".join(diff or ["(no listed key)"])
            + "\nUse the config that wrote it, or add --load_weights_only to take its weights only.",
        )  # fmt: skip
    return Resolution(str(request), {resumed: str(request)})


def evaluated_run_folder(ckpt_path: str | Path | None) -> Path | None:
    """The run folder (``.../version_N``) a checkpoint was saved in by the CLI's default layout
    (``version_N/checkpoints/*.ckpt`` beside its ``hparams.yaml``), or None (untrained, or a
    checkpoint kept elsewhere: an evaluation of it is reported, not recorded)."""
    if ckpt_path is None:
        return None
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "hparams.yaml").is_file():
        return folder.parent
    return None


def checkpoint_roots(trainer) -> list[str]:
    """Where a run's checkpoints may be: every version of its logger's ``save_dir/name`` (Lightning
    looks only in the new, empty version) and the checkpoint callback's own folder, if set."""
    roots = []
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger is not None else None
    if root:
        roots.append(str(root))
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            roots.append(str(callback.dirpath))
    return roots
