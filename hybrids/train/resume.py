"""What an exact resumption needs that Lightning does not save: the random states, and the
running epoch means of a checkpoint written mid-epoch."""

from __future__ import annotations

from typing import Any

import torch

RNG_KEY = "hybrids_rng"


def rng_states() -> dict[str, Any]:
    """The torch (and CUDA, where initialised) random states, for a checkpoint."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`; a run moved to a machine with fewer GPUs restores the states it
    has room for."""
    torch.set_rng_state(states["torch"])
    saved = states.get("cuda")
    if saved and torch.cuda.is_available():
        for device, state in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def epoch_finished(trainer) -> bool:
    """Whether every training batch of the current epoch has been processed."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    total = trainer.num_training_batches
    return isinstance(total, int) and done >= total


def zero_epoch_means(checkpoint: dict[str, Any], names: tuple[str, ...]) -> None:
    """Zero the saved sums of the epoch means ``names`` (``metrics.<name>.total / .weight``): a
    checkpoint at the end of an epoch holds the whole epoch's sums, which the next epoch must not
    start from."""
    for name in names:
        for key in ("total", "weight"):
            entry = f"metrics.{name}.{key}"
            checkpoint["state_dict"][entry] = torch.zeros_like(checkpoint["state_dict"][entry])
