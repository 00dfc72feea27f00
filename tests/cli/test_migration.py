"""Configs, command lines and sweep files in the flat spelling of LanguageModel's arguments (from
before the stack and the optimiser became dataclasses) keep working: hybrids.train.model_args
and the CLI's migrate_arguments move their keys under stack / optim."""

from pathlib import Path

import yaml

from hybrids.cli.fit import build_cli, migrate_arguments
from hybrids.model.config import StackConfig
from hybrids.train.model_args import flatten, merged_arguments, nest, nest_config, nest_key, unnest
from helpers import ROOT

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_keys_and_dicts_move_under_stack_and_optim():
    assert nest_key("model.init_args.d_model") == "model.init_args.stack.d_model"
    assert nest_key("model.lr") == "model.optim.lr"
    assert nest_key("model.init_args.mixers.A.init_args.heads") == "model.init_args.stack.mixers.A.init_args.heads"
    for unchanged in ("model.init_args.max_loss", "model.class_path", "data.init_args.seq_len", "model.init_args.stack.lr"):
        assert nest_key(unchanged) == unchanged
    nested, moved = nest({"d_model": 32, "lr": 1e-3, "max_loss": 5.0, "stack": {"pattern": "MA"}})
    assert nested == {"stack": {"pattern": "MA", "d_model": 32}, "optim": {"lr": 1e-3}, "max_loss": 5.0}
    assert sorted(moved) == ["d_model", "lr"]
    # A key given both ways keeps the nested value; a dataclass is taken field by field.
    assert nest({"d_model": 32, "stack": {"d_model": 64}})[0]["stack"]["d_model"] == 64
    assert nest({"stack": StackConfig(vocab_size=3, d_model=128), "dropout": 0.1})[0]["stack"]["d_model"] == 128
    assert unnest({"stack": {"d_model": 64}, "d_model": 32})["d_model"] == 64
    assert flatten({})["lr"] == 3e-3 and flatten({"optim": {"lr": 1e-3}})["lr"] == 1e-3
    merged = merged_arguments({"d_model": 32, "lr": 1e-3, "vocab_size": 9}, {"stack": {"dropout": 0.2}, "lr": 5e-4})
    assert merged["stack"] == {"d_model": 32, "vocab_size": 9, "dropout": 0.2} and merged["optim"] == {"lr": 5e-4}
    assert nest_config({"fit": {"model": {"init_args": {"lr": 1}}}})[0] == {"fit": {"model": {"init_args": {"optim": {"lr": 1}}}}}


def test_every_form_of_a_config_argument_is_migrated(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({"model": {"init_args": {"d_model": 32}}}))
    nested = ROOT / "configs" / "transformer.yaml"
    for form in (["-c", str(flat)], ["--config", str(flat)], [f"--config={flat}"], [f"-c={flat}"], [f"-c{flat}"]):
        out, notes = migrate_arguments(["fit", *form])
        value = out[-1].partition("=")[2] if out[-1].startswith("--config=") else out[-1]
        assert yaml.safe_load(Path(value).read_text())["model"]["init_args"] == {"stack": {"d_model": 32}}, form
        assert Path(value).parent == tmp_path and notes, "the migrated copy sits beside the original"
    out, notes = migrate_arguments(["fit", "-c", "{model: {init_args: {lr: 0.1}}}"])
    assert yaml.safe_load(out[-1]) == {"model": {"init_args": {"optim": {"lr": 0.1}}}} and "the -c string" in notes[0]
    unchanged = ["fit", "-c", str(nested), "--model.init_args.stack.d_model=8", "--print_config", "--model", "hybrids.LanguageModel"]
    assert migrate_arguments(unchanged) == (unchanged, [])
    out, _ = migrate_arguments(["fit", "--model.init_args.lr", "0.1", "--model.d_model=8"])
    assert out == ["fit", "--model.init_args.optim.lr", "0.1", "--model.stack.d_model=8"]


def test_a_flat_config_composed_of_relative_files_still_resolves_them(in_tmp, capsys):
    """A migrated config is a copy beside the original, so `data: mqar.yaml` still resolves
    against the config's folder; the copy is removed at exit."""
    folder = in_tmp / "configs"
    folder.mkdir()
    (folder / "main.yaml").write_text(yaml.safe_dump({
        "model": {"class_path": "hybrids.LanguageModel", "init_args": {"d_model": 16, "lr": 1e-3}}, "data": "mqar.yaml"}))
    (folder / "mqar.yaml").write_text(yaml.safe_dump({"class_path": "hybrids.data.MQAR", "init_args": {
        "seq_len": 32, "num_kv_pairs": 2, "vocab_size": 32, "num_train_examples": 32, "num_test_examples": 16,
        "batch_size": 16}}))
    cli = build_cli(["fit", "-c", str(folder / "main.yaml"), *QUIET, "--trainer.max_steps=1"])
    assert cli.model.config.d_model == 16 and cli.model.optim.lr == 1e-3 and cli.datamodule.seq_len == 32
    assert "main.yaml: model.init_args keys moved under stack / optim" in capsys.readouterr().err


def test_a_sweep_over_a_flat_base_patches_its_mixers_in_place(tmp_path):
    from hybrids.lab.sweeps import expand, load_sweep

    base = yaml.safe_load((ROOT / "configs" / "mamba.yaml").read_text())
    base["model"]["init_args"] = unnest(base["model"]["init_args"])  # the old, flat spelling
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "flat", "base": "base.yaml", "seeds": [0],
        "grid": [{"model.init_args.mixers.M.init_args.d_state": [8]}]}))
    (plan,) = expand(load_sweep(tmp_path / "sweep.yaml"))
    mixer = plan.config["model"]["init_args"]["stack"]["mixers"]["M"]
    assert mixer["class_path"] == "hybrids.mixers.Mamba" and mixer["init_args"]["d_state"] == 8
    assert "mixers" not in plan.config["model"]["init_args"]
