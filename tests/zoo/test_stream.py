"""Streamed corpora (zoo.data.stream): the one pass before training, the split by content, and the order."""

from __future__ import annotations

import collections
import os
import random

import numpy as np
import pytest

from zoo.data import stream
from zoo.errors import DataError


def _corpus(tmp_path, files=3, lines=400, seed=0):
    rng = random.Random(seed)
    paths, texts = [], []
    for f in range(files):
        body = [f"file {f} line {i} " + " ".join(f"w{rng.randrange(50)}" for _ in range(rng.randint(1, 9)))
                for i in range(lines)]
        texts += body
        path = tmp_path / f"part-{f}.txt"
        # CRLF endings, a BOM, and blank / whitespace-only lines that are not lines of the corpus
        path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(body[:5]).encode() + b"\r\n\r\n   \n\t\n"
                         + "\n".join(body[5:]).encode() + b"\n")
        paths.append(str(path))
    return paths, texts


def _split(texts, validation_split):
    import tensorflow as tf

    buckets = tf.strings.to_hash_bucket_fast(tf.constant(texts), stream.HASH_BUCKETS).numpy()
    is_val = buckets < stream.validation_threshold(validation_split)
    return [t for t, v in zip(texts, is_val) if not v], [t for t, v in zip(texts, is_val) if v]


def test_scan_counts_each_part_and_samples_the_training_part(tmp_path):
    paths, texts = _corpus(tmp_path)
    train, val = _split(texts, 0.1)
    scan = stream.scan_corpus(paths, 0.1, 100, seed=3)
    assert (scan.train_lines, scan.validation_lines) == (len(train), len(val)) and 60 < len(val) < 180
    assert len(scan.sample) == 100 and set(scan.sample) <= set(train)
    assert stream.scan_corpus(paths, 0.1, 100, seed=3).sample == scan.sample  # seeded
    assert stream.scan_corpus(paths, 0.1, 100, seed=4).sample != scan.sample
    assert stream.scan_corpus(paths, 0.1, 10_000, seed=3).sample == tuple(train)  # all of it when it fits


def test_bad_bytes_and_empty_corpora_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\nna\xefve\n")
    with pytest.raises(DataError, match=r"bad.txt:3: not valid UTF-8"):
        stream.scan_corpus([str(bad)], 0.1, 10, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="has no non-empty lines"):
        stream.scan_corpus([str(empty)], 0.1, 10, 0)
    with pytest.raises(DataError, match="does not exist"):
        stream.scan_corpus([str(tmp_path / "nowhere.txt")], 0.1, 10, 0)


def test_every_epoch_streams_each_training_line_once_in_a_fresh_seeded_order(tmp_path):
    paths, texts = _corpus(tmp_path)
    train, val = _split(texts, 0.1)
    n = len(train)
    lines = [t.decode() for t in stream.train_lines(paths, 0.1, seed=7, shuffle_buffer=64).take(2 * n)
             .as_numpy_iterator()]
    first, second = lines[:n], lines[n:]
    assert collections.Counter(first) == collections.Counter(train) == collections.Counter(second)
    assert first != second and first != train  # shuffled, and differently every epoch
    again = [t.decode() for t in stream.train_lines(paths, 0.1, seed=7, shuffle_buffer=64).take(2 * n)
             .as_numpy_iterator()]
    assert again == lines  # a pure function of (seed, epoch): what resuming by skipping batches relies on
    other = [t.decode() for t in stream.train_lines(paths, 0.1, seed=8, shuffle_buffer=64).take(n).as_numpy_iterator()]
    assert other != first
    got = [t.decode() for t in stream.validation_lines(paths, 0.1).as_numpy_iterator()]
    assert got == val and not set(got) & set(first)
    assert [t.decode() for t in stream.validation_lines(paths, 0.1, limit=5).as_numpy_iterator()] == val[:5]
    assert [t.decode() for t in stream.all_lines(paths).as_numpy_iterator()] == texts
    # A line that is not UTF-8 never reaches the stream (the scan refused it, or counted it to skip).
    (tmp_path / "bad.txt").write_bytes(b"good\nna\xefve\nalso good\n")
    assert [t.decode() for t in stream.all_lines([str(tmp_path / "bad.txt")]).as_numpy_iterator()] == [
        "good", "also good"]


