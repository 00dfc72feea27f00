"""The fit checks that jsonargparse's types cannot make (hybrids/cli/fit_checks.py), one by one;
tests/cli/test_cli_fuzz.py runs them through the CLI."""

from jsonargparse import Namespace

from hybrids.cli.fit_checks import text_problem, value_problem
from hybrids.errors import argument_at_fault
from hybrids.cli.parse_errors import keyed_line
from cli_fuzz import NON_UTF8


def test_values_that_are_not_utf8_are_named_by_their_option():
    assert text_problem(["--trainer.max_steps", "5"]) is None
    assert text_problem(["--data.init_args.path", NON_UTF8]).startswith("data.init_args.path: holds bytes that are not UTF-8")
    assert text_problem([f"--trainer.default_root_dir={NON_UTF8}"]).startswith("trainer.default_root_dir:")
    assert text_problem(["-c", NON_UTF8]).startswith("config:")


def test_config_files_must_be_yaml_mappings(tmp_path):
    binary, empty, listed, broken = (tmp_path / name for name in ("b.yaml", "e.yaml", "l.yaml", "x.yaml"))
    binary.write_bytes(b"trainer:\n  max_steps: \xff\n")
    empty.write_text("")
    listed.write_text("- 1\n- 2\n")
    broken.write_text("trainer: [1,\n  max_steps: 2\n")
    assert "not UTF-8 text (byte 0xff at offset 22)" in text_problem(["-c", str(binary)])
    assert text_problem([f"--config={empty}"]).endswith("empty file: no settings in it")
    assert "holds a YAML list, not a mapping" in text_problem(["-c", str(listed)])
    assert "not valid YAML at line" in text_problem(["-c", str(broken)])
    assert text_problem(["-c", str(tmp_path)]).endswith("a folder, not a config file")
    assert text_problem(["-c", "{trainer: {max_steps: 5}}"]) is None  # YAML text is a config too
    assert text_problem(["-c", str(tmp_path / "missing.yaml")]).endswith("no such file")


def test_values_no_setting_can_take():
    def problem(**sections):
        return value_problem(Namespace(**{name: Namespace(**values) for name, values in sections.items()}))

    assert problem(trainer={"max_steps": 10}) is None
    assert problem(trainer={"max_steps": 2**70}).startswith("trainer.max_steps: 1180591620717411303424 does not fit a 64-bit")
    assert problem(data={"init_args": Namespace(seed=-(2**64))}).startswith("data.init_args.seed:")
    assert problem(trainer={"default_root_dir": ""}).startswith("trainer.default_root_dir: empty")
    assert problem(trainer={"gradient_clip_val": float("inf")}) == "trainer.gradient_clip_val: must be finite, got inf"
    assert problem(trainer={"check_val_every_n_epoch": 0}).startswith("trainer.check_val_every_n_epoch: must be a positive integer")
    assert problem(trainer={"min_steps": -1}).startswith("trainer.min_steps: must be an integer >= 0")
    assert problem(trainer={"max_epochs": -1}) is None  # -1: no limit
    assert problem(trainer={"max_epochs": -2}) == "trainer.max_epochs: must be an integer >= -1 (-1: no limit), got -2"
    assert problem(trainer={"accumulate_grad_batches": 0}) == "trainer.accumulate_grad_batches: must be a positive integer, got 0"
    assert problem(trainer={"gradient_clip_val": -1}).startswith("trainer.gradient_clip_val: must be >= 0")
    assert problem(trainer={"val_check_interval": 0}).startswith("trainer.val_check_interval: must be positive")
    # The classes inside the trainer keep their own empty defaults (CSVLogger's prefix is "").
    assert problem(trainer={"logger": Namespace(init_args=Namespace(prefix=""))}) is None


def test_the_argument_at_fault_is_the_one_whose_default_is_accepted():
    def build(kwargs):
        if kwargs["b"] < 0:
            raise ValueError("something is negative")

    assert argument_at_fault(build, {"a": 1, "b": -1, "c": 3}, {"a": 0, "b": 0, "c": 0}) == "b"
    assert argument_at_fault(build, {"a": 1, "b": 1}, {"a": 0, "b": 0}) is None  # nothing fails: none at fault
    # Known to fail: the full call is not tried again, and the search is the same.
    assert argument_at_fault(build, {"b": -1}, {"b": 0}, known_to_fail=True) == "b"


def test_class_path_reports_become_one_line():
    report = ('Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
              "    - Import path builtins.int does not correspond to a subclass of LanguageModel\n"
              "    - Expected a <class 'NoneType'>\n  Given value type: <class 'jsonargparse._util.NestedArg'>\n"
              "  Given value: NestedArg(key='class_path', val='builtins.int')")
    assert keyed_line(report) == "model.class_path: 'builtins.int' does not correspond to a subclass of LanguageModel"
    assert keyed_line('Parser key "config": File does not exist: \'/x.yaml\'') == "config: File does not exist: '/x.yaml'"
