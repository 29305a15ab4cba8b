"""bert_pretrain: the 80/10/10 masking statistics, whole-word masking, MLM loss, and fine-tuning after it."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from zoo.recipes.bert_pretrain import mask_tokens
from zoo.recipes.engine.run import train
from zoo.rundir import RunDir
from zoo.tokenizers import BertPreprocessor

FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(200)] + ["##s", "##ing"]


def _masked(batch_texts, length=64, **kw):
    pre = BertPreprocessor(VOCAB, sequence_length=length)
    x = pre(batch_texts)
    options = dict(vocab_size=len(VOCAB), mask_id=4, special_ids=[0, 1, 2, 3, 4], max_predictions=length)
    options.update(kw)
    out, labels, weights = mask_tokens(x, **options)
    return x, out, np.asarray(labels), np.asarray(weights)


def test_masking_follows_15_percent_and_80_10_10():
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(200)}" for _ in range(60)) for _ in range(400)]
    x, out, labels, weights = _masked(texts, rate=0.15)
    candidates = np.asarray(x["padding_mask"]).sum() - 2 * len(texts)
    chosen = weights.astype(bool)
    assert abs(chosen.sum() / candidates - 0.15) < 0.005
    pos = np.asarray(out["mask_positions"])
    new = np.take_along_axis(np.asarray(out["token_ids"]), pos, axis=1)[chosen]
    old = labels[chosen]
    assert np.array_equal(old, np.take_along_axis(np.asarray(x["token_ids"]), pos, axis=1)[chosen])
    n = len(old)
    frac_mask = np.mean(new == 4)
    frac_same = np.mean(new == old)
    frac_random = 1 - frac_mask - frac_same
    # n is about 3,600: three standard errors are about 0.02 for 80% and 0.015 for 10%.
    assert abs(frac_mask - 0.8) < 0.02 and abs(frac_random - 0.1) < 0.015 and abs(frac_same - 0.1) < 0.015, n
    # special tokens and padding are never chosen
    assert not np.isin(old, [0, 2, 3]).any()
    unchanged = np.asarray(out["token_ids"]) == np.asarray(x["token_ids"])
    assert unchanged.sum() >= unchanged.size - chosen.sum()


def test_whole_word_masking_keeps_words_together():
    pre = BertPreprocessor(VOCAB, sequence_length=24)
    ids = pre.tokenize(["w2s"]).to_list()[0]
    assert [VOCAB[i] for i in ids] == ["w2", "##s"]
    texts = ["w1 w2s w3ing w4 w5s w6 w7ing w8s"] * 200
    continuation = np.array([t.startswith("##") for t in VOCAB])
    x, out, labels, weights = _masked(texts, length=24, continuation=continuation, rate=0.3, max_predictions=8)
    token_ids = np.asarray(x["token_ids"])
    chosen_sets = []
    for row in range(len(texts)):
        pos = set(np.asarray(out["mask_positions"])[row][weights[row].astype(bool)].tolist())
        chosen_sets.append(pos)
        for p in pos:  # a chosen piece means its word start was chosen too
            if continuation[token_ids[row, p]]:
                assert p - 1 in pos
    assert np.mean([len(s) for s in chosen_sets]) > 2


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    rng = random.Random(0)
    animals = ["cat", "dog", "horse", "bird", "fish", "mouse", "lion", "tiger"]
    verbs = ["chased", "watched", "followed", "ignored", "liked", "saw"]
    places = ["in the garden", "near the river", "on the hill", "at the farm", "under the tree"]
    root = tmp_path_factory.mktemp("corpus")
    with open(root / "corpus.txt", "w") as fh:
        for _ in range(400):
            a, b = rng.sample(animals, 2)
            fh.write(f"the {a} {rng.choice(verbs)} the {b} {rng.choice(places)} .\n")
    return train("bert_pretrain", str(root / "run"),
                 {**FAST, "data.source": str(root / "corpus.txt"), "data.sequence_length": 16,
                  "data.vocab_size": 100, "train.epochs": 15}, verbose=0)


@pytest.mark.slow
def test_mlm_loss_falls_by_30_percent(pretrain_run):
    epochs = pretrain_run.metrics["epochs"]
    steps = pretrain_run.metrics["epochs_completed"] * 12  # 380 lines / batch 32
    assert steps <= 300
    assert epochs[-1]["loss"] <= 0.7 * epochs[0]["loss"]
    assert epochs[-1]["val_loss"] <= 0.7 * epochs[0]["val_loss"]
    assert epochs[-1]["masked_accuracy"] > 0.3
    with open(os.path.join(pretrain_run.run_dir, "run.json")) as fh:
        assert json.load(fh)["task"] == "masked_lm"


@pytest.mark.slow
def test_classifier_fine_tunes_from_a_pretraining_run(pretrain_run, tmp_path):
    path = tmp_path / "train.tsv"
    rng = random.Random(1)
    with open(path, "w") as fh:
        fh.write("text\tlabel\n")
        for i in range(120):
            animal = rng.choice(["cat", "dog"] if i % 2 else ["fish", "bird"])
            fh.write(f"the {animal} saw the horse\t{'mammal' if i % 2 else 'other'}\n")
    result = train("bert_classify", str(tmp_path / "run"),
                   {**FAST, "data.source": str(path), "init": pretrain_run.run_dir, "data.sequence_length": 16,
                    "train.epochs": 4, "train.batch_size": 16, "train.optimizer.learning_rate": 1e-3}, verbose=0)
    assert result.metrics["final"]["eval_accuracy"] >= 0.9
    with open(tmp_path / "run" / "vocab.txt") as fh, open(os.path.join(pretrain_run.run_dir, "vocab.txt")) as gh:
        assert fh.read() == gh.read()  # the pretraining vocabulary is kept


def test_mlm_loss_is_the_mean_over_masked_tokens():
    """Two rows, four prediction slots each, masking 1 and 3 tokens: the loss is the mean of those 4 tokens'
    cross-entropies, not the weighted sum over all 8 slots divided by 8."""
    from zoo.recipes import bert_pretrain
    from zoo.recipes.bert_pretrain import BertPretrainConfig

    loss = bert_pretrain.compile_args(BertPretrainConfig())["loss"]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 7)).astype("float32")
    labels = rng.integers(0, 7, size=(2, 4))
    weights = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], "float32")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    expected = (nll * weights).sum() / weights.sum()
    got = float(loss(labels, logits, sample_weight=weights))
    assert abs(got - expected) < 1e-5 and abs(got - (nll * weights).sum() / 8) > 0.1


@pytest.mark.slow
def test_eval_data_is_scored_once_and_validation_comes_from_training(tmp_path):
    rng = random.Random(1)
    words = ["cat", "dog", "bird", "ran", "sat", "the", "a", "on", "mat", "tree"]
    for name, n in (("train.txt", 120), ("eval.txt", 20)):
        (tmp_path / name).write_text("\n".join(" ".join(rng.choices(words, k=6)) for _ in range(n)) + "\n")
    result = train("bert_pretrain", str(tmp_path / "run"),
                   {**FAST, "data.source": str(tmp_path / "train.txt"), "data.eval_source": str(tmp_path / "eval.txt"),
                    "data.sequence_length": 12, "data.vocab_size": 60, "train.epochs": 2}, verbose=0)
    assert {"test_loss", "test_masked_accuracy"} <= set(result.metrics["final"])
    assert "val_loss" in result.metrics["epochs"][0]
    counts = RunDir(result.run_dir).info.data["counts"]
    assert counts == {"train_lines": 114, "validation_lines": 6, "eval_lines": 20}


PEAK_RSS = """
import json, resource, sys
from zoo.recipes.engine.run import train
result = train("bert_pretrain", sys.argv[2], {"data.source": sys.argv[1], "model.preset": "bert_tiny",
               "data.sequence_length": 16, "data.vocab_size": 200, "train.epochs": 1, "train.batch_size": 64,
               "train.schedule.warmup_epochs": 0.1,
               "train.tensorboard": False, "train.checkpoint_every_epoch": False}, verbose=0)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "counts": json.load(open(sys.argv[2] + "/run.json"))["data"]["counts"]}))
