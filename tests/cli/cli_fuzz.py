"""The value space of the CLI, enumerated for tests/cli/test_cli_fuzz.py (issue 26, point 4).

Every argument of ``fit``, ``generate``, ``sweep`` and ``plot`` is listed from the parsers and
classes themselves (a new argument joins the fuzz without a test edit), with the bad values its
type calls for. :func:`run_case` runs one command in this process and says how it ended: refused
(exit status and stderr), or reached the point where it would start to train or decode.

Run as a script for the outcome of every case:  python tests/cli/cli_fuzz.py [fit|generate|sweep|plot]
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import inspect
import io
import os
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path

# argv bytes that are not UTF-8 arrive in Python as lone surrogates (surrogateescape).
NON_UTF8 = os.fsdecode(b"\xff\xfe-not-utf8")
HUGE_INT = str(10**30)  # beyond int64: never a count, a size or a seed
VERY_LARGE_INT = str(10**12)  # fits int64; as a size, terabytes

INT_VALUES = {"wrong type": "1.5", "empty": "", "negative": "-1", "zero": "0",
              "huge": HUGE_INT, "very large": VERY_LARGE_INT, "non-UTF-8": NON_UTF8}
FLOAT_VALUES = {"wrong type": "abc", "empty": "", "nan": "nan", "huge": "1e400", "negative": "-1",
                "non-UTF-8": NON_UTF8}
BOOL_VALUES = {"wrong type": "maybe", "empty": "", "non-UTF-8": NON_UTF8}
STR_VALUES = {"empty": "", "non-UTF-8": NON_UTF8}
CHOICE_VALUES = {"unknown choice": "no-such-choice", "empty": "", "non-UTF-8": NON_UTF8}
CLASS_VALUES = {"unknown class": "no.such.Class", "not a class path": "abc", "empty": "",
                "wrong class": "builtins.int", "non-UTF-8": NON_UTF8}
MAPPING_VALUES = {"wrong type": "abc", "empty": "", "list": "[1, 2]", "non-UTF-8": NON_UTF8}
LIST_VALUES = {"wrong type": "abc", "empty": "", "list of text": "[a, b]", "non-UTF-8": NON_UTF8}


@dataclasses.dataclass(frozen=True)
class Case:
    command: str  # fit | generate | sweep | plot
    argument: str  # as the error line must name it, e.g. "trainer.max_steps" or "workers"
    label: str  # what kind of bad value
    argv: tuple[str, ...]  # the command's arguments (after the command name)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.argument}:{self.label}"


# -- what a type calls for ---------------------------------------------------------------------------


def _is_class(hint) -> bool:
    return inspect.isclass(hint) and not issubclass(hint, (int, float, str, bool, Path, enum.Enum, datetime.timedelta))


def values_for(hint) -> dict[str, str]:
    """The bad values for an argument typed ``hint``: the union of what each member calls for."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: dict[str, str] = {}
        for member in typing.get_args(hint):
            if member is not type(None):
                out.update(values_for(member))
        return out
    if origin is typing.Literal:
        return dict(CHOICE_VALUES)
    if origin in (list, tuple, typing.get_origin(typing.Iterable[int])) or hint in (list, tuple):
        return dict(LIST_VALUES)
    if origin in (dict, Mapping, typing.get_origin(Mapping[str, int])) or hint in (dict,):
        return dict(MAPPING_VALUES)
    if hint is bool:
        return dict(BOOL_VALUES)
    if hint is int:
        return dict(INT_VALUES)
    if hint is float:
        return dict(FLOAT_VALUES)
    if hint is datetime.timedelta:
        return {"wrong type": "abc", "empty": "", "non-UTF-8": NON_UTF8}
    if hint in (str, Path) or hint is typing.Any:
        return dict(STR_VALUES)
    if _is_class(hint):
        return dict(CLASS_VALUES)
    return dict(STR_VALUES)


# -- paths ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Paths:
    """Files and folders the path cases point at, made under ``root`` by :func:`make_paths`."""

    root: Path
    file: Path  # a plain text file
    binary: Path  # bytes that are not text
    empty: Path  # an empty file
    folder: Path  # an empty folder
    missing: Path  # nothing there
    under_file: Path  # a path whose parent is a file
    read_only: Path  # a folder nobody (root included) can write: under /proc
    non_utf8: Path  # a missing path whose name is not UTF-8

    def output_folders(self) -> dict[str, str]:
        return {"a file": str(self.file), "under a file": str(self.under_file),
                "read-only": str(self.read_only), "empty": ""}

    def input_files(self) -> dict[str, str]:
        return {"missing": str(self.missing), "a folder": str(self.folder), "empty file": str(self.empty),
                "binary file": str(self.binary), "empty": "", "non-UTF-8 name": str(self.non_utf8)}

    def input_folders(self) -> dict[str, str]:
        return {"missing": str(self.missing), "a file": str(self.file), "empty folder": str(self.folder),
                "non-UTF-8 name": str(self.non_utf8)}


