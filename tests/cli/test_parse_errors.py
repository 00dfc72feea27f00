"""A typo or a wrong type in any model, data or trainer key is one keyed line with a suggestion
and exit 2 (hybrids.cli.parse_errors), not jsonargparse's usage and Union report."""

import pytest

from hybrids.cli.fit import build_cli
from hybrids.cli.parse_errors import keyed_line
from helpers import ROOT

CONFIG = str(ROOT / "configs" / "transformer.yaml")

CASES = {
    "model key": (["--model.init_args.stack.d_modle=32"],
                  "model.init_args.stack.d_modle: unknown argument; did you mean 'stack.d_model'?"),
    "model key at the old level": (["--model.init_args.d_modle=32"],
                                   "model.init_args.d_modle: LanguageModel takes no argument 'd_modle'; did you mean 'stack.d_model'?"),
    "optimiser key": (["--model.init_args.optim.weight_decai=0"],
                      "model.init_args.optim.weight_decai: unknown argument; did you mean 'optim.weight_decay'?"),
    "data key": (["--data.init_args.seq_lenn=32"],
                 "data.init_args.seq_lenn: MQAR takes no argument 'seq_lenn'; did you mean 'seq_len'?"),
    "trainer key": (["--trainer.acclerator=cpu"], "trainer.acclerator: unknown argument; did you mean 'trainer.accelerator'?"),
    "model type": (["--model.init_args.stack.d_model=abc"], "model.init_args.stack.d_model: expected int, got 'abc'"),
    "trainer type": (["--trainer.max_epochs=abc"], "trainer.max_epochs: expected int or null, got 'abc'"),
    "tuple length": (["--model.init_args.optim.betas=[0.9]"],
                     "model.init_args.optim.betas: Expected a tuple with 2 elements. Got value: [0.9]"),
    "class path": (["--data.class_path=hybrids.data.MQARR"],
                   "data.class_path: there is no class hybrids.data.MQARR; did you mean hybrids.data.MQAR?"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_key_is_one_keyed_line(case, in_tmp, capsys):
    args, line = CASES[case]
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", CONFIG, *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {line}"]
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("text, line", [
    ("trainer:\n  max_stepz: 3\n", "trainer.max_stepz: unknown argument; did you mean 'trainer.max_steps'?"),
    # Inside the stack's group of the model: the key names the group.
    ("model:\n  init_args:\n    stack:\n      d_modle: 3\n",
     "model.init_args.stack.d_modle: unknown argument; did you mean 'stack.d_model'?"),
], ids=["trainer", "stack group"])
def test_a_typo_in_a_config_file_is_keyed_too(in_tmp, capsys, text, line):
    (in_tmp / "bad.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", "-c", CONFIG, "-c", str(in_tmp / "bad.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {line}"


def test_an_unrecognised_report_is_left_whole():
    assert keyed_line("something else went wrong") is None