"""


@pytest.mark.slow
def test_one_huge_line_costs_no_more_memory_than_its_own_size(tmp_path):
    """A corpus with one 100,000-character line trains with the peak memory of the same corpus without it.
    Texts used to become a fixed-width NumPy str array (every line padded to the longest, 4 bytes a
    character): 3,001 lines x 100,000 characters = 1.2 GB for a 0.2 MB corpus; a real one (50,000 lines
    and one of 22,564 characters) peaked at 9.3 GB. Each run is a fresh process, so ru_maxrss is its own."""
    import subprocess
    import sys

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(3000)]
    huge = " ".join(rng.choice(words) for _ in range(30000))[:100_000]
    (tmp_path / "plain.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "huge.txt").write_text("\n".join(lines[:1500] + [huge] + lines[1500:]) + "\n", encoding="utf-8")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    peaks, counts = {}, {}
    for name in ("plain", "huge"):
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tmp_path / f"{name}.txt"), str(tmp_path / name)],
                              cwd=root, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        peaks[name], counts[name] = out["peak_kib"] / 1024, out["counts"]
    print("peak RSS, MiB:", {k: round(v) for k, v in peaks.items()})
    # The premise: the long line was read and trained on (one more line), and padding to it would cost
    # far more than the bound allows.
    assert sum(counts["huge"].values()) == sum(counts["plain"].values()) + 1, counts
    assert len(huge) == 100_000 and 3001 * len(huge) * 4 / 2**20 > 1000
    assert peaks["huge"] <= peaks["plain"] * 1.1 + 64, peaks  # MiB
