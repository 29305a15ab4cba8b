"""Running the README's commands as a user runs them: the command lines read from the README, each
run in a fresh `zoo` process (:func:`zoo`) or through the CLI's ``main(argv)`` in this process
(:func:`zoo_here`), and the record of which lines ran (``COVERED``). Shared by the README test modules
(and the session fixture made by a README command); the rules are in test_readme_commands.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = [sys.executable, "-m", "zoo.cli"]
NOISE = ("oneDNN custom operations", "cuInit", "absl::InitializeLog", "cudart_stub", "Traceback")
# README command line -> run here (each is run by exactly one test below)
COVERED: set[str] = set()


def readme_commands() -> list[str]:
    """The command lines in the README's code blocks (`zoo ...` and `python -m zoo...`), comments dropped."""
    out = []
    for line in open(os.path.join(ROOT, "README.md"), encoding="utf-8"):
        # a code block at the top level (4 spaces) or inside a list item (6)
        m = re.match(r"^ {4}(?:  )?(?:\$ )?((?:zoo|python -m zoo[\w.]*) .*?)\s*(?:#.*)?$", line.rstrip("\n"))
        if m:
            out.append(re.sub(r"\s+", " ", m.group(1)))
    return out


class Output(str):
    """What a command printed (stdout then stderr), with ``.stdout`` on its own."""

    stdout = ""


def zoo(readme: str, args: list[str], cwd, *, ok: bool = True, python_m: str | None = None) -> Output:
    """Run one README command (``readme`` as printed there) as ``args`` in a fresh process."""
    COVERED.add(re.sub(r"\s+", " ", readme))
    cmd = [sys.executable, "-m", python_m, *args] if python_m else [*ZOO, *args]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{readme}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if not python_m:  # the zoo command hides TensorFlow's start-up noise and never shows a traceback
        found = [n for n in NOISE if n in proc.stderr]
        assert not found, f"{readme}: {found}\n{proc.stderr[-2000:]}"
    out = Output(proc.stdout + proc.stderr)
    out.stdout = proc.stdout
    return out


def zoo_here(readme: str, args: list[str], cwd, *, ok: bool = True) -> Output:
    """Run one README command (``readme`` as printed there) as ``zoo.cli.main(args)`` in this process, in
    ``cwd``: what it prints and logs (warnings and errors) come back as they would from the command."""
    import io
    import logging

    from tests.cli import run_cli

    COVERED.add(re.sub(r"\s+", " ", readme))
    logged = io.StringIO()  # what the command logs (warnings and errors), as its stderr would show it
    handler = logging.StreamHandler(logged)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        code, stdout, stderr = run_cli(args, cwd)
    finally:
        root.removeHandler(handler)
    stderr += logged.getvalue()
    assert (code == 0) is ok, f"{readme}: exit {code}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    out = Output(stdout + stderr)
    out.stdout = stdout
    return out


TINY = ["--quiet", "--set", "train.tensorboard=false"]


# The question answering block runs in its own module (test_readme_qa.py), in the process that holds the
# session's QA run: the block's training command *is* that run and its export command the QA export tests'
# version, so neither is made twice. Each module checks the README lines that are its own.
QA_BLOCK = ("zoo train bert_qa ", "zoo answer ", "zoo export runs/<run> --to exports --name qa ")


def in_qa_block(command: str) -> bool:
    return command.startswith(QA_BLOCK)
