"""argparse for ``generate``, ``sweep`` and ``plot``, keeping the CLI's promise: a bad value is one
line, ``error: <argument>: <what is wrong>``, and exit 2 (argparse's usage block and its
``argument --top_k:`` prefix would bury the key), and the value types that check ranges while
parsing, before anything is read or built."""

from __future__ import annotations

import argparse
import re
import sys

_ARGUMENT = re.compile(r"argument (?:-\w+/)?(?:--)?(?P<name>[\w-]+)(?:/[^:]*)?: (?P<why>.*)", re.S)


class KeyedArgumentParser(argparse.ArgumentParser):
    """argparse, with each error as the one keyed line (``error: <argument>: ...``), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        match = _ARGUMENT.match(message)
        if match:
            message = f"{match['name']}: {match['why']}"
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """A float (``nan`` and ``inf`` included: :func:`in_range` says which values a setting takes)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def text(what: str = "text", any_bytes: bool = False):
    """A non-empty string (an empty metric name, folder or address is always a slip) of UTF-8
    text, unless ``any_bytes`` (a folder to read, whose name may be any bytes): a value that is
    recorded in a run's files or sent over a network must be text."""
    def check(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"empty; give {what}")
        if not any_bytes:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                shown = value.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
                raise argparse.ArgumentTypeError(f"holds bytes that are not UTF-8 text ({shown}); give {what}") from None
        return value
    return check


def in_range(convert, valid: str, accept):
    """An argparse ``type`` that converts with ``convert`` and refuses a value ``accept`` rejects,
    saying what is ``valid``: the check runs while parsing, before any model is built."""
    def check(value: str):
        converted = convert(value)
        if not accept(converted):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {value!r}")
        return converted
    return check
