"""Streamed labelled text and pairs (zoo.data.labelled): the scan, the split by content, segments of a sorted
file, and bert_classify / distill / translate trained on the stream (step-mode resume included)."""

from __future__ import annotations

import collections
import json
import os
import random

import numpy as np
import pytest

from tests.conftest import FAST
from tests.datasets import TRAIN_WORDS, write_sentiment
from zoo.data import labelled, stream
from zoo.data.text import BadRows
from zoo.errors import DataError
from zoo.recipes.text_data import TextDataConfig, read_splits


def _sorted_file(path, per_class=1500, seed=0):
    """A TSV sorted by label (every negative row, then every positive one), some rows with a tab-free
    comma and a quoted field; returns the rows."""
    rng = random.Random(seed)
    rows = []
    for label in ("negative", "positive"):
        for i in range(per_class):
            words = " ".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 12)))
            rows.append((f"{words}, row {label} {i}", label))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("text\tlabel\n")
        fh.writelines(f"{t}\t{lab}\n" for t, lab in rows)
    return rows


def _parts(rows, validation_split):
    buckets = stream.hash_buckets([labelled.example_key(t, None) for t, _ in rows])
    is_val = buckets < stream.validation_threshold(validation_split)
    return ([r for r, v in zip(rows, is_val) if not v], [r for r, v in zip(rows, is_val) if v])


def _decoded(ds, n=None):
    ds = ds.take(n) if n is not None else ds
    return [(t.decode(), int(y)) for t, _, y in ds.as_numpy_iterator()]


@pytest.mark.slow
def test_a_sorted_file_streams_each_row_once_per_epoch_with_labels_mixed(tmp_path, monkeypatch):
    path = tmp_path / "sorted.tsv"
    rows = _sorted_file(path)
    names = ["negative", "positive"]
    ids = [(t, names.index(lab)) for t, lab in rows]
    train_rows, val_rows = _parts(rows, 0.1)
    splits = read_splits(TextDataConfig(source=str(path), streaming=True, shuffle_buffer=64), seed=5)
    assert splits.streamed and splits.class_names == names
    assert splits.counts == {"train": len(train_rows), "validation": len(val_rows), "eval": len(val_rows)}
    source = splits.train_data
    assert len(source.segments) == labelled.MIN_SEGMENTS  # a 100 KB file is cut in 16
    # Every row exactly once across the segments, in file order, header excluded.
    assert _decoded(source.part("all")) == ids
    n = splits.counts["train"]
    epochs = _decoded(source.train(5, 64), 2 * n)
    first, second = epochs[:n], epochs[n:]
    expected = collections.Counter((t, names.index(lab)) for t, lab in train_rows)
    assert collections.Counter(first) == expected == collections.Counter(second)
    assert first != second
    assert _decoded(source.train(5, 64), 2 * n) == epochs  # a pure function of (seed, epoch)
    assert _decoded(source.train(6, 64), n) != first
    # The premise: the file is sorted, so one reader with a 64-row buffer would give one label per window.
    assert [y for _, y in ids[:1400]] == [0] * 1400
    windows = [np.mean([y for _, y in first[i:i + 64]]) for i in range(0, n - 64, 64)]
    assert min(windows) > 0.2 and max(windows) < 0.8, (min(windows), max(windows))
    # Two workers of a multi-worker job: each its own segments of the epoch, together every row once.
    keep = lambda *row: ~source._in_validation(*row)  # noqa: E731
    shares = [_decoded(stream.shuffled_epochs(source.segments, source._read, 5, 64, keep=keep, shard=(2, i),
                                              epochs=1)) for i in range(2)]
    assert collections.Counter(shares[0] + shares[1]) == expected and shares[0] and shares[1]
    monkeypatch.setattr(labelled, "MIN_SEGMENTS", 1)  # one sequential reader: windows of one label
    single = labelled.streamed_labelled(labelled.LabelledSource(str(path)), names, 0.1)
    assert len(single.segments) == 1
    one_reader = _decoded(single.train(5, 64), n)
    assert sum(np.mean([y for _, y in one_reader[i:i + 64]]) in (0.0, 1.0) for i in range(0, n - 64, 64)) > 30
    validation = _decoded(source.part("validation"))
    assert validation == [(t, names.index(lab)) for t, lab in val_rows] and not set(validation) & set(first)
    x, y = splits.eval_sample(5)
    assert x.tolist() == [t for t, _ in val_rows[:5]] and y.tolist() == [names.index(lab) for _, lab in val_rows[:5]]
    assert splits.calibration(3).tolist() == [t for t, _ in train_rows[:3]]
    assert set(splits.corpus()) <= {t for t, _ in train_rows} and len(splits.corpus()) == len(train_rows)


