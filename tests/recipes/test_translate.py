"""The translate recipe, the Translator, `zoo translate`, and the string-to-string SavedModel."""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pytest

from tests.conftest import TRANSLATE_FAST
from tests.datasets import number_words
from zoo.errors import ConfigError, DataError, ExportError


@pytest.mark.slow
def test_recipe_learns_held_out_numbers(translate_run):
    final = translate_run.metrics["final"]
    assert final["eval_exact_match"] >= 0.90, final
    assert final["eval_bleu"] >= 80.0, final
    epochs = translate_run.metrics["epochs"]
    # BLEU and exact match are logged after every epoch and land in metrics.json.
    with open(os.path.join(translate_run.run_dir, "metrics.json")) as fh:
        on_disk = json.load(fh)["epochs"]
    assert all("val_bleu" in e and "val_exact_match" in e for e in on_disk)
    assert epochs[-1]["val_bleu"] > epochs[0]["val_bleu"] + 50
    assert epochs[-1]["loss"] < 0.5 * epochs[0]["loss"]
    info = json.load(open(os.path.join(translate_run.run_dir, "run.json")))
    assert info["task"] == "translation" and info["preprocessor"]["target_vocabulary_file"] == "vocab.txt"


@pytest.mark.slow
def test_translator_greedy_and_beam(translate_run, number_files):
    from zoo.metrics import exact_match
    from zoo.translator import Translator

    _, dev = number_files
    pairs = [line.rstrip("\n").split("\t") for line in open(dev, encoding="utf-8")]
    sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    greedy = Translator.from_run(translate_run.run_dir)
    beam = Translator.from_run(translate_run.run_dir, method="beam", beam_width=4)
    out_greedy, out_beam = greedy(sources), beam(sources)
    assert exact_match(out_greedy, targets) == pytest.approx(translate_run.metrics["final"]["eval_exact_match"])
    assert exact_match(out_beam, targets) >= 0.90
    # A single string in, a single string out, the same as in a batch (a held-out number it gets right).
    right = next(i for i, (o, t) in enumerate(zip(out_greedy, targets)) if o == t)
    assert greedy(sources[right]) == targets[right]
    with pytest.raises(DataError, match="empty source"):
        greedy(["  "])
    with pytest.raises(ConfigError, match="unknown decoding option"):
        Translator.from_run(translate_run.run_dir, beam=4)


