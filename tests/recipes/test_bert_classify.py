"""bert_classify: fine-tuning from the imported MiniLM, from scratch, pairs, and bad input."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from zoo.errors import DataError
from zoo.recipes.engine.run import train

FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}

@pytest.mark.slow
def test_fine_tuned_minilm_reaches_90_percent_on_unseen_words(minilm_run):
    final = minilm_run.metrics["final"]
    assert final["eval_accuracy"] >= 0.90
    assert final["eval_macro_f1"] >= 0.90
    with open(os.path.join(minilm_run.run_dir, "run.json")) as fh:
        info = json.load(fh)
    assert info["class_names"] == ["negative", "positive"] and info["input"]["dtype"] == "string"
    assert os.path.getsize(os.path.join(minilm_run.run_dir, "vocab.txt")) > 200_000  # the checkpoint's vocab


@pytest.mark.slow
def test_from_scratch_with_a_learned_vocabulary_and_pairs(tmp_path):
    rng = random.Random(3)
    words = ["red", "green", "blue", "cat", "dog", "fish", "tree", "house", "car", "road"]
    path = tmp_path / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(200):
            a = rng.choice(words)
            b = a if i % 2 else rng.choice([w for w in words if w != a])
            fh.write(json.dumps({"premise": f"the {a} is here", "hypothesis": f"a {b}", "label": i % 2}) + "\n")
    result = train("bert_classify", str(tmp_path / "run"),
                   {**FAST, "data.source": str(path), "data.text_column": "premise", "data.pair_column": "hypothesis",
                    "model.preset": "bert_tiny", "data.sequence_length": 16, "data.vocab_size": 60,
                    "train.epochs": 4, "train.batch_size": 16, "train.optimizer.learning_rate": 1e-3,
                    "data.validation_split": 0.2}, verbose=0)
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert losses[-1] < losses[0]
    with open(tmp_path / "run" / "run.json") as fh:
        info = json.load(fh)
    assert info["input"]["pair_name"] == "text_pair" and info["class_names"] == ["0", "1"]
    vocab = (tmp_path / "run" / "vocab.txt").read_text().split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "hypothesis" not in vocab

    # The saved pair model owns its preprocessor: pairs as (first, second) tuples, as a tuple of two
    # columns or as an [N, 2] array give the same logits, and it fine-tunes further on raw pairs.
    import zoo

    model = zoo.load(str(tmp_path / "run"))
    pairs = [("the cat is here", "a cat"), ("the dog is here", "a road"), ("the red is here", "a red")]
    as_tuples = model.predict(pairs, verbose=0)
    np.testing.assert_allclose(model.predict(tuple(zip(*pairs)), verbose=0), as_tuples, atol=1e-6)
    np.testing.assert_allclose(model.predict(np.asarray(pairs), verbose=0), as_tuples, atol=1e-6)
    assert as_tuples.shape == (3, 2)
    history = model.fit(pairs * 8, np.asarray([1, 0, 1] * 8), epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))


def test_bad_text_input_errors(tmp_path, sentiment_files):
    train_path, _ = sentiment_files
    raw = tmp_path / "latin1.tsv"
    raw.write_bytes(b"text\tlabel\ngood one\tpositive\nna\xefve\tnegative\n")
    with pytest.raises(DataError, match=r"latin1.tsv:3: not valid UTF-8"):
        train("bert_classify", str(tmp_path / "a"), {"data.source": str(raw)})
    unseen = tmp_path / "dev.tsv"
    unseen.write_text("text\tlabel\nfine\tpositive\nmeh\tneutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'neutral' was not seen in training"):
        train("bert_classify", str(tmp_path / "b"),
              {"data.source": train_path, "data.eval_source": str(unseen), "model.preset": "bert_tiny"})
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("sentence,label\nhi,1\nyo,0\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no column 'text'; its header has sentence, label"):
        train("bert_classify", str(tmp_path / "c"), {"data.source": str(nocol)})
    badjson = tmp_path / "bad.jsonl"
    badjson.write_text('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        train("bert_classify", str(tmp_path / "d"), {"data.source": str(badjson)})
    for name in "abcd":
        assert not os.path.exists(tmp_path / name / "model.keras")


@pytest.mark.slow
def test_the_saved_classifier_takes_raw_strings(minilm_run, sentiment_files):
    """zoo.load gives a model that owns its preprocessor (vocabulary, length, casing), as KerasHub's
    TextClassifier: predict and evaluate take raw strings and agree with the run's own tokenization."""
    import csv

    import zoo
    from zoo.recipes.text_data import predict_texts
    from zoo.rundir import RunDir

    _, dev_path = sentiment_files
    with open(dev_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    texts = [r["text"] for r in rows]
    labels = np.asarray([r["label"] == "positive" for r in rows], np.int32)
    model = zoo.load(minilm_run.run_dir)
    assert model.preprocessor.sequence_length == 32 and model.preprocessor.vocabulary_size > 30000
    logits = model.predict(texts, verbose=0)
    expected = predict_texts(model, np.asarray(texts, dtype=object), RunDir(minilm_run.run_dir).preprocessor())
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    accuracy = float((logits.argmax(-1) == labels).mean())
    assert accuracy == pytest.approx(minilm_run.metrics["final"]["eval_accuracy"], abs=1e-6) and accuracy >= 0.9
    assert model.predict("one string alone", verbose=0).shape == (1, 2)
    assert model.evaluate(texts, labels, verbose=0, return_dict=True)["accuracy"] == pytest.approx(accuracy)
    np.testing.assert_allclose(model.predict(model.preprocessor(texts[:4]), verbose=0), logits[:4], atol=1e-5)
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        model.evaluate(texts[:3], labels[:2])


def test_empty_and_very_long_texts_are_fine(minilm_run):
    from zoo.tokenizers import BertPreprocessor, load_vocabulary

    pre = BertPreprocessor(load_vocabulary(os.path.join(minilm_run.run_dir, "vocab.txt")), sequence_length=32)
    x = pre(["", "great " * 5000])
    assert np.asarray(x["padding_mask"]).sum(-1).tolist() == [2, 32]
    logits = np.asarray(minilm_run.model(x))
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("overrides", [
    {"train.strategy": "mirrored", "train.devices": ["cpu:0", "cpu:1"], "train.precision": "mixed_bfloat16"},
    {"train.precision": "mixed_float16", "train.jit_compile": True},
], ids=["mirrored-bf16", "fp16-xla"])
@pytest.mark.slow
def test_bert_trains_under_strategies_and_precisions(overrides, sentiment_files, tmp_path):
    import keras

    train_path, dev_path = sentiment_files
    result = train("bert_classify", str(tmp_path / "run"),
                   {**FAST, **overrides, "data.source": train_path, "data.eval_source": dev_path,
                    "model.preset": "bert_tiny", "model.num_layers": 1, "data.vocab_size": 200,
                    "data.sequence_length": 16, "train.epochs": 4, "train.optimizer.learning_rate": 1e-3}, verbose=0)
    assert result.model.output.dtype == "float32"
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.metrics["loss_scaling"] is (overrides["train.precision"] == "mixed_float16")
    assert keras.config.dtype_policy().name == "float32"