def test_bad_rows_pairs_and_labels_in_the_stream(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    good = [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "label": ["no", "yes"][i % 2]}
            for i in range(300)]
    lines = [json.dumps(r).encode() for r in good]
    lines.insert(100, b'{"premise": "broken", label}')  # line 101: not JSON
    lines.insert(200, b'{"premise": "caf\xe9", "hypothesis": "x", "label": "no"}')  # line 201: Latin-1
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    cfg = TextDataConfig(source=str(jsonl), text_column="premise", pair_column="hypothesis", streaming=True,
                         validation_split=0.2)
    with pytest.raises(DataError, match=r"pairs.jsonl:101: not valid JSON"):
        read_splits(cfg, seed=0)
    splits = read_splits(TextDataConfig(**{**vars(cfg), "on_error": "skip"}), seed=0)
    assert splits.bad_rows["skipped_rows"] == 2 and splits.pair
    assert [m.split(":")[1] for m in splits.bad_rows["first_skipped"]] == ["101", "201"]
    keys = [labelled.example_key(r["premise"], r["hypothesis"]) for r in good]
    n_val = int((stream.hash_buckets(keys) < stream.validation_threshold(0.2)).sum())
    assert splits.counts["validation"] == n_val and splits.counts["train"] == 300 - n_val
    rows = list(splits.train_data.part("all").as_numpy_iterator())
    assert [(t.decode(), p.decode(), int(y)) for t, p, y in rows] == [
        (r["premise"], r["hypothesis"], i % 2) for i, r in enumerate(good)]
    x, _ = splits.eval_sample(2)
    assert x.shape == (2, 2) and x[0, 1].startswith("hypothesis")
    # --eval-data with a label training never saw: named with its file and line.
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"dev.jsonl:1: label 'maybe' was not seen in training"):
        read_splits(TextDataConfig(**{**vars(cfg), "on_error": "skip", "eval_source": str(dev)}), seed=0)
    other = tmp_path / "other.tsv"
    other.write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="has no column 'sentence'"):
        labelled.scan_labelled(labelled.LabelledSource(str(other), "sentence"), 0.1, 10, 0, BadRows("skip"))


@pytest.mark.slow
def test_bert_classify_and_distill_train_on_the_stream_and_resume_mid_pass(tmp_path):
    """A streamed bert_classify run learns; in step mode, a crash after round 2 (mid-pass) resumes to the
    weights of the run never stopped (dropout on); distill streams its teacher's logits batch by batch and
    scores the teacher as the teacher's own run did."""
    import zoo
    from tests.recipes.test_resume import StopAfter
    from zoo.recipes.engine.run import train

    train_path = write_sentiment(tmp_path / "train.tsv", 400, TRAIN_WORDS, 0)
    dev_path = write_sentiment(tmp_path / "dev.tsv", 60, TRAIN_WORDS, 1)  # a vocabulary learned from the data
    cfg = {**FAST, "data.source": train_path, "data.eval_source": dev_path, "data.streaming": True,
           "data.shuffle_buffer": 64, "model.preset": "bert_tiny", "data.sequence_length": 16, "data.vocab_size": 120,
           "train.batch_size": 16, "train.optimizer.learning_rate": 1e-3, "train.steps": 48,
           "train.checkpoint_every_steps": 12, "train.schedule.warmup_steps": 3, "train.validation_steps": 2}
    whole = train("bert_classify", str(tmp_path / "whole"), cfg, verbose=0)
    with open(tmp_path / "whole" / "run.json") as fh:
        info = json.load(fh)["data"]
    assert info["streamed"] is True and info["counts"]["eval"] == 60
    losses = [e["loss"] for e in whole.metrics["epochs"]]
    assert losses[-1] < losses[0] and whole.metrics["final"]["eval_accuracy"] >= 0.8, whole.metrics["final"]

    killed_dir = str(tmp_path / "killed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train("bert_classify", killed_dir, cfg, verbose=0, extra_callbacks=[StopAfter(2)])
    resumed = train("bert_classify", killed_dir, cfg, verbose=0)
    # Resumed at round 3, after step 24: inside the second pass over the data (about 23 batches a pass).
    assert [r["epoch"] for r in resumed.metrics["resumes"]] == [3]
    a, b = zoo.load(os.path.join(killed_dir, "model.keras")), zoo.load(str(tmp_path / "whole" / "model.keras"))
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a.get_weights(), b.get_weights()))

    student = train("distill", str(tmp_path / "student"), {
        **FAST, "teacher": str(tmp_path / "whole"), "data.source": train_path, "data.eval_source": dev_path,
        "data.streaming": True, "train.epochs": 2}, verbose=0)
    final = student.metrics["final"]
    assert final["teacher_eval_accuracy"] == pytest.approx(whole.metrics["final"]["eval_accuracy"])
    assert final["eval_accuracy"] >= 0.7, final
    # Under multi_worker each worker streams its own part, the teacher's logits computed on that part.
    from zoo.recipes import get_recipe
    from zoo.recipes.engine.run import resolve_config

    recipe = get_recipe("distill")
    distill_cfg, explicit = resolve_config(recipe.config_class, {
        **FAST, "teacher": str(tmp_path / "whole"), "data.source": train_path, "data.streaming": True})
    _, data = recipe.prepare_data(distill_cfg, explicit)
    parts = [list(data.sharded_train((2, i), 4).take(3).as_numpy_iterator()) for i in range(2)]
    for part in parts:
        for x, y in part:
            assert y.shape == (4, 3)  # the label, then the teacher's two logits
            np.testing.assert_allclose(y[:, 1:], np.asarray(data.state.teacher(x, training=False)), atol=1e-5)
    rows = [{tuple(r) for x, _ in part for r in x["token_ids"].tolist()} for part in parts]
    assert rows[0] != rows[1]  # two parts (that they are disjoint and complete: test_workers_share_every_epoch...)


