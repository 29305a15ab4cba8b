"""The zoo's error hierarchy: every failure a user can cause raises one of these.

Messages say what was wrong, what was expected and how to fix it. The CLI prints
them without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """Base class of every error the zoo raises on purpose."""


class UnknownNameError(ZooError, KeyError):
    """A model, recipe, strategy, optimizer ... name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(ZooError, ValueError):
    """A config field or override with a bad name, type or value."""


class DataError(ZooError, ValueError):
    """Input data that is missing, malformed or inconsistent with the model."""


class ExportError(ZooError, RuntimeError):
    """An export that cannot be done (missing model, version collision, failed parity)."""


class DeviceError(ZooError, RuntimeError):
    """A distribution strategy or device that is not available on this machine."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard error for an unknown ``kind`` called ``name``."""
    choices = sorted(choices)
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)} "
        f"(known: {', '.join(choices)})"
    )


def format_error(exc: BaseException, debug: bool = False) -> str:
    """The one-line ``error: ...`` a command prints; with ``debug`` the full traceback and its causes."""
    if not debug:
        return f"error: {exc}"
    import traceback

    return "".join(traceback.format_exception(exc)).rstrip() + f"\nerror: {exc}"


def report_failure(exc: BaseException, debug: bool = False, interrupted: str = "interrupted") -> int:
    """Print the one line a command ends with for a failure a user can cause (a ZooError, an OSError on
    a path, Ctrl-C) and return the exit code: 2, 1 and 130."""
    import sys

    if isinstance(exc, KeyboardInterrupt):
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    print(format_error(exc, debug), file=sys.stderr)
    return 2 if isinstance(exc, ZooError) else 1
