"""Prepared datasets (zoo.data.prepared): packing, the manifest, atomic writes, and training on the result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.cli import run_cli
from tests.waits import wait_until
from zoo.data.prepared import Packer, unpack

CLS, SEP = 2, 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pack(events, length):
    packer = Packer(length, CLS, SEP)
    out = []
    for e in events:
        if e is None:
            packer.end_document()
        else:
            out += packer.add(e)
    return out + packer.finish()


def test_packing_keeps_every_token_in_order_and_fills_sequences():
    rng = random.Random(0)
    events, tokens = [], []
    for _ in range(400):
        if rng.random() < 0.1:
            events.append(None)  # a blank line: a document ends
            continue
        n = rng.choice([0, 1, 3, 5, 8, 13, 14, 40])  # 14 fills a sequence exactly; 40 needs three
        line = [rng.randrange(10, 99) for _ in range(n)]
        events.append(line)
        tokens += line
    seqs = _pack(events, 16)
    assert unpack(seqs, CLS, SEP) == tokens
    assert all(s[0] == CLS and s[-1] == SEP and 3 <= len(s) <= 16 for s in seqs)
    # Packed, fewer sequences carry the same tokens: on short lines they are nearly full.
    lines = [[rng.randrange(10, 99) for _ in range(rng.randint(1, 5))] for _ in range(300)]
    short = _pack(lines, 16)
    assert unpack(short, CLS, SEP) == [t for line in lines for t in line]
    filled = sum(map(len, short)) / (16 * len(short))
    one_per_line = sum(len(line) + 2 for line in lines) / (16 * len(lines))
    assert filled > 0.85 and one_per_line < 0.4 and len(short) < len(lines) / 3, (filled, one_per_line)
    # A line that fits is never split across sequences; a document inside a sequence ends with one [SEP].
    assert _pack([[11, 12], [13], None, [14, 15]], 16) == [[CLS, 11, 12, 13, SEP, 14, 15, SEP]]
    assert _pack([[11] * 10, [12] * 5], 16) == [[CLS] + [11] * 10 + [SEP], [CLS] + [12] * 5 + [SEP]]
    # A line longer than a sequence is cut into full pieces; its rest starts the next sequence.
    assert _pack([[11] * 30, [12]], 8) == [[CLS] + [11] * 6 + [SEP]] * 5 + [[CLS, 12, SEP]]
    # No [SEP] for a boundary at a sequence's start, and none for blank lines with nothing before them.
    assert _pack([None, None, [11], None, None, [12] * 13], 16) == [[CLS, 11, SEP], [CLS] + [12] * 13 + [SEP]]
    assert _pack([None], 16) == [] and _pack([[]], 16) == []


def _corpus(root, files=2, docs=12, seed=0):
    rng = random.Random(seed)
    words = ["the", "film", "was", "good", "bad", "long", "and", "a", "story", "of", "city", "river", "old"]
    paths = []
    for f in range(files):
        lines = []
        for _ in range(docs):
            for _line in range(rng.randint(1, 6)):
                lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))))
            lines.append("")
        lines.insert(3, " ".join(rng.choice(words) for _ in range(150)))  # longer than a sequence
        lines.insert(5, lines[1])  # an exact duplicate
        path = root / f"part-{f}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _records(directory, manifest):
    import tensorflow as tf

    out = []
    for part in ("train", "validation"):
        for shard in manifest["shards"][part]:
            for raw in tf.data.TFRecordDataset(os.path.join(directory, shard["file"])):
                ex = tf.train.Example.FromString(raw.numpy())
                out.append((ex.features.feature["id"].int64_list.value[0],
                            list(ex.features.feature["token_ids"].int64_list.value), part))
    return out


@pytest.mark.slow
def test_prepare_round_trips_the_corpus_and_trains(tmp_path):
    """`zoo data prepare bert_pretrain`: shards that give back every token of the corpus in order (duplicates
    removed when asked), a manifest that says what was done, and a run that trains on it and refuses a
    mismatch."""
    from zoo.data.prepared import open_prepared
    from zoo.tokenizers import BertPreprocessor

    _corpus(tmp_path)
    code, out, err = run_cli(["data", "prepare", "bert_pretrain", "--data", "part-*.txt", "--out", "prepared",
                           "--set", "data.sequence_length=32", "--set", "data.vocab_size=200", "--set",
                           "data.dedup=true", "--set", "data.validation_split=0.2", "--shards", "3", "--json"],
                          tmp_path)
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest == json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    prepared = open_prepared(str(tmp_path / "prepared"), "bert_pretrain")
    assert prepared.sequence_length == 32 and manifest["schema_version"] == 1
    assert manifest["packing"] == "full_sentences"
    assert [s["bytes"] for s in manifest["sources"]] == [os.path.getsize(tmp_path / f"part-{i}.txt") for i in (0, 1)]
    assert manifest["cleaning"]["dedup"] and manifest["cleaning"]["duplicates_removed"] >= 2  # one per file at least
    assert 1 <= len(manifest["shards"]["train"]) <= 3 and manifest["shards"]["validation"]
    records = _records(tmp_path / "prepared", manifest)
    assert len(records) == sum(manifest["examples"].values()) == sum(
        s["examples"] for p in manifest["shards"].values() for s in p)
    assert {p for *_, p in records} == {"train", "validation"}
    # Shuffled: the shards are not in corpus order. Sorted by id: every token of the deduplicated corpus.
    ids = [r[0] for r in records]
    assert ids != sorted(ids)
    pre = BertPreprocessor(list(prepared.vocabulary), sequence_length=32)
    seen, expected = set(), []
    for path in sorted(tmp_path.glob("part-*.txt")):
        for line in path.read_text().splitlines():
            if line.strip() and line not in seen:
                seen.add(line)
                expected += pre.tokenize([line]).to_list()[0]
    assert unpack([r[1] for r in sorted(records)], pre.cls_id, pre.sep_id) == expected
    assert manifest["tokens"] == len(expected) and manifest["lines"] == len(seen)
    assert manifest["padding_fraction"]["packed"] < 0.5 * manifest["padding_fraction"]["unpacked"], manifest
    assert all(len(r[1]) <= 32 for r in records)

    # Training on it: no tokenization; the vocabulary and the sequence length come from the manifest.
    from zoo.recipes.engine.run import train
    from zoo.rundir import RunDir

    result = train("bert_pretrain", str(tmp_path / "run"), {
        "data.source": str(tmp_path / "prepared"), "train.steps": 4, "train.checkpoint_every_steps": 2,
        "train.batch_size": 8, "train.tensorboard": False, "train.schedule.warmup_steps": 1}, verbose=0)
    run = RunDir.open(result.run_dir)
    info = run.info
    assert info.preprocessor.sequence_length == 32
    assert open(os.path.join(result.run_dir, RunDir.VOCAB)).read().splitlines() == list(prepared.vocabulary)
    assert result.metrics["steps_completed"] == 4 and info.data["prepared"] == os.path.abspath(tmp_path / "prepared")
    assert info.data["counts"]["train_sequences"] == manifest["examples"]["train"]
    assert np.isfinite(result.metrics["epochs"][-1]["loss"])

    # Mismatches are refused with one clear error.
    code, _, err = run_cli(["train", "bert_pretrain", "--data", "prepared", "--set", "data.sequence_length=64",
                         "--run-dir", "runs/x", "--quiet"], tmp_path)
    assert code != 0 and "prepared with data.sequence_length=32" in err, err
    from tests.conftest import MINILM

    code, _, err = run_cli(["train", "bert_pretrain", "--data", "prepared", "--init", f"hf:{MINILM}", "--quiet"],
                        tmp_path)
    assert code != 0 and "a different vocabulary" in err, err
    os.makedirs(tmp_path / "empty")
    code, _, err = run_cli(["train", "bert_pretrain", "--data", "empty", "--quiet"], tmp_path)
    assert code != 0 and "without manifest.json" in err, err
    code, _, err = run_cli(["data", "prepare", "bert_pretrain", "--data", "part-*.txt", "--out", "prepared"], tmp_path)
    assert code != 0 and "already holds a prepared dataset" in err, err
    code, _, err = run_cli(["data", "prepare", "translate", "--data", "x.tsv", "--out", "p2"], tmp_path)
    assert code != 0 and "bert_pretrain" in err, err


@pytest.mark.slow
def test_a_killed_prepare_leaves_nothing_readable_and_parallel_workers_write_the_same(tmp_path):
    """SIGKILL while the shards are being written: no dataset (no manifest, no directory) is left; the same
    command then finishes (removing the leftovers), and two worker processes write exactly the records one
    process writes."""
    _corpus(tmp_path, files=2, docs=4000, seed=1)
    args = ["data", "prepare", "bert_pretrain", "--data", "part-*.txt", "--set", "data.sequence_length=32",
            "--set", "data.vocab_size=200", "--set", "data.vocab_sample_lines=2000", "--workers", "2"]
    cmd = [sys.executable, "-m", "zoo.cli", *args, "--out", "prepared"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pieces = wait_until(lambda: list(tmp_path.glob("prepared.partial-*/.pieces/f*.tfrecord")) or proc.poll(),
                        "the workers' first shard pieces")
    assert proc.poll() is None and pieces, "the prepare ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    # The worker processes die with it (they hold its stdout too: communicate() ends when the last one has).
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "prepared").exists() and list(tmp_path.glob("prepared.partial-*"))
    code, _, err = run_cli(["train", "bert_pretrain", "--data", "prepared", "--quiet"], tmp_path)
    assert code != 0 and "error:" in err  # nothing to read there
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob("prepared.partial-*")) and "padding" in done.stdout
    code, _, err = run_cli([*args[:-2], "--workers", "1", "--out", "one"], tmp_path)
    assert code == 0, err
    two = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert two["examples"] == one["examples"] and two["tokens"] == one["tokens"] > 100_000
    assert sorted(_records(tmp_path / "prepared", two)) == sorted(_records(tmp_path / "one", one))


@pytest.mark.slow
def test_a_data_service_gives_each_record_of_a_pass_to_one_trainer(tmp_path):
    """train.data_service: a dispatcher and two service workers (in this process, on loopback) split every
    pass over a prepared dataset file by file; two trainers reading one job share it, and together they get
    every training record exactly once per pass. Data the service cannot read (raw text) or a malformed
    address is one clear error."""
    import collections

    import tensorflow as tf

    from zoo.data import service
    from zoo.data.prepared import open_prepared
    from zoo.errors import ConfigError
    from zoo.recipes.engine.run import train

    _corpus(tmp_path, files=3, docs=20)
    code, _, err = run_cli(["data", "prepare", "bert_pretrain", "--data", "part-*.txt", "--out", "prepared", "--set",
                            "data.sequence_length=32", "--set", "data.vocab_size=200", "--set",
                            "data.validation_split=0.1", "--shards", "4", "--quiet"], tmp_path)
    assert code == 0, err
    prepared = open_prepared(str(tmp_path / "prepared"), "bert_pretrain")
    assert len(prepared.files("train")) == 4
    train_ids = [i for i, _, part in _records(tmp_path / "prepared", prepared.manifest) if part == "train"]
    dispatcher = service.start_dispatcher(0)
    workers = [service.start_worker(dispatcher.target, 0, None) for _ in range(2)]
    # The records' ids instead of their tokens: the same service pipeline with its parse step swapped.
    object.__setattr__(prepared, "parse", lambda r: tf.io.parse_single_example(
        r, {"id": tf.io.FixedLenFeature([], tf.int64)})["id"])
    readers = {i: iter(service.distribute(prepared.service_dataset(7, 16, first_pass=0, passes=2).batch(3),
                                          dispatcher.target, "exactly-once")) for i in range(2)}
    got: list[list[int]] = [[], []]
    while readers:
        for i, reader in list(readers.items()):  # the two trainers take batches in turn
            batch = next(reader, None)
            if batch is None:
                del readers[i]
            else:
                got[i].extend(batch.numpy().tolist())
    assert got[0] and got[1], got  # both trainers read from the job
    counts = collections.Counter(got[0] + got[1])
    assert sorted(counts) == sorted(train_ids) and set(counts.values()) == {2}  # once per pass, two passes

    # A run reads through the service with train.data_service (zoo launch --data-service-workers sets it; the
    # README's launch block trains that way); data the service cannot read, or a malformed address, is refused.
    settings = {"data.source": str(tmp_path / "prepared"), "train.steps": 4, "model.preset": "bert_tiny",
                "train.tensorboard": False, "train.data_service": dispatcher.target}
    with pytest.raises(ConfigError, match="cannot read this data through a tf.data service; the service reads "
                                          "prepared datasets"):
        train("bert_pretrain", str(tmp_path / "raw"), {**settings, "data.source": str(tmp_path / "part-*.txt")})
    assert not (tmp_path / "raw").exists()
    with pytest.raises(ConfigError, match="not a tf.data service address; give the dispatcher as grpc://HOST:PORT"):
        train("bert_pretrain", str(tmp_path / "bad"), {**settings, "train.data_service": "localhost"})
    del workers
