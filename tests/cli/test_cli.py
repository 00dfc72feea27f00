"""The ``hybrids`` command: every config runs, bad configs fail early and clearly, runs resume."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybrids.lab.analysis import load_runs
from hybrids.cli.fit import build_cli
from helpers import ROOT

CONFIG_ROOT = ROOT / "configs"
# Every training config, the task folders' included (sweep specs are not training configs).
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.yaml") if "sweeps" not in p.relative_to(CONFIG_ROOT).parts)
# A fast_dev_run tests at every length of an induction config: one batch at 16,384 tokens takes
# attention minutes on a CPU, so the test keeps one longer length and small batches.
SHORT_EVALUATION = ["--data.init_args.eval_lengths=[512]", "--data.init_args.eval_batch_size=2"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def tiny_fit(config: Path, *extra: str) -> list[str]:
    """fit arguments for a run of a few batches of small data."""
    return [
        "fit", "-c", str(config), *QUIET,
        "--data.init_args.num_train_examples=64", "--data.init_args.num_test_examples=32",
        "--data.init_args.batch_size=16", *extra,
    ]


def test_there_are_configs():
    assert any(c.name == "transformer.yaml" for c in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.relative_to(CONFIG_ROOT).with_suffix("").as_posix() for c in CONFIGS])
def test_config_parses_and_runs_fast_dev_run(config, in_tmp):
    extra = SHORT_EVALUATION if "InductionHeads" in config.read_text() else []
    cli = build_cli(["fit", "-c", str(config), "--trainer.fast_dev_run=true", *QUIET, *extra])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1


def write_config(tmp: Path, edit) -> Path:
    config = yaml.safe_load((CONFIG_ROOT / "transformer.yaml").read_text())
    edit(config)
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _set_mixer(config, **init_args):
    config["model"]["init_args"]["stack"]["mixers"]["A"]["init_args"].update(init_args)


BAD_CONFIGS = {
    "unknown-class": (
        lambda c: c["model"]["init_args"]["stack"]["mixers"]["A"].update(class_path="hybrids.mixers.Atention"),
        "model.init_args.stack.mixers.A.class_path",
    ),
    "letter-without-mixer": (
        lambda c: c["model"]["init_args"]["stack"].update(pattern="AM"),
        "model.init_args.stack.pattern",
    ),
    "heads-do-not-divide-d_model": (lambda c: _set_mixer(c, heads=3), "model.init_args.stack.mixers.A.init_args.heads"),
    "misspelt-argument": (lambda c: _set_mixer(c, head=2), "model.init_args.stack.mixers.A.init_args.head"),
    "data-too-short": (lambda c: c["data"]["init_args"].update(num_kv_pairs=40), "data.init_args.seq_len"),
    "unknown-data-class": (lambda c: c["data"].update(class_path="hybrids.data.MQR"), "data.class_path: there is no class hybrids.data.MQR"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_fails_before_training_naming_the_key(name, in_tmp, capsys):
    edit, key = BAD_CONFIGS[name]
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", str(write_config(in_tmp, edit)), *QUIET])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert key in err
    assert not (in_tmp / "runs").exists(), "nothing may be trained or logged"


def test_fit_logs_figures_and_resumes_from_last(in_tmp, capsys):
    config = CONFIG_ROOT / "transformer.yaml"
    first = build_cli(tiny_fit(config, "--trainer.max_epochs=1"))
    assert first.trainer.global_step == 4
    out = capsys.readouterr().out
    assert "val accuracy" in out and "parameters" in out and "recurrent state" in out
    log_dir = Path(first.trainer.log_dir)
    assert (log_dir / "checkpoints" / "last.ckpt").exists()
    metrics = (log_dir / "metrics.csv").read_text()
    assert "state_size" in metrics and "params" in metrics and "val/acc" in metrics

    # A newer checkpoint of another shape under the same run name must be skipped.
    build_cli(tiny_fit(config, "--trainer.max_epochs=1", "--model.init_args.stack.d_model=32"))

    resumed = build_cli(tiny_fit(config, "--trainer.max_epochs=2", "--ckpt_path=last"))
    assert Path(resumed.trainer.ckpt_path).resolve() == (log_dir / "checkpoints" / "last.ckpt").resolve()
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 8
    rows = list(csv.DictReader((Path(resumed.trainer.log_dir) / "metrics.csv").open()))
    trained_epochs = {row["epoch"] for row in rows if row.get("train/loss_epoch")}
    assert trained_epochs == {"1"}, "only the second epoch was trained after resuming"
    runs = load_runs(in_tmp / "runs")
    assert log_dir.name not in {r.path.name for r in runs}, "the resumed run is superseded by its continuation"
    assert len(runs) == 2


def test_checkpointing_can_be_switched_off(in_tmp):
    config = CONFIG_ROOT / "transformer.yaml"
    cli = build_cli(tiny_fit(config, "--trainer.max_epochs=1", "--trainer.enable_checkpointing=false"))
    assert cli.trainer.global_step == 4
    assert not list((in_tmp / "runs").rglob("*.ckpt"))


def test_ckpt_path_last_without_checkpoint_starts_from_scratch(in_tmp):
    config = CONFIG_ROOT / "transformer.yaml"
    with pytest.warns(UserWarning, match="no checkpoint of this run"):
        cli = build_cli(tiny_fit(config, "--trainer.max_epochs=1", "--ckpt_path=last"))
    assert cli.trainer.global_step == 4


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_subcommands(subcommand, in_tmp):
    config = CONFIG_ROOT / "transformer.yaml"
    build_cli(tiny_fit(config, "--trainer.max_epochs=1"))
    args = [subcommand, *tiny_fit(config)[1:], "--ckpt_path=last"]  # the same run: the same config
    cli = build_cli(args)
    assert cli.trainer.state.finished
    assert cli.trainer.ckpt_path and cli.trainer.ckpt_path.endswith("last.ckpt"), "the trained weights were loaded"


def test_console_script_and_module_print_config(in_tmp):
    config = str(CONFIG_ROOT / "transformer.yaml")
    exe = Path(sys.executable).parent / "hybrids"
    for command in ([str(exe)], [sys.executable, "-m", "hybrids"]):
        result = subprocess.run([*command, "fit", "-c", config, "--print_config"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        printed = yaml.safe_load(result.stdout)
        assert printed["model"]["class_path"] == "hybrids.LanguageModel"
        assert printed["data"]["init_args"]["seq_len"] == 64


def test_user_mixer_without_state_size_still_trains(in_tmp, capsys):
    config = CONFIG_ROOT / "transformer.yaml"
    spec = '{"L": {"class_path": "torch.nn.Linear", "init_args": {"out_features": 64}}}'
    with pytest.warns(UserWarning, match="state size not logged"):
        cli = build_cli(tiny_fit(config, "--trainer.max_epochs=1", "--model.init_args.stack.pattern=L",
                                 f"--model.init_args.stack.mixers={spec}"))
    assert cli.trainer.global_step == 4
    assert "recurrent state unknown" in capsys.readouterr().out


def test_evaluating_last_without_checkpoint_is_an_error(in_tmp, capsys):
    config = CONFIG_ROOT / "transformer.yaml"
    with pytest.raises(SystemExit) as info:
        build_cli(["test", "-c", str(config), *QUIET, "--ckpt_path=last"])
    assert info.value.code == 2
    assert "no last checkpoint" in capsys.readouterr().err


def test_a_config_naming_a_data_module_gets_its_defaults_not_mqars(in_tmp):
    # MQAR is the default data module; its values (seq_len 64, vocab 128) once leaked into any
    # data module a config named without those init_args.
    (in_tmp / "copying.yaml").write_text("data:\n  class_path: hybrids.data.SelectiveCopying\n")
    cli = build_cli(["-c", "copying.yaml", *QUIET], run=False)
    assert type(cli.datamodule).__name__ == "SelectiveCopying"
    assert (cli.datamodule.seq_len, cli.datamodule.vocab_size) == (256, 16)
    plain = build_cli([*QUIET], run=False)
    assert type(plain.datamodule).__name__ == "MQAR" and plain.datamodule.seq_len == 64
    longer = build_cli(["--data.init_args.seq_len=128", *QUIET], run=False)
    assert type(longer.datamodule).__name__ == "MQAR" and longer.datamodule.seq_len == 128


def test_a_config_setting_only_mqars_arguments_still_gets_mqar(in_tmp):
    (in_tmp / "longer.yaml").write_text("data:\n  init_args: {seq_len: 128}\n")
    cli = build_cli(["-c", "longer.yaml", *QUIET], run=False)
    assert type(cli.datamodule).__name__ == "MQAR" and cli.datamodule.seq_len == 128
    (in_tmp / "recall.yaml").write_text("data:\n  class_path: hybrids.data.InContextRecall\n  init_args: {vocab_size: 32}\n")
    recall = build_cli(["-c", "recall.yaml", *QUIET], run=False)
    assert (recall.datamodule.seq_len, recall.datamodule.vocab_size, recall.datamodule.num_train_examples) == (128, 32, 12_800)
