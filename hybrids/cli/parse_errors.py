"""jsonargparse's parse errors as one keyed line with a suggestion.

A typo in a model, data or trainer key makes jsonargparse print the whole usage (some 70 lines)
and a nested report ("Does not validate against any of the Union subtypes ... Option 'd_modle' is
not accepted ..."). The CLI's promise is one line naming the key and what would be valid, as the
mixer and sweep keys already get. :func:`keyed_line` reads the report and says it in one line; a
report it does not recognise is left as it is (:class:`KeyedErrorParser` then prints it whole).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterable

from lightning.pytorch.cli import LightningArgumentParser

_SECTION = re.compile(r'Parser key "(?P<key>[^"]+)":')
_CLASS = re.compile(r"Problem with given class_path '(?P<path>[^']+)':\s*(?P<reason>.*)", re.S)
_NOT_ACCEPTED = re.compile(r"Option '(?P<name>[^']+)' is not accepted")
_INNER_KEY = re.compile(r'Parser key "(?P<name>[^"]+)":\s*Expected a <class \'(?P<type>\w+)\'>\. Got value: (?P<value>.*)')
_EXPECTED = re.compile(r"Expected a <class '(?P<type>\w+)'>")
_GIVEN = re.compile(r"Given value: (?P<value>.*)")
_NO_ATTRIBUTE = re.compile(r"module '(?P<module>[\w.]+)' has no attribute '(?P<name>\w+)'")
_UNRECOGNISED = re.compile(r"unrecognized arguments: (?P<args>.*)")
_NOT_ACCEPT_OPTION = re.compile(r"(?:Group '(?P<group>[^']+)' )?does not accept option '(?P<key>[^']+)'")
# A nested key's own report: its header, then the first line saying what is wrong.
_KEY_AND_WHY = re.compile(r'Parser key "(?P<name>[^"]+)":\s*\n\s*(?P<why>\S.*)')
# A class_path that is not an import path, or names a class of the wrong kind.
_BAD_CLASS_PATH = re.compile(r"- (?:Expected (?:a )?dot import path string: .*|"
                             r"Import path (?:\S+ )?(?P<kind>does not correspond to a subclass of \w+))")
# The first of a union report's errors that is not "Expected a <class 'NoneType'>".
_FIRST_ERROR = re.compile(r"^\s*- (?!Expected a <class 'NoneType'>|Does not validate)(?P<why>\S.*)$", re.M)
_GIVEN_CLASS_PATH = re.compile(r"NestedArg\(key='class_path', val='(?P<value>[^']*)'\)")
_TYPE_AND_VALUE = re.compile(r"Expected a <class '(?P<type>\w+)'>\. Got value: (?P<value>.*)")
# A message of the CLI's own checks ("trainer.devices: ..."), as opposed to a jsonargparse report.
_ALREADY_KEYED = re.compile(r"^[\w.*-]+: (?!\s*$)")
# A nested parser's report, already keyed by KeyedErrorParser (the key relative to init_args).
_KEYED = re.compile(r"^(?P<line>[\w.]+: \S.*)$")


def _suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the candidate closest to ``name``, compared whole and by
    its last component (``d_modle`` finds ``stack.d_model``)."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:
        by_last = {c.rpartition(".")[2]: c for c in candidates}
        close = [by_last[m] for m in difflib.get_close_matches(name.rpartition(".")[2], list(by_last), n=1, cutoff=0.6)]
    return f"; did you mean {close[0]!r}?" if close else ""


def _init_arguments(class_path: str) -> list[str]:
    """The argument names a class's constructor takes (through ``**kwargs`` to its bases), and
    ``arg.field`` for the fields of an argument typed as a dataclass (LanguageModel's ``stack``)."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 (unresolvable annotations: no nested names then)
            hints = {}
        for name, hint in hints.items():
            if dataclasses.is_dataclass(hint):
                names += [f"{name}.{f.name}" for f in dataclasses.fields(hint)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def _public_names(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    return [n for n in getattr(module, "__all__", dir(module)) if not n.startswith("_")]


def keyed_line(message: str, option_keys: Iterable[str] = ()) -> str | None:
    """``"<key>: <what is wrong>[; did you mean ...]"`` for a jsonargparse error report, or None
    for one it does not recognise. ``option_keys``: the parser's dotted keys, for suggestions."""
    option_keys = list(option_keys)
    if match := _UNRECOGNISED.search(message):
        first = match["args"].split()[0]
        key = first.lstrip("-").split("=", 1)[0]
        return f"{key}: unknown argument{_suggest(key, option_keys)}"
    if match := _NOT_ACCEPT_OPTION.search(message):
        key = f"{match['group']}.{match['key']}" if match["group"] else match["key"]
        return f"{key}: unknown argument{_suggest(key, option_keys)}"
    section = _SECTION.search(message)
    if section is None:
        return None
    key = section["key"]
    if klass := _CLASS.search(message):
        class_path, reason = klass["path"], klass["reason"]
        short = class_path.rpartition(".")[2]
        if match := _NOT_ACCEPTED.search(reason):
            name = match["name"]
            return (f"{key}.init_args.{name}: {short} takes no argument {name!r}"
                    f"{_suggest(name, _init_arguments(class_path))}")
        if match := _INNER_KEY.search(reason):
            return (f"{key}.init_args.{match['name']}: expected {match['type']}, got "
                    f"{match['value'].strip()!r}")
        if match := _NO_ATTRIBUTE.search(reason):
            module, name = match["module"], match["name"]
            close = _suggest(name, _public_names(module)).replace("'", "").replace("mean ", f"mean {module}.")
            return f"{key}.class_path: there is no class {module}.{name}{close}"
        first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
        if first.startswith("No module named"):
            return f"{key}.class_path: cannot import {class_path} ({first})"
        if match := _KEYED.match(first):
            return f"{key}.init_args.{match['line']}"
        if match := _KEY_AND_WHY.search(reason):
            return f"{key}.init_args.{match['name']}: {match['why'].strip()}"
        return f"{key}: {class_path}: {first}" if first else None
    if match := _BAD_CLASS_PATH.search(message):
        given = _GIVEN_CLASS_PATH.search(message) or _GIVEN.search(message)
        shown = repr(given["value"].strip()) if given else "the value"
        why = match["kind"] or "is not a dot import path (package.module.Class)"
        return f"{key}.class_path: {shown} {why}"
    # A plain value of the wrong type: the types tried, and the value given.
    types = [t for t in _EXPECTED.findall(message) if t != "NoneType"]
    given = _GIVEN.search(message)
    if types and given:
        allowed = " or ".join(dict.fromkeys(types)) + (" or null" if "NoneType" in _EXPECTED.findall(message) else "")
        return f"{key}: expected {allowed}, got {given['value'].strip()!r}"
    if match := _FIRST_ERROR.search(message):
        return f"{key}: {match['why'].strip()}"
    # A one-line report after the key ('Parser key "config": File does not exist: ...').
    rest = message[section.end():].strip()
    if rest and "\n" not in rest:
        if match := _TYPE_AND_VALUE.fullmatch(rest):
            return f"{key}: expected {match['type']}, got {match['value'].strip()!r}"
        return f"{key}: {rest}"
    return None


class KeyedErrorParser(LightningArgumentParser):
    """The CLI's parser: a parse error it can key is one line (``error: <key>: ...``), exit 2."""

    def error(self, message: str, ex: Exception | None = None):
        line = keyed_line(message, self._dotted_keys())
        if line is None and _ALREADY_KEYED.match(message):
            line = message  # the CLI's own checks: keyed already
        if line is None or not self.exit_on_error:
            return super().error(line or message, ex)
        sys.stderr.write(f"error: {line}\n")
        sys.exit(2)

    def _dotted_keys(self) -> list[str]:
        keys = []
        parsers = [self]
        subcommands = getattr(self, "_subcommands_action", None)
        if subcommands is not None:
            parsers += list(subcommands._name_parser_map.values())
        for parser in parsers:
            for action in parser._actions:
                keys += [s.lstrip("-") for s in action.option_strings if s.startswith("--")]
        return keys