@pytest.mark.slow
def test_xla_decoding_is_the_default_where_faster_and_agrees_with_the_plain_graph(translate_run, number_files,
                                                                                  caplog, monkeypatch):
    import tensorflow as tf

    import zoo.translator as translator_module
    from zoo.translator import Translator

    _, dev = number_files
    sources = [line.split("\t")[0] for line in open(dev, encoding="utf-8")][:40]
    for method, xla in (("greedy", True), ("beam", True), ("top_k", False), ("top_p", False)):
        assert Translator.from_run(translate_run.run_dir, method=method).jit_compile is xla, method
    for method in ("greedy", "beam"):
        xla = Translator.from_run(translate_run.run_dir, method=method)
        plain = Translator.from_run(translate_run.run_dir, method=method, jit_compile=False)
        # Sources of different widths share the power-of-two padded shape; padding changes nothing.
        assert xla(sources) == plain(sources), method
        assert xla(sources[:3]) == plain(sources[:3]) == xla(sources)[:3]
    # An error while running the graph (here a failed check on the input) is not XLA's: it is raised
    # and XLA stays on for the next batch.
    checked = Translator.from_run(translate_run.run_dir)
    greedy_plain = Translator.from_run(translate_run.run_dir, jit_compile=False)
    assert checked(sources[:3]) == greedy_plain(sources[:3])
    tokenize = checked.source_tokenizer.tokenize

    def at_most_four(texts):
        with tf.control_dependencies([tf.debugging.assert_less(tf.size(texts), 5, message="at most four")]):
            return tokenize(tf.identity(texts))

    checked.source_tokenizer.tokenize = at_most_four
    checked._fn = None  # retrace with the check
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most four"):
        checked(sources[:6])
    assert checked.jit_compile and checked(sources[:4]) == greedy_plain(sources[:4])
    # An op XLA cannot compile in the loop: one log line, then the plain graph, same translations.
    real_generate = translator_module.generate

    def with_host_op(model, ids, *args):
        ids = tf.numpy_function(lambda a: a, [ids], tf.int32, stateful=False)
        ids.set_shape([None, None])
        return real_generate(model, ids, *args)

    expected = greedy_plain(sources[:5])
    monkeypatch.setattr(translator_module, "generate", with_host_op)
    falling = Translator.from_run(translate_run.run_dir)
    with caplog.at_level(logging.INFO, logger="zoo.translator"):
        assert falling(sources[:5]) == expected
    assert not falling.jit_compile
    assert any("XLA could not compile the decoding loop" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_long_source_is_truncated_with_one_warning(translate_run, caplog):
    from zoo.translator import Translator

    translator = Translator.from_run(translate_run.run_dir)
    with caplog.at_level(logging.WARNING):
        out = translator(["123 " * 40, "456 " * 40])
        translator(["789 " * 40])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    warnings = [r for r in caplog.records if "longer than max_source_length" in r.getMessage()]
    assert len(warnings) == 1 and "2 source text(s)" in warnings[0].getMessage()


@pytest.mark.slow
def test_cli_translate(translate_run, capsys, monkeypatch):
    from zoo.cli import main

    assert main(["translate", translate_run.run_dir, "42", "300", "--beam", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [number_words(42), number_words(300)]
    assert main(["translate", translate_run.run_dir, "42", "--method", "top_k", "--top-k", "0"]) == 2
    assert "top_k" in capsys.readouterr().err
    # Standard input: one output line per input line; an empty line stays an empty line.
    monkeypatch.setattr("sys.stdin", io.StringIO("42\n\n300\n"))
    assert main(["translate", translate_run.run_dir]) == 0
    assert capsys.readouterr().out.split("\n") == [number_words(42), "", number_words(300), ""]


@pytest.mark.slow
def test_saved_model_translates_raw_strings_like_keras(translate_run, translate_export, tmp_path):
    import shutil

    import tensorflow as tf

    from zoo.export import exporter
    from zoo.translator import Translator

    version_dir, report = translate_export  # exported once per session (conftest), also served elsewhere
    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert list(kwargs) == ["text"] and kwargs["text"].dtype == tf.string
    assert set(fn.structured_outputs) == {"translation"}
    sources = [str(s) for s in np.load(os.path.join(translate_run.run_dir, "eval_sample.npz"))["x"]]
    exported = [s.decode() for s in fn(text=tf.constant(sources))["translation"].numpy()]
    assert exported == Translator.from_run(translate_run.run_dir)(sources)  # identical to Keras greedy
    # Blank sources give empty translations, as `zoo translate` prints an empty line for an empty one.
    blank = [s.decode() for s in fn(text=tf.constant(["", "   ", sources[0]]))["translation"].numpy()]
    assert blank == ["", "", exported[0]]
    r = report["formats"]["saved_model"]
    assert r["agreement"] == 1.0 and r["exact_match"] >= 0.9 and report["decode"]["method"] == "greedy"
    # beam width as an export option, published next to the greedy version; TFLite formats are refused for
    # the decoding loop
    shutil.copytree(version_dir, tmp_path / "numbers" / "1")
    _, beam_report = exporter.export_run(translate_run.run_dir, str(tmp_path), "numbers", "saved_model",
                                         latency_runs=2, decode={"method": "beam", "beam_width": 3})
    assert beam_report["version"] == 2 and beam_report["decode"]["beam_width"] == 3
    assert beam_report["formats"]["saved_model"]["agreement"] == 1.0
    with pytest.raises(ExportError, match="saved_model only"):
        exporter.export_run(translate_run.run_dir, str(tmp_path), "numbers", "saved_model,tflite")
    assert sorted(os.listdir(tmp_path / "numbers")) == ["1", "2"]


@pytest.mark.slow
# One run covers the recipe's three concerns: two replicas, loss scaling, separate vocabularies (it was two
# runs, the other mirrored under mixed_bfloat16; bfloat16 on the seq2seq model is test_model_families'
# test_precision[seq2seq-mixed_bfloat16]).
@pytest.mark.parametrize("strategy,precision,shared", [("mirrored", "mixed_float16", False)])
def test_trains_under_strategies_and_precisions(number_files, tmp_path, strategy, precision, shared):
    from zoo.recipes.engine.run import train
    from zoo.translator import Translator

    _, dev_path = number_files
    # The 150 held-out pairs as training data: 30 steps show the loss falling under each setup. Their
    # validation split (15 pairs) is one batch that two replicas split 8/7, which Keras' build step
    # could not reduce until zoo.keras_compat.per_replica_build.
    result = train("translate", str(tmp_path / "run"),
                   {**TRANSLATE_FAST, "data.source": dev_path, "data.eval_source": dev_path, "train.epochs": 3,
                    "train.strategy": strategy, "train.precision": precision, "data.eval_sample_size": 32,
                    "data.shared_vocabulary": shared}, verbose=0)
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(e["val_loss"]) for e in result.metrics["epochs"])
    assert result.metrics["replicas"] == (2 if strategy == "mirrored" else 1)
    assert result.metrics["loss_scaling"] is (precision == "mixed_float16")
    assert 0.0 <= result.metrics["final"]["eval_bleu"] <= 100.0
    # separate vocabularies: two files, a target embedding of its own, and the run still loads
    assert os.path.exists(os.path.join(result.run_dir, "target_vocab.txt")) is not shared
    assert result.model.config.shared_vocabulary is shared
    assert isinstance(Translator.from_run(result.run_dir)("12"), str)


def test_bad_pair_files(tmp_path):
    from zoo.recipes.engine.run import train

    no_tab = tmp_path / "no_tab.tsv"
    no_tab.write_text("one\t1\ntwo 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no_tab.tsv:2: no tab"):
        train("translate", str(tmp_path / "r1"), {**TRANSLATE_FAST, "data.source": str(no_tab)})
    empty = tmp_path / "empty_source.tsv"
    empty.write_text("one\t1\n\t2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty_source.tsv:2: empty source"):
        train("translate", str(tmp_path / "r2"), {**TRANSLATE_FAST, "data.source": str(empty)})
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("one\t1\ncaf\xe9\t2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.tsv:2: not valid UTF-8"):
        train("translate", str(tmp_path / "r3"), {**TRANSLATE_FAST, "data.source": str(latin1)})
    with pytest.raises(ConfigError, match="method"):
        train("translate", str(tmp_path / "r4"), {**TRANSLATE_FAST, "data.source": str(no_tab),
                                                 "decode.method": "sampling"})
    with pytest.raises(ConfigError, match="not a seq2seq preset"):
        train("translate", str(tmp_path / "r5"), {**TRANSLATE_FAST, "data.source": str(no_tab),
                                                 "model.preset": "bert_tiny"})
    assert not any(os.path.exists(tmp_path / f"r{i}" / "model.keras") for i in range(1, 6))


def test_length_bucketed_batches_keep_padding_small():
    from zoo.data.order import length_bucketed_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, 1000)
    order = length_bucketed_batches(lengths, batch=20, epochs=2, seed=3, window=10)
    assert order.shape == (2 * 50, 20)
    for epoch in range(2):
        seen = order[epoch * 50:(epoch + 1) * 50].ravel()
        assert len(np.unique(seen)) == 1000  # every example once per epoch
    padded = (lengths[order].max(1, keepdims=True) - lengths[order]).sum()
    random_order = rng.permutation(1000).reshape(50, 20)
    padded_random = (lengths[random_order].max(1, keepdims=True) - lengths[random_order]).sum()
    assert padded / 2 < 0.2 * padded_random  # per epoch, far less padding than random batches
    np.testing.assert_array_equal(order, length_bucketed_batches(lengths, 20, 2, 3, 10))  # seeded
    assert not np.array_equal(order[:50], order[50:])  # each epoch differs


def test_bleu_and_exact_match():
    from zoo.metrics import corpus_bleu, exact_match

    refs = ["the cat sat on the mat .", "there is a dog in the garden"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    # One hypothesis drops the final "." (brevity penalty and fewer matching n-grams): between 0 and 100.
    assert 0 < corpus_bleu(["the cat sat on the mat", "there is a dog in the garden"], refs) < 100
    assert exact_match(["The cat, sat.", "x"], ["The cat , sat .", "y"]) == 0.5
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu(["a"], ["a", "b"])
