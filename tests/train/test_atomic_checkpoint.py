"""Checkpoint writes are atomic: a writer killed at random moments leaves the old checkpoint or the
new one, never a partial file (hybrids.train.atomic_checkpoint); the CLI uses it for every run."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import torch

from hybrids.train.atomic_checkpoint import AtomicCheckpointIO, atomic_torch_save

KILLS = 30
PAYLOAD = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: a write takes long enough to be hit


def kill_writers_at_random(path: Path, save, kills: int = KILLS, seed: int = 0) -> tuple[int, int]:
    """Fork a writer that saves versions 1, 2, ... of a checkpoint to ``path`` in a loop, SIGKILL
    it after a random delay, check what ``path`` holds; ``kills`` times. Returns (kills that found
    ``path`` unreadable or inconsistent, kills that hit a write in progress)."""
    rng = random.Random(seed)
    broken = mid_write = 0
    version = 0
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # the writer: nothing but saves, then killed
            # No tensor arithmetic here: a forked child that calls into OpenMP after its parent
            # used it can deadlock. Serialising is enough.
            try:
                start = version + 1
                for v in range(start, start + 10_000):
                    save({"version": v, "payload": PAYLOAD}, path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mid_write += any(path.parent.glob(f".{path.name}.*.tmp"))
        if not path.exists():
            continue  # killed before the first save completed: nothing to hold yet
        try:
            saved = torch.load(path, weights_only=True)
            ok = torch.equal(saved["payload"], PAYLOAD) and saved["version"] >= version
            version = max(version, saved["version"])
        except Exception:  # noqa: BLE001 (a truncated file fails in many ways)
            ok = False
            path.unlink()
        broken += not ok
    return broken, mid_write


def test_a_writer_killed_at_random_moments_never_leaves_a_partial_checkpoint(tmp_path):
    broken, mid_write = kill_writers_at_random(tmp_path / "last.ckpt", atomic_torch_save)
    assert broken == 0
    assert mid_write > 0, "no kill landed during a write: the test did not test anything"
    atomic_torch_save({"version": 0}, tmp_path / "last.ckpt")
    assert not list(tmp_path.glob(".*.tmp")), "temporaries of killed writers are removed at the next save"
    assert oct((tmp_path / "last.ckpt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_the_same_kills_do_break_a_plain_torch_save(tmp_path):
    """The control: writing in place, as torch.save does, the same kills leave broken files, so the
    test above would catch a writer that is not atomic."""
    broken, _ = kill_writers_at_random(tmp_path / "last.ckpt", lambda obj, path: torch.save(obj, path), kills=15)
    assert broken > 0


def test_the_cli_writes_checkpoints_through_it(in_tmp):
    from hybrids.cli.fit import build_cli
    from helpers import ROOT

    cli = build_cli(["fit", "-c", str(ROOT / "configs" / "transformer.yaml"), "--trainer.max_steps=1",
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                     "--data.init_args.num_train_examples=32", "--data.init_args.num_test_examples=16",
                     "--data.init_args.batch_size=16"])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert torch.load(in_tmp / "runs/transformer/version_0/checkpoints/last.ckpt", weights_only=False)["global_step"] == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
