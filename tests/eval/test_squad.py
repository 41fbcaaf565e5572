from __future__ import annotations

import pytest

from lmadapt.eval.squad import exact_match, f1, normalize_answer, squad_scores


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("An apple, a day", "apple day"),
        ("theater  anthem\tthe", "theater anthem"),  # articles only as whole words
        ("U.S.-made", "usmade"),  # punctuation dropped, not replaced by a space
        ("«Хельсинки»", "«хельсинки»"),  # only ASCII punctuation is removed
    ],
)
def test_normalization_is_squad_v1_1s(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_token_f1_by_hand() -> None:
    # shared {cat, sat}: precision 2/2, recall 2/4 -> 2 * 1 * 0.5 / 1.5
    assert f1("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    # shared y twice (with multiplicity): precision 2/3, recall 2/4 -> 4/7
    assert f1("x y y", "y y y z") == pytest.approx(4 / 7)
    assert f1("nothing", "else") == 0.0
    assert f1("", "answer") == 0.0
    assert exact_match("The Answer.", "answer") and not exact_match("answers", "answer")


def test_set_scores_take_the_best_gold_by_hand() -> None:
    scores = squad_scores(["Paris", "the big dog"], [["paris", "Paris, France"], ["a dog", "big red dog"]])
    # q1: EM 1, F1 1. q2: vs "a dog" F1 2/3, vs "big red dog" F1 0.8 (best); EM 0.
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 90.0})
