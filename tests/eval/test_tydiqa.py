from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.errors import DataError
from lmadapt.eval import tydiqa
from lmadapt.eval.tydiqa import QAExample


def squad_file(path: Path, paragraphs: list[tuple[str, list[tuple[str, str, list[str]]]]]) -> Path:
    """A file in the SQuAD layout: paragraphs of (context, [(id, question, answers)])."""
    data = [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {"id": i, "question": q, "answers": [{"text": a, "answer_start": 0} for a in answers]}
                        for i, q, answers in qas
                    ],
                }
                for context, qas in paragraphs
            ],
        }
    ]
    path.write_text(json.dumps({"data": data, "version": "1.1"}, ensure_ascii=False), encoding="utf-8")
    return path


def test_loader_reads_the_squad_layout_and_languages(tmp_path: Path) -> None:
    path = squad_file(
        tmp_path / "dev.json",
        [
            ("Helsinki on pääkaupunki.", [("finnish-1-0", "Mikä?", ["Helsinki", "Helsinki on"])]),
            ("Paris.", [("english-7", "Where?", ["Paris"])]),
        ],
    )
    assert tydiqa.load_examples(path) == [
        QAExample("finnish-1-0", "finnish", "Helsinki on pääkaupunki.", "Mikä?", ["Helsinki", "Helsinki on"]),
        QAExample("english-7", "english", "Paris.", "Where?", ["Paris"]),
    ]
    bad = squad_file(tmp_path / "bad.json", [("c", [("klingon-1", "q", ["a"])])])
    with pytest.raises(DataError, match="no prompt for language 'klingon'"):
        tydiqa.load_examples(bad)
    bad = squad_file(tmp_path / "bad2.json", [("c", [("english-1", "q", [])])])
    with pytest.raises(DataError, match=r"qas\[0\]\.answers"):
        tydiqa.load_examples(bad)


def qa(id: str, context: str = "c", question: str = "q", answers: list[str] | None = None) -> QAExample:
    return QAExample(id, id.split("-")[0], context, question, answers or ["a"])


def test_sampling_draws_questions_then_shots_from_one_seeded_generator() -> None:
    questions = [qa(f"swahili-{i}") for i in range(5)] + [qa(f"arabic-{i}") for i in range(4)]
    train = [qa(f"arabic-t{i}") for i in range(3)] + [qa(f"swahili-t{i}") for i in range(6)]
    kept, shots = tydiqa.sample(questions, train, 3, 1)
    rng = random.Random(42)
    expected = rng.sample(questions[5:], 3) + rng.sample(questions[:5], 3)
    assert kept == expected
    assert shots == {"arabic": rng.sample(train[:3], 1), "swahili": rng.sample(train[3:], 1)}

    kept, shots = tydiqa.sample(questions, [], None, 0)
    assert kept == questions[5:] + questions[:5] and shots == {"arabic": [], "swahili": []}
    with pytest.raises(DataError, match="arabic: 0 examples for 1 shots"):
        tydiqa.sample(questions, [], None, 1)


def test_prompt_is_tulus_text() -> None:
    shot = qa("finnish-s", "Oulu on kaupunki.", "Mikä on Oulu?", ["kaupunki", "x"])
    question = qa("finnish-q", "Turku on vanha.", "Onko Turku vanha?")
    expected = (
        "Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.\n\n"
        "Kappale: Oulu on kaupunki.\nKysymys: Mikä on Oulu?\nVastaus: kaupunki\n\n"
        "Kappale: Turku on vanha.\nKysymys: Onko Turku vanha?\n"
    )
    assert tydiqa.build_prompt(question, [shot], True, str) == expected
    assert tydiqa.build_prompt(question, [shot], False, str) == expected + "Vastaus:"
    assert tydiqa.build_prompt(question, [], False, lambda c: c[:5]) == (
        "Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.\n\n"
        "Kappale: Turku\nKysymys: Onko Turku vanha?\nVastaus:"
    )
    assert tydiqa.answer_word(question) == "Vastaus:"


def test_context_is_cut_to_its_first_tokens_counted_with_special_tokens() -> None:
    byt5 = ByT5Tokenizer()  # one token per byte, and EOS at the end of every encoding
    assert tydiqa.cut_context("abcdef", byt5, 7) == "abcdef"  # 6 bytes + EOS fit
    assert tydiqa.cut_context("abcdef", byt5, 6) == "abcdef"  # the cut drops only EOS
    assert tydiqa.cut_context("abcdef", byt5, 4) == "abcd"
    assert tydiqa.cut_context("abcdef", byt5, None) == "abcdef"


def test_metrics_per_language_and_averaged_by_hand() -> None:
    examples = [
        qa("english-1", answers=["the Paris"]),
        qa("english-2", answers=["big red dog"]),
        qa("korean-1", answers=["서울"]),
    ]
    metrics = tydiqa.tydiqa_metrics(examples, ["Paris", "the big dog", "서울특별시"])
    # english: EM (1 + 0)/2 = 50, F1 (1 + 0.8)/2 = 90, recall: "the paris" not in "paris", "big red dog" not
    # in "the big dog" -> 0. korean: EM 0, F1 0 (one token each, different), recall 100 ("서울" is inside).
    assert metrics["per_language"] == {
        "english": {"num_questions": 2, "exact_match": 50.0, "f1": 90.0, "recall": 0.0},
        "korean": {"num_questions": 1, "exact_match": 0.0, "f1": 0.0, "recall": 100.0},
    }
    assert metrics["overall"] == {
        "num_questions": 3,
        "num_languages": 2,
        "exact_match": 25.0,
        "f1": 45.0,
        "recall": 50.0,
    }
