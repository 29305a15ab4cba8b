"""Running the `zoo` command in this process, as `zoo.cli.main(argv)` from a working directory."""

from __future__ import annotations

import contextlib
import io
import os


def run_cli(args: list[str], cwd) -> tuple[int, str, str]:
    """``zoo ARGS`` run in ``cwd`` through the CLI's own ``main``: (exit code, stdout, stderr)."""
    from zoo.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(args)
    finally:
        os.chdir(here)
    return code, stdout.getvalue(), stderr.getvalue()
