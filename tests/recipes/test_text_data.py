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
    assert alone.train_corpus == [str(t) for t in alone.x_train]  # the vocabulary is learned from training rows only
