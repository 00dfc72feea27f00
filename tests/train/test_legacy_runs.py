"""Runs written before the package layout of December 2026 still load, evaluate and resume.

``tests/fixtures/legacy_run/`` is a run folder written by the code of commit a2434b8 (``hybrids
fit -c tiny.yaml``: attention + Mamba, 4 steps): its config.yaml, hparams.yaml, metrics.csv and
last.ckpt, whose stored run identity names ``hybrids.lit.LanguageModel`` and
``hybrids.mixers.mamba.Mamba``. Old module paths import the modules that hold the code now
(``hybrids._legacy``).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from hybrids.cli.fit import build_cli
from hybrids.train.identity import identity_config, identity_hash, same_run
from helpers import TESTS

FIXTURE = TESTS / "fixtures" / "legacy_run"
RUN = FIXTURE / "legacy" / "version_0"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture
def legacy_run(in_tmp):
    """A copy of the legacy run folder under the test's working folder (runs/legacy/version_0)."""
    target = in_tmp / "runs" / "legacy"
    shutil.copytree(FIXTURE / "legacy", target)
    return target / "version_0"


def test_the_checkpoint_names_old_module_paths():
    checkpoint = torch.load(RUN / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = checkpoint["hybrids"]
    assert saved["config"]["model"]["class_path"] == "hybrids.lit.LanguageModel"
    assert saved["config"]["model"]["init_args"]["mixers"]["M"]["class_path"] == "hybrids.mixers.mamba.Mamba"


def test_old_module_paths_import_the_moved_modules():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import hybrids.lit
        from hybrids.analysis import load_runs
        from hybrids.mixers.hippo import nplr
        from hybrids.sweeps.spec import load_sweep

    import hybrids.kernels.ssm.hippo
    import hybrids.lab.analysis
    import hybrids.lab.sweeps.spec
    import hybrids.train.module

    assert hybrids.lit is hybrids.train.module
    assert load_runs is hybrids.lab.analysis.load_runs and load_sweep is hybrids.lab.sweeps.spec.load_sweep
    assert nplr is hybrids.kernels.ssm.hippo.nplr
    assert any("hybrids.lit moved to hybrids.train.module" in str(w.message) for w in caught)


def test_the_stored_identity_is_this_code_s_identity_of_the_saved_config():
    """The identity hash of the saved config, recomputed now, matches what the checkpoint stored
    (class paths are normalised to the classes they name, wherever those live)."""
    import yaml

    checkpoint = torch.load(RUN / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    config = yaml.safe_load((RUN / "config.yaml").read_text())
    assert same_run(checkpoint["hybrids"], identity_hash(identity_config(config)))


def test_a_legacy_checkpoint_evaluates_and_resumes(legacy_run):
    config = legacy_run / "config.yaml"
    checkpoint = legacy_run / "checkpoints" / "last.ckpt"
    validated = build_cli(["validate", "-c", str(config), *QUIET, f"--ckpt_path={checkpoint}"])
    assert validated.trainer.state.finished
    resumed = build_cli(["fit", "-c", str(config), *QUIET, "--trainer.max_steps=6", "--ckpt_path=last"])
    assert resumed.trainer.global_step == 6, "resumed from the legacy run's step 4"
    assert Path(resumed.trainer.ckpt_path).resolve() == checkpoint.resolve()


def test_a_legacy_run_folder_is_read_by_the_analysis():
    from hybrids.lab.analysis import load_runs

    runs = load_runs(FIXTURE)
    assert len(runs) == 1 and runs[0].params == 3792


def test_load_from_checkpoint_takes_flat_hyper_parameters_and_either_spelling_of_overrides():
    """Checkpoints record LanguageModel's arguments flat (this one from before the stack and the
    optimiser were dataclasses, as every later one does): load_from_checkpoint nests them, and
    merges overrides given flat or nested; hparams_file and file objects work too."""
    from hybrids import LanguageModel, OptimConfig

    path = RUN / "checkpoints" / "last.ckpt"
    saved = torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]
    plain = LanguageModel.load_from_checkpoint(path)
    assert plain.config.d_model == saved["d_model"] and plain.optim.lr == saved["lr"]
    assert plain.config.mixers["M"]["class_path"] == saved["mixers"]["M"]["class_path"]
    reference = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(plain.state_dict()[k], reference[k]) for k in reference if not k.startswith("metrics."))

    flat = LanguageModel.load_from_checkpoint(path, lr=5e-4, dropout=0.2)
    assert flat.optim.lr == 5e-4 and flat.config.dropout == 0.2 and flat.config.d_model == saved["d_model"]
    nested = LanguageModel.load_from_checkpoint(path, optim={"lr": 5e-4}, stack={"dropout": 0.2})
    assert nested.optim == OptimConfig(**{**plain.optim.__dict__, "lr": 5e-4}) and nested.config.dropout == 0.2
    assert nested.config.vocab_size == saved["vocab_size"]
    from_yaml = LanguageModel.load_from_checkpoint(path, hparams_file=RUN / "hparams.yaml")
    assert from_yaml.config == plain.config
    with path.open("rb") as handle:
        assert LanguageModel.load_from_checkpoint(handle).config == plain.config
