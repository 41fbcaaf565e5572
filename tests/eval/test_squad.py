from __future__ import annotations

import random

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


def torchmetrics_squad(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """torchmetrics' SQuAD (adapted from the official v1.1 script) on the same inputs."""
    from torchmetrics.functional.text import squad

    preds = [{"id": str(i), "prediction_text": p} for i, p in enumerate(predictions)]
    target = [
        {"id": str(i), "answers": {"text": g, "answer_start": [0] * len(g)}} for i, g in enumerate(golds)
    ]
    return {name: float(value) for name, value in squad(preds, target).items()}


def test_parity_with_torchmetrics_squad() -> None:
    rng = random.Random(0)
    words = [
        "The",
        "a",
        "an",
        "cat",
        "Cat",
        "sat",
        "on",
        "mat.",
        "U.S.",
        "«Хельсинки»",
        "theatre",
        "1976",
        ",",
        "!",
    ]

    def text() -> str:
        return rng.choice([" ", "  ", "\t"]).join(rng.choices(words, k=rng.randint(0, 6)))

    predictions, golds = [], []
    while len(predictions) < 300:
        answers = [text() for _ in range(rng.randint(1, 3))]
        # torchmetrics scores an empty normalised gold by SQuAD v2's rule: see the next test.
        if all(normalize_answer(a) for a in answers):
            predictions.append(text())
            golds.append(answers)
    for i in range(0, len(predictions), 30):  # per question, then the whole set
        one = squad_scores(predictions[i : i + 1], golds[i : i + 1])
        assert one == pytest.approx(torchmetrics_squad(predictions[i : i + 1], golds[i : i + 1]), abs=1e-4)
    assert squad_scores(predictions, golds) == pytest.approx(torchmetrics_squad(predictions, golds), abs=1e-4)


def test_an_empty_normalised_gold_scores_as_squad_v1_1_not_v2() -> None:
    # The v1.1 script gives F1 0 when nothing is shared; torchmetrics (like the v2 script) gives 1 when
    # prediction and gold both normalise to nothing.
    assert squad_scores(["a"], [["The."]])["f1"] == 0.0
    assert torchmetrics_squad(["a"], [["The."]])["f1"] == 100.0
