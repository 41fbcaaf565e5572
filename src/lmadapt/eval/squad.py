"""The SQuAD v1.1 answer metric: exact match and token F1 after normalisation, best over the gold answers.

Normalisation as the official v1.1 evaluation script: lowercase, drop ASCII punctuation characters, replace
the English articles a/an/the (whole words) by spaces, and collapse whitespace. F1 counts the tokens
(whitespace-split) shared by prediction and gold with multiplicity. A question's score is its best over
its gold answers; a set's score is the mean x100.

Written here rather than taken from a package: Hugging Face `evaluate`'s "squad" metric is a script fetched
from the Hub when loaded (online); torchmetrics' SQuAD, adapted from the official script, scores a gold that
normalises to nothing by SQuAD v2's rule (F1 1 when the prediction is empty too; v1.1 gives 0) and computes
in torch tensors. The tests check this module against hand-computed cases and against torchmetrics on
random inputs whose golds are not empty (parity to 1e-4).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} (x100) of predictions against their gold answer lists, best gold per question."""
    if not predictions:
        raise ValueError("no predictions to score")
    em = sum(max(exact_match(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True))
    f = sum(max(f1(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True))
    return {"exact_match": 100 * em / len(predictions), "f1": 100 * f / len(predictions)}