def make_paths(root: Path) -> Paths:
    root.mkdir(parents=True, exist_ok=True)
    (root / "file.txt").write_text("not a config, a checkpoint or a folder\n")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "empty.txt").write_bytes(b"")
    (root / "folder").mkdir(exist_ok=True)
    return Paths(root=root, file=root / "file.txt", binary=root / "binary.bin", empty=root / "empty.txt",
                 folder=root / "folder", missing=root / "missing" / "nothing.yaml",
                 under_file=root / "file.txt" / "inside", read_only=Path("/proc/hybrids-fuzz"),
                 non_utf8=root / NON_UTF8)


# -- fit -----------------------------------------------------------------------------------------

# Arguments left out of the fuzz, with the reason.
FIT_SKIPPED = {
    "help": "prints help", "print_config": "prints the config", "print_shtab": "prints a completion script",
    "config": "a path: fuzzed as config", "model": "a class: fuzzed as model.class_path",
    "data": "a class: fuzzed as data.class_path",
}
# The data modules whose arguments are fuzzed (each under --data.class_path).
DATA_MODULES = ("hybrids.data.MQAR", "hybrids.data.InductionHeads", "hybrids.data.SelectiveCopying",
                "hybrids.data.ByteText")


def _fit_parser():
    from hybrids.cli.fit import build_cli  # noqa: PLC0415

    argv, sys.argv = sys.argv, ["hybrids"]
    try:
        return build_cli(["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"],
                         run=False).parser
    finally:
        sys.argv = argv


def fit_cases(paths: Paths, corpus: Path) -> Iterator[Case]:
    """Every argument of ``hybrids fit``: the parser's own (trainer, checkpoint, run options), the
    model's (stack, optim and the rest of LanguageModel), and each data module's."""
    import importlib  # noqa: PLC0415

    from hybrids.model.config import StackConfig  # noqa: PLC0415
    from hybrids.train.module import LanguageModel  # noqa: PLC0415
    from hybrids.train.optim import OptimConfig  # noqa: PLC0415

    parser = _fit_parser()
    output_folders = {"trainer.default_root_dir", "checkpoint.dirpath"}
    for action in parser._actions:
        dest = action.dest
        if dest in FIT_SKIPPED or dest.endswith(".help") or not action.option_strings:
            continue
        hint = getattr(action, "_typehint", None)
        if hint is None:
            continue
        values = paths.output_folders() if dest in output_folders else values_for(hint)
        for label, value in values.items():
            yield Case("fit", dest, label, (f"--{dest}={value}",))
    for label, value in {**paths.input_files(), "not YAML": "{unclosed: [", "not a mapping": "[1, 2]"}.items():
        yield Case("fit", "config", label, ("-c", value))
    for label, value in {**paths.input_files(), "not a checkpoint": str(paths.file)}.items():
        if label not in ("empty",):
            yield Case("fit", "ckpt_path", label, (f"--ckpt_path={value}",))
    for section in ("model", "data"):
        for label, value in CLASS_VALUES.items():
            yield Case("fit", f"{section}.class_path", label, (f"--{section}.class_path={value}",))

    # LanguageModel(stack: StackConfig, optim: OptimConfig, max_loss, carry_state)
    for name, cls in (("stack", StackConfig), ("optim", OptimConfig)):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            key = f"model.init_args.{name}.{field.name}"
            for label, value in values_for(hints[field.name]).items():
                yield Case("fit", key, label, (f"--{key}={value}",))
    hints = typing.get_type_hints(LanguageModel.__init__)
    for parameter in inspect.signature(LanguageModel.__init__).parameters.values():
        if parameter.name in ("self", "stack", "optim"):
            continue
        key = f"model.init_args.{parameter.name}"
        for label, value in values_for(hints[parameter.name]).items():
            yield Case("fit", key, label, (f"--{key}={value}",))

    from hybrids.data.synthetic import SyntheticTask  # noqa: PLC0415

    # The arguments every synthetic task passes to SyntheticTask are fuzzed on the first one only.
    shared = set(inspect.signature(SyntheticTask.__init__).parameters) - {"self"}
    for index, class_path in enumerate(DATA_MODULES):
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        base = [f"--data.class_path={class_path}"]
        if name == "ByteText":
            base.append(f"--data.init_args.path={corpus}")
        hints = typing.get_type_hints(cls.__init__)
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name == "self" or (index > 0 and issubclass(cls, SyntheticTask) and parameter.name in shared):
                continue
            key = f"data.init_args.{parameter.name}"
            values = paths.input_files() if parameter.name == "path" else values_for(hints[parameter.name])
            for label, value in values.items():
                yield Case("fit", key, f"{name} {label}", (*base, f"--{key}={value}"))