@pytest.mark.slow
def test_streamed_pretraining_trains_and_counts_from_the_scan(tmp_path):
    from zoo.recipes.engine.run import train

    paths, texts = _corpus(tmp_path, files=2, lines=300)
    # One line that is not UTF-8, skipped by the scan and by the stream alike (data.on_error=skip).
    (tmp_path / "part-9.txt").write_bytes(b"ok line one\nna\xefve line\nok line two\n")
    texts = texts + ["ok line one", "ok line two"]
    result = train("bert_pretrain", str(tmp_path / "run"), {
        "data.source": str(tmp_path / "part-*.txt"), "data.streaming": True, "data.shuffle_buffer": 128,
        "data.on_error": "skip",
        "data.vocab_sample_lines": 200, "model.preset": "bert_tiny", "data.sequence_length": 16,
        "data.vocab_size": 120, "train.epochs": 3, "train.batch_size": 32, "train.optimizer.learning_rate": 2e-3,
        "train.tensorboard": False, "train.checkpoint_every_epoch": False, "data.validation_split": 0.1}, verbose=0)
    info = result.metrics
    train_part, val_part = _split(texts, 0.1)
    import json

    with open(tmp_path / "run" / "run.json") as fh:
        data = json.load(fh)["data"]
    assert data["streamed"] is True
    assert data["counts"] == {"train_lines": len(train_part), "validation_lines": len(val_part), "eval_lines": 0}
    assert data["skipped_rows"] == 1 and data["first_skipped"][0].endswith("re-encode the file as UTF-8")
    assert ":2: not valid UTF-8" in data["first_skipped"][0]
    losses = [e["loss"] for e in info["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0] and all(np.isfinite(e["val_loss"]) for e in info["epochs"])
    with pytest.raises(DataError, match="fell in the validation part"):
        one = tmp_path / "one.txt"
        one.write_text("just one line\n")
        train("bert_pretrain", str(tmp_path / "run2"), {"data.source": str(one), "data.streaming": True,
                                                       "data.validation_split": 0.01, "model.preset": "bert_tiny"})


def test_a_large_corpus_is_sampled_not_scanned_from_whole_lines_of_every_part(tmp_path):
    """sample_corpus (step mode): a corpus over the sample size is read only in seeded byte ranges spread over
    its files; the sample holds whole lines of the training part only, from every file; the counts are
    estimates near the truth; a corpus within the size is scanned exactly as before."""
    paths, texts = _corpus(tmp_path, files=3, lines=2000)
    train, val = _split(texts, 0.1)
    total = sum(os.path.getsize(p) for p in paths)
    scan = stream.sample_corpus(paths, 0.1, 10_000, seed=3, sample_bytes=total // 8, blocks=6)
    assert not scan.counted and scan.bytes == total
    assert scan.sample and set(scan.sample) <= set(train)  # whole lines (never a cut one), training part only
    assert len(scan.sample) < len(train) / 4  # an eighth of the bytes read, not the whole corpus
    assert {line.split()[1] for line in scan.sample} == {"0", "1", "2"}  # every file has a part in it
    assert abs(scan.train_lines - len(train)) < 0.2 * len(train) and scan.validation_lines > 0
    assert stream.sample_corpus(paths, 0.1, 10_000, seed=3, sample_bytes=total // 8, blocks=6) == scan  # seeded
    assert stream.sample_corpus(paths, 0.1, 100, seed=3, sample_bytes=total) == stream.scan_corpus(paths, 0.1, 100, 3)
    # A sampled line that is not UTF-8 names its file and byte offset (the line number is unknown unread).
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("".join(f"caf\xe9 number {i}\n" for i in range(3000)).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: the line at byte \d+: not valid UTF-8 .*data.on_error=skip"):
        stream.sample_corpus([str(bad)], 0.1, 100, seed=3, sample_bytes=8192)


def test_the_pipeline_names_the_file_and_line_of_a_bad_line_it_meets(tmp_path):
    """check="raise": the stream stops at a line that is not UTF-8 with an error bad_line_error turns into
    file:line; "skip" leaves it out; the lines before it come out as without a check."""
    import tensorflow as tf

    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good one\n\nna\xefve\nalso good\n")
    got = []
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for line in stream.all_lines([str(path)], check="raise").as_numpy_iterator():
            got.append(line.decode())
    assert got == ["good one"]
    assert stream.bad_line_error(caught.value) == (
        f"{path}:3: not valid UTF-8; re-encode the file as UTF-8, or run the same command with --set "
        "data.on_error=skip to leave such lines out (an unfinished run resumes from its newest checkpoint)")
    assert [t.decode() for t in stream.all_lines([str(path)], check="skip").as_numpy_iterator()] == [
        "good one", "also good"]
    assert stream.bad_line_error(ValueError("something else")) is None


@pytest.mark.slow
def test_step_mode_starts_without_a_scan_stops_at_a_bad_line_and_resumes_skipping_it(tmp_path, monkeypatch):
    """A streamed corpus over stream.SAMPLE_BYTES in step mode: no pass before training (the vocabulary from
    the sample), a line that is not UTF-8 deep in a file stops the run mid-way with file:line, and the same
    command with data.on_error=skip resumes from the newest step checkpoint and finishes."""
    import json

    from zoo.recipes.engine.run import train
    from zoo.rundir import RunDir

    paths, _ = _corpus(tmp_path, files=2, lines=300)
    with open(paths[1], "ab") as fh:  # after ~600 good lines, ~70 steps: met after the first checkpoint
        fh.write(b"na\xefve line\n" + b"".join(f"tail line {i} w1 w2\n".encode() for i in range(50)))
    monkeypatch.setattr(stream, "SAMPLE_BYTES", 4096)  # one range of 4 KB, which misses the bad line
    scans = []
    monkeypatch.setattr(stream, "scan_corpus", lambda *a, **k: scans.append(a) or pytest.fail("a full scan"))
    settings = {"data.source": str(tmp_path / "part-*.txt"), "data.streaming": True, "data.shuffle_buffer": 16,
                "data.vocab_size": 120, "model.preset": "bert_tiny", "data.sequence_length": 16,
                "train.steps": 120, "train.checkpoint_every_steps": 40, "train.batch_size": 8,
                "train.schedule.warmup_steps": 2, "train.validation_steps": 2, "train.tensorboard": False,
                "data.validation_split": 0.1}
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(DataError, match=r"part-1.txt:\d+: not valid UTF-8; .*--set data.on_error=skip"):
        train("bert_pretrain", run.path, settings, verbose=0)
    assert run.backup_states() and not run.is_finished  # stopped mid-run, after a step checkpoint
    with open(os.path.join(run.path, "run.json")) as fh:
        data = json.load(fh)["data"]
    assert data["sampled"] == {"bytes_read": 4096, "corpus_bytes": sum(os.path.getsize(p) for p in paths)}
    assert set(data["counts"]) == {"estimated_train_lines", "estimated_validation_lines", "eval_lines"}
    result = train("bert_pretrain", run.path, {**settings, "data.on_error": "skip"}, verbose=0)
    assert result.metrics["steps_completed"] == 120 and len(result.metrics["resumes"]) == 1
    assert result.metrics["resumes"][0]["epoch"] >= 1 and not scans


@pytest.mark.parametrize("n_files", [4, 1], ids=["FILE", "DATA"])
def test_workers_share_every_epoch_each_line_exactly_once(tmp_path, n_files, caplog):
    """shard=(n, i): the n input pipelines (workers) of a multi-worker job split each epoch, disjoint and
    complete: by files when each gets one (AutoShardPolicy FILE), else every n-th line (DATA)."""
    import logging

    paths, texts = _corpus(tmp_path, files=n_files, lines=150)
    train, _ = _split(texts, 0.1)
    parts = {}
    with caplog.at_level(logging.INFO, logger="zoo"):
        for index in range(3):
            keep = lambda line: ~stream._in_validation(line, stream.validation_threshold(0.1))  # noqa: E731
            one = stream.shuffled_epochs(paths, "text", 7, 32, shard=(3, index), epochs=1, keep=keep)
            parts[index] = [t.decode() for t in one.as_numpy_iterator()]
            endless = stream.train_lines(paths, 0.1, seed=7, shuffle_buffer=32, shard=(3, index))
            assert [t.decode() for t in endless.take(20).as_numpy_iterator()] == parts[index][:20]
    policy = "FILE" if n_files >= 3 else "DATA"
    assert sum(f"AutoShardPolicy {policy}" in r.getMessage() for r in caplog.records) >= 3
    # One epoch: every line of the training part exactly once over the three workers.
    assert collections.Counter(t for part in parts.values() for t in part) == collections.Counter(train)
    assert all(parts.values())