def test_pairs_scan_split_by_source_and_bad_lines(tmp_path):
    from tests.datasets import number_words

    path = tmp_path / "pairs.tsv"
    pairs = [(str(n), number_words(n)) for n in range(600)] + [("7", "seven again")]  # a repeated source
    lines = [f"{s}\t{t}" for s, t in pairs]
    lines.insert(300, "no tab on this line")  # line 301
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv:301: no tab"):
        labelled.scan_pairs(str(path), 0.1, 100, 0, BadRows(), keep_validation=5)
    bad = BadRows("skip")
    scan = labelled.scan_pairs(str(path), 0.1, 100, 0, bad, keep_validation=5)
    buckets = stream.hash_buckets([s for s, _ in pairs])
    is_val = buckets < stream.validation_threshold(0.1)
    val = [p for p, v in zip(pairs, is_val) if v]
    assert (scan.train, scan.validation) == (len(pairs) - len(val), len(val)) and bad.count == 1
    assert scan.first_validation == tuple(val[:5]) and len(scan.sample) == 100
    assert set(scan.sample) <= {p for p, v in zip(pairs, is_val) if not v}
    assert is_val[7] == is_val[-1]  # both "7" pairs on one side
    rows = labelled.streamed_pairs(str(path), 0.1)
    got = [(s.decode(), t.decode()) for s, t in rows.part("validation").as_numpy_iterator()]
    assert got == val


@pytest.mark.slow
def test_streamed_translate_trains_and_its_batches_resume_by_skipping(tmp_path):
    """A streamed translate run learns and decodes; its batches (tokenized in chunks, grouped by length)
    are a pure function of the seed, so skipping the batches done resumes the stream exactly."""
    from tests.conftest import TRANSLATE_FAST
    from tests.datasets import write_number_pairs
    from zoo.config import apply_overrides
    from zoo.recipes.engine.run import train
    from zoo.recipes.translate import TranslateConfig, prepare_data

    rng = random.Random(0)
    path = write_number_pairs(tmp_path / "pairs.tsv", [rng.randrange(1000) for _ in range(1500)])
    cfg = {**TRANSLATE_FAST, "data.source": path, "data.streaming": True, "data.shuffle_buffer": 128,
           "train.epochs": 4, "data.eval_max_pairs": 40, "data.bleu_every_epoch": False}
    _, data = prepare_data(apply_overrides(TranslateConfig(), cfg), frozenset(cfg))
    first = [x["decoder_token_ids"].numpy().tolist() for x, _, _ in data.train.take(12)]
    again = [x["decoder_token_ids"].numpy().tolist() for x, _, _ in data.train.take(12)]
    tail = [x["decoder_token_ids"].numpy().tolist() for x, _, _ in data.train.skip(5).take(7)]
    assert first == again and tail == first[5:]
    # Grouped by length: within a batch, source + target lengths differ by less than the bucket width (8).
    for x, _, _ in data.train.take(6):
        lengths = (x["encoder_padding_mask"].numpy().sum(1) + x["decoder_padding_mask"].numpy().sum(1)).tolist()
        assert max(lengths) - min(lengths) < 8, lengths
    result = train("translate", str(tmp_path / "run"), cfg, verbose=0)
    with open(tmp_path / "run" / "run.json") as fh:
        info = json.load(fh)["data"]
    assert info["streamed"] is True and info["counts"]["eval"] == 40 and info["truncated"] is None
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert losses[-1] < losses[0] / 2 and result.metrics["final"]["eval_exact_match"] >= 0.5, result.metrics["final"]
