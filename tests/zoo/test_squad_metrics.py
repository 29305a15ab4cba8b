"""SQuAD exact match and F1, checked on cases worked out by hand from the official scripts' definition:
normalize (lower case, drop punctuation, drop a/an/the, collapse spaces), then EM is string equality and
F1 is the overlap of the bags of words, best over the ground truths; v2.0 scores an empty answer 1 only
against an unanswerable question."""

import pytest

from zoo.metrics import normalize_answer, squad_exact, squad_f1, squad_scores


def test_normalization():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear; THE plum") == "apple pear plum"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"


@pytest.mark.parametrize("pred,truths,em,f1", [
    ("the Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),
    ("Eiffel", ["Eiffel Tower"], 0.0, 2 * 1.0 * 0.5 / 1.5),          # p=1, r=1/2 -> 2/3
    ("in Paris France", ["Paris", "France"], 0.0, 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # best truth: p=1/3, r=1 -> 0.5
    ("London", ["Paris"], 0.0, 0.0),
    ("1815 1815", ["1815"], 0.0, 2 * 0.5 * 1.0 / 1.5),                # counts matter: p=1/2, r=1 -> 2/3
    ("", [], 1.0, 1.0),                                               # v2.0: unanswerable, no answer
    ("London", [], 0.0, 0.0),                                         # v2.0: answered the unanswerable
    ("", ["Paris"], 0.0, 0.0),
    ("the", ["a"], 1.0, 1.0),                                         # both normalize to empty
])
def test_exact_match_and_f1(pred, truths, em, f1):
    assert squad_exact(pred, truths) == em
    assert squad_f1(pred, truths) == pytest.approx(f1)


def test_corpus_scores_are_percentages():
    scores = squad_scores(["Paris", "Eiffel", ""], [["Paris"], ["Eiffel Tower"], []])
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError):
        squad_scores(["a"], [])
