"""The README's question answering block, run as a user runs it (the rules: test_readme_commands.py).

Its training command made the session's QA run (the ``qa_run`` fixture: the README's command through
the CLI's ``main`` in this process) and its export command the version the QA export tests check
(``qa_export``: a fresh `zoo` process), so neither is made twice; this module checks what those printed,
runs `zoo answer` on the run in a fresh process, and checks that every line of the block ran here."""

from __future__ import annotations

import json
import os

import pytest

from tests.layout.readme import COVERED, in_qa_block, readme_commands, zoo, zoo_here

pytestmark = pytest.mark.slow


def test_qa_block(qa_run, qa_export):
    assert "eval_exact_match" in qa_run.output  # what `zoo train bert_qa` printed at the end
    work = qa_run.root
    context = "Ada Lovelace was born in London in 1815."
    out = zoo('zoo answer runs/<run> "Where was Ada born?" --context "Ada Lovelace was born in London in 1815."',
              ["answer", "runs/qa", "Where was Ada born?", "--context", context], work)
    lines = out.stdout.strip().splitlines()
    assert lines == ["London"], lines  # the span of the passage (the run answers held-out questions at EM >= 80)
    # A question longer than the whole sequence is cut (with a warning), not refused.
    long_question = "Where was Ada born, " + "and what else happened there in all those years, " * 12 + "?"
    out = zoo_here("zoo answer (a question longer than the sequence)", ["answer", "runs/qa", long_question,
                                                                        "--context", context, "--json"], work)
    COVERED.discard("zoo answer (a question longer than the sequence)")
    assert "truncated" in out and json.loads(out.stdout.strip().splitlines()[-1])["answer"] in context
    version_dir, _, out = qa_export
    assert "published exports/qa/1" in out and "same as keras" in out
    assert sorted(f for f in os.listdir(version_dir) if f.endswith(".tflite")) == [
        "model_float32.tflite", "model_int8_weights.tflite"]


def test_every_qa_block_command_is_run_here():
    """Runs last in this module: the README's question answering lines are the commands run above."""
    commands = [c for c in readme_commands() if in_qa_block(c)]
    assert len(commands) == 3, commands
    missing = [c for c in commands if c not in COVERED]
    assert not missing, "README commands without a smoke test:\n" + "\n".join(missing)