YAML_FLOATS = {"nan": ".nan", "1e400": ".inf"}
# Arguments a mixer cannot be built without, given beside the one under test.
REQUIRED_MIXER_ARGUMENTS = {"Hyena": {"l_max": 16}, "BaseConv": {"l_max": 16}}


def mixer_cases() -> Iterator[Case]:
    """Every argument of every mixer class, given through the stack's ``mixers`` (one letter,
    ``A``, whose spec is replaced whole: the way the CLI overrides a mixer)."""
    import hybrids.mixers as mixers  # noqa: PLC0415
    from hybrids.mixers.base import Mixer  # noqa: PLC0415

    classes = sorted({cls for cls in vars(mixers).values()
                      if inspect.isclass(cls) and issubclass(cls, Mixer) and cls is not Mixer}, key=lambda c: c.__name__)
    for cls in classes:
        hints = typing.get_type_hints(cls.__init__)
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name in ("self", "d_model") or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            key = f"model.init_args.stack.mixers.A.init_args.{parameter.name}"
            values = values_for(hints.get(parameter.name, typing.Any))
            if len(values) > 2:
                # "" is the wrong type as "1.5" or "abc" is, to the same check: one of them is enough here.
                values.pop("empty", None)
            # Inside YAML, NaN and infinity are spelled .nan and .inf ("nan" would be a string).
            values = {label: YAML_FLOATS.get(value, value) for label, value in values.items()}
            required = {k: v for k, v in REQUIRED_MIXER_ARGUMENTS.get(cls.__name__, {}).items() if k != parameter.name}
            others = "".join(f", {k}: {v}" for k, v in required.items())
            for label, value in values.items():
                spec = "{A: {class_path: %s.%s, init_args: {%s: %s%s}}}" % (
                    cls.__module__, cls.__qualname__, parameter.name, _yaml_scalar(value), others)
                yield Case("fit", key, f"{cls.__name__} {label}", (f"--model.init_args.stack.mixers={spec}",))


def _yaml_scalar(value: str) -> str:
    """``value`` as the YAML the user would type inside a flow mapping (quoted where it is not a
    plain scalar: empty, or holding flow characters)."""
    if value == "" or any(c in value for c in ",:{}[]#'\"") or value != value.strip():
        return "'" + value.replace("'", "''") + "'"
    return value


# -- generate, sweep, plot: argparse parsers -----------------------------------------------------


def _argparse_cases(command: str, parser, base: dict[str, list[str]], paths: Paths,
                    path_values: dict[str, dict[str, str]]) -> Iterator[Case]:
    """One case per bad value of each of ``parser``'s arguments; ``base`` gives the other
    arguments a case needs (the valid rest of a command line), per argument or under "*"."""
    import argparse  # noqa: PLC0415

    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction, argparse._VersionAction)):
            continue
        name = action.dest
        flag = next((s for s in action.option_strings if s.startswith("--")), None)
        if name in path_values:
            values = path_values[name]
        elif action.choices is not None:
            values = dict(CHOICE_VALUES)
        elif action.type in (int,) or getattr(action.type, "__name__", "") in ("_integer",) or "int" in repr(action.type):
            values = dict(INT_VALUES)
        elif action.type is float or "_number" in repr(action.type):
            values = dict(FLOAT_VALUES)
        else:
            values = dict(STR_VALUES)
        rest = base.get(name, base["*"])
        for label, value in values.items():
            argv = [*rest, value] if flag is None else [*rest, f"{flag}={value}"]
            yield Case(command, name, label, tuple(argv))


def generate_run_config(corpus: Path) -> list[str]:
    """The config of the tiny byte-level run that generate's cases decode from."""
    root = Path(__file__).resolve().parents[2]
    return ["-c", str(root / "configs" / "bytes" / "attention.yaml"), f"--data.init_args.path={corpus}",
            "--data.init_args.seq_len=16", "--data.init_args.batch_size=4", "--model.init_args.stack.d_model=16",
            "--model.init_args.stack.n_layers=1", "--model.init_args.stack.mlp_expand=0"]


def generate_cases(paths: Paths, run_config: list[str]) -> Iterator[Case]:
    from hybrids.cli.generate import _parser  # noqa: PLC0415

    ok = [*run_config, "--ckpt_path", "last"]
    base = {"*": [*ok, "--prompt_tokens", "1,2,3"], "prompt": ok, "prompt_tokens": ok,
            "config": ["--ckpt_path", "last", "--prompt_tokens", "1,2,3"],
            "ckpt_path": [*run_config, "--prompt_tokens", "1,2,3"]}
    path_values = {"config": paths.input_files(), "ckpt_path": {**paths.input_files(), "not a checkpoint": str(paths.file)}}
    yield from _argparse_cases("generate", _parser(), base, paths, path_values)


