"""Train / validation / eval splits of the text-classification recipes."""

from __future__ import annotations

from tests.datasets import EVAL_WORDS, TRAIN_WORDS, write_sentiment
from zoo.recipes.text_data import TextDataConfig, read_splits


def test_validation_is_carved_from_training_and_disjoint_from_eval(tmp_path):
    train = write_sentiment(tmp_path / "train.tsv", 200, TRAIN_WORDS, 0)
    dev = write_sentiment(tmp_path / "dev.tsv", 40, EVAL_WORDS, 1)
    splits = read_splits(TextDataConfig(source=train, eval_source=dev, validation_split=0.1), seed=3)
    assert splits.counts == {"train": 180, "validation": 20, "eval": 40}
    assert sorted(splits.y_val.tolist()) == [0] * 10 + [1] * 10  # stratified
    # Validation rows come from the training file, never from --eval-data (whose words it never contains).
    eval_words = {w for ws in EVAL_WORDS for w in ws}
    assert not any(text.split()[-1] in eval_words for text in splits.x_val)
    assert all(text.split()[-1] in eval_words for text in splits.x_eval)
    # Without --eval-data the final evaluation is on the validation split itself.
    alone = read_splits(TextDataConfig(source=train, validation_split=0.1), seed=3)
    assert (alone.x_eval == alone.x_val).all() and len(alone.x_train) == 180
    assert alone.corpus() == [str(t) for t in alone.x_train]  # the vocabulary is learned from training rows only


def test_bad_rows_stop_the_run_or_are_skipped_and_counted(tmp_path):
    """data.on_error: raise (default) names a bad row's file and line; skip drops every bad row,
    counts it and keeps the first messages. A missing column is a file-level mistake: always an error."""
    import pytest

    from zoo.data.text import BadRows, read_labelled_text, read_text_corpus, read_text_pairs
    from zoo.errors import DataError

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b'{"text": "good one", "label": "pos"}\n'
                      b'{"text": "broken", label: "neg"}\n'        # line 2: not JSON
                      b'["a list"]\n'                              # line 3: not an object
                      b'{"text": "no label here"}\n'               # line 4: missing field
                      b'{"text": "empty", "label": " "}\n'         # line 5: empty label
                      b'{"text": "caf\xe9", "label": "neg"}\n'     # line 6: Latin-1, not UTF-8
                      b'{"text": "good two", "label": "neg"}\n')
    # Rows are read as a stream, so the first bad row in file order stops the run.
    with pytest.raises(DataError, match=r"rows.jsonl:2: not valid JSON"):
        read_labelled_text(str(jsonl))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"text": "good one", "label": "pos"}\n{"text": "caf\xe9", "label": "neg"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl:2: not valid UTF-8"):
        read_labelled_text(str(latin1))
    bad = BadRows("skip")
    rows = read_labelled_text(str(jsonl), bad=bad)
    assert rows.texts == ["good one", "good two"] and rows.lines == [1, 7]
    report = bad.report()
    assert report["skipped_rows"] == 5
    assert [m.split(":")[1] for m in report["first_skipped"]] == ["2", "3", "4", "5", "6"]  # in file order
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("text,label\nfine,1\ntoo,many,fields\nalso fine,0\n", encoding="utf-8")
    bad = BadRows("skip")
    assert read_labelled_text(str(csv_path), bad=bad).texts == ["fine", "also fine"] and bad.count == 1
    with pytest.raises(DataError, match="has no column 'sentence'"):
        read_labelled_text(str(csv_path), text_column="sentence", bad=BadRows("skip"))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(b"one\t1\nno tab here\ntwo\t \n\xff\t3\nfour\t4\n")
    bad = BadRows("skip")
    assert read_text_pairs(str(pairs), bad)[:2] == (["one", "four"], ["1", "4"]) and bad.count == 3
    # Plain corpora: a bad line skipped; an empty file among others is no error.
    (tmp_path / "a.txt").write_bytes(b"first line\nna\xefve\nsecond line\n")
    (tmp_path / "b.txt").write_text("")
    bad = BadRows("skip")
    assert read_text_corpus([str(tmp_path / "*.txt")], bad) == ["first line", "second line"] and bad.count == 1
    with pytest.raises(DataError, match=r"a.txt:2: not valid UTF-8"):
        read_text_corpus([str(tmp_path / "*.txt")])
    with pytest.raises(DataError, match="data.on_error='ignore'; use one of raise, skip"):
        BadRows("ignore")
