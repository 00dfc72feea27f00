"""Checks of ``hybrids fit`` arguments that jsonargparse's types cannot make, each giving the CLI's
one keyed line (``error: <key>: ...``, exit 2) before anything is built or trained.

- :func:`text_problem`: command-line values that are not UTF-8 (bytes a shell passed through),
  and ``-c`` files that are not UTF-8 text. A config, a run's ``config.yaml`` and its identity are
  UTF-8 text; jsonargparse would fail on such a value with an encoder's traceback.
- :func:`value_problem`: numbers no setting can take (an integer beyond 64 bits), empty strings
  for the trainer's and the checkpoint's settings, and the trainer's ranges that Lightning checks
  only once training runs, or never (a zero ``check_val_every_n_epoch`` divides by zero at the
  first epoch; a negative clipping value is silently used).
For a class whose constructor refused its arguments without naming the one at fault (Lightning's
Trainer and ModelCheckpoint), the CLI uses :func:`hybrids.errors.argument_at_fault`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

INT64_MAX = 2**63 - 1
# Sections whose own settings (not those of the classes inside them: the logger's prefix is "" by
# default) are never meaningfully empty ("" for a folder, a file name, a metric, an algorithm) or
# infinite: leave the setting out (or null) for its default.
_NO_EMPTY_STRINGS = ("trainer.", "checkpoint.")
# Lightning's counts and their least valid values (-1 = no limit where Lightning allows it).
_LEAST = {
    "trainer.max_epochs": -1, "trainer.max_steps": -1, "trainer.num_sanity_val_steps": -1,
    "trainer.min_epochs": 0, "trainer.min_steps": 0,
    "trainer.check_val_every_n_epoch": 1, "trainer.accumulate_grad_batches": 1, "trainer.log_every_n_steps": 1,
}
_RANGE_WORDS = {-1: "an integer >= -1 (-1: no limit)", 0: "an integer >= 0", 1: "a positive integer"}


def _non_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _key_of(args: list[str], i: int) -> str:
    """The option a command-line item belongs to: ``--a.b=v`` -> ``a.b``; a value after ``--a.b``
    -> ``a.b``; ``-c`` -> ``config``."""
    item = args[i]
    if item.startswith("--"):
        return item[2:].partition("=")[0]
    if item.startswith("-c"):
        return "config"
    previous = args[i - 1] if i > 0 else ""
    if previous in ("-c", "--config"):
        return "config"
    if previous.startswith("--") and "=" not in previous:
        return previous[2:]
    return "argument"


def text_problem(args: list[str]) -> str | None:
    """A keyed line for the first command-line item that is not UTF-8, or ``-c`` file that is not
    UTF-8 text; None if there is none."""
    for i, item in enumerate(args):
        if _non_utf8(item):
            key = _key_of(args, i)
            shown = item.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            return (f"{key}: holds bytes that are not UTF-8 text ({shown}); configs and the run's records "
                    "are UTF-8, so values (paths included) must be too")
    for value in _config_paths(args):
        problem = _not_text(value)
        if problem:
            return f"config: {value}: {problem}" if value.strip() and "\n" not in value else f"config: {problem}"
    return None


def _config_paths(args: list[str]) -> Iterable[str]:
    for i, item in enumerate(args):
        if item in ("-c", "--config") and i + 1 < len(args):
            yield args[i + 1]
        elif item.startswith("--config="):
            yield item[len("--config="):]
        elif item.startswith("-c") and len(item) > 2 and not item.startswith("--"):
            yield item[3:] if item[2] == "=" else item[2:]


def _not_text(value: str) -> str | None:
    """What is wrong with a ``-c`` value, or None: it must be a UTF-8 YAML file holding a mapping
    of settings, or YAML text of such a mapping (``-c '{trainer: {max_steps: 5}}'``)."""
    if not value.strip():
        return "empty; give a config file (YAML)"
    path = Path(value)
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError):  # a YAML string too long or odd to be a path
        exists = is_file = False
    if exists and not is_file:
        return "a folder, not a config file"
    if is_file:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); a config is a YAML file"
        except OSError as err:
            return f"cannot read it ({err.strerror or err})"
    else:
        text = value
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "not valid YAML" if is_file else "no such file, and not valid YAML settings either"
        return f"{what}{where}: {getattr(err, 'problem', None) or err}"
    if is_file and settings is None:
        return "empty file: no settings in it"
    if not isinstance(settings, dict):
        if not is_file:
            return "no such file" if not text.lstrip().startswith(("{", "[")) else "YAML settings must be a mapping"
        return f"holds a YAML {type(settings).__name__}, not a mapping of settings (trainer:, model:, data:)"
    return None


def _leaves(value: Any, key: str) -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of every leaf under ``value``: mappings and namespaces by key, lists by
    index (``trainer.devices.0``)."""
    if hasattr(value, "items") and callable(value.items):
        for name, inner in value.items():
            yield from _leaves(inner, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from _leaves(inner, f"{key}.{index}")
    else:
        yield key, value


def value_problem(config: Mapping[str, Any]) -> str | None:
    """A keyed line for the first value of the parsed ``config`` (one subcommand's) that no
    setting can take, or None."""
    for key, value in _leaves(config, ""):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
            return f"{key}: {value} does not fit a 64-bit integer (no count, size or seed here is that large)"
        if isinstance(value, float) and math.isinf(value) and key.startswith(_NO_EMPTY_STRINGS) and key.count(".") == 1:
            return f"{key}: must be finite, got {value}"
        if value == "" and key.startswith(_NO_EMPTY_STRINGS) and key.count(".") == 1:
            return f"{key}: empty; leave it out (or null) for the default"
    trainer = config.get("trainer") or {}
    for key, least in _LEAST.items():
        value = trainer.get(key.partition(".")[2])
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            return f"{key}: must be {_RANGE_WORDS[least]}, got {value!r}"
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0):
        return f"trainer.gradient_clip_val: must be >= 0 (or null for no clipping), got {clip!r}"
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        return f"trainer.val_check_interval: must be positive (batches, or a fraction of the epoch), got {interval}"
    pause = config.get("pause_at_step")
    if pause is not None and (isinstance(pause, bool) or not isinstance(pause, int) or pause < 1):
        return f"pause_at_step: must be an optimiser step >= 1 (or null: no pause), got {pause!r}"
    return None


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