def sweep_cases(paths: Paths, sweep_file: Path) -> Iterator[Case]:
    from hybrids.cli.sweep import build_parser  # noqa: PLC0415

    base = {"*": [str(sweep_file), "--dry-run"], "file": ["--dry-run"],
            "out": [str(sweep_file)]}
    path_values = {"file": {**paths.input_files(), "not a sweep": str(paths.file)}, "out": paths.output_folders()}
    yield from _argparse_cases("sweep", build_parser(), base, paths, path_values)


def plot_cases(paths: Paths, sweep_folder: Path) -> Iterator[Case]:
    from hybrids.cli.plot import _parser  # noqa: PLC0415

    base = {"*": [str(sweep_folder)], "sweep_dirs": []}
    path_values = {"sweep_dirs": paths.input_folders(), "out": paths.output_folders()}
    yield from _argparse_cases("plot", _parser(), base, paths, path_values)


# -- running a case ------------------------------------------------------------------------------


class Reached(Exception):
    """Raised in place of training or decoding: the command accepted its arguments."""


@dataclasses.dataclass
class Outcome:
    code: int | str  # the exit status, or "reached" / "raised"
    stderr: str
    error: BaseException | None = None

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def _stream(errors: str) -> io.TextIOWrapper:
    # As a terminal's: UTF-8, stderr escaping what it cannot encode (Python's own default), stdout strict.
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors=errors, write_through=True)


_PARSERS: dict[bool, tuple] = {}


def _cached_setup_parser(original):
    """HybridsCLI.setup_parser, built once per process: building LightningCLI's parsers (four
    subcommands, every Trainer argument) is most of a refused command's time, and a parser is not
    changed by parsing. Only this harness reuses it; the CLI builds its own each run."""
    def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs):
        if add_subcommands not in _PARSERS:
            original(self, add_subcommands, main_kwargs, subparser_kwargs)
            _PARSERS[add_subcommands] = (self.parser, getattr(self, "_subcommand_method_arguments", None),
                                         getattr(self, "_subcommand_parsers", None))
        self.parser, method_arguments, parsers = _PARSERS[add_subcommands]
        if add_subcommands:
            self._subcommand_method_arguments, self._subcommand_parsers = method_arguments, parsers
    return setup_parser


def run_case(case: Case, reuse_parser: bool = True) -> Outcome:
    """Run ``case`` in this process with training, decoding and sweeping replaced by
    :class:`Reached`; stdout and stderr captured as a terminal would take them."""
    import lightning as L  # noqa: PLC0415

    from hybrids.lab.sweeps import local  # noqa: PLC0415

    def reached(*args, **kwargs):
        raise Reached

    from hybrids.cli.fit import HybridsCLI  # noqa: PLC0415

    saved = (sys.argv, sys.stdout, sys.stderr, L.Trainer.fit, local.run_locally)
    setup_parser = HybridsCLI.setup_parser
    if reuse_parser:
        HybridsCLI.setup_parser = _cached_setup_parser(setup_parser)
    out, err = _stream("strict"), _stream("backslashreplace")
    sys.argv, sys.stdout, sys.stderr = ["hybrids", case.command], out, err
    L.Trainer.fit = reached
    error = None
    try:
        if case.command == "fit":
            from hybrids.cli.fit import build_cli  # noqa: PLC0415

            build_cli(["fit", *case.argv])
            code: int | str = "returned"
        elif case.command == "generate":
            from hybrids.cli import generate  # noqa: PLC0415

            stack_generate = generate._timed_generate
            generate._timed_generate = reached
            try:
                generate.generate_main(list(case.argv))
            finally:
                generate._timed_generate = stack_generate
            code = "returned"
        elif case.command == "sweep":
            from hybrids.cli import sweep  # noqa: PLC0415

            sweep.run_locally = reached
            try:
                code = sweep.sweep_main(list(case.argv))
            finally:
                sweep.run_locally = saved[4]
        else:
            from hybrids.cli.plot import plot_main  # noqa: PLC0415

            code = plot_main(list(case.argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except Reached:
        code = "reached"
    except BaseException as raised:  # noqa: BLE001 (a traceback: what the fuzz looks for)
        code, error = "raised", raised
    finally:
        sys.argv, sys.stdout, sys.stderr, L.Trainer.fit, local.run_locally = saved
        HybridsCLI.setup_parser = setup_parser
    err.seek(0)
    return Outcome(code, err.read(), error)
