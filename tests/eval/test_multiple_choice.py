from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.errors import DataError
from lmadapt.eval.multiple_choice import (
    ChoiceScores,
    Question,
    build_prompt,
    load_questions,
    mc_metrics,
    score_questions,
    select_shots,
)
from lmadapt.eval.prompts import PromptEncoder
from lmadapt.eval.scoring import score_replies

TOK = ByT5Tokenizer()


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def q(question: str, choices: list[str], answer: int, subject: str | None = None, line: int = 1) -> Question:
    return Question(question, choices, answer, subject, line)


# ---------------------------------------------------------------------------------------------
# Reading and prompts


def test_load_questions_accepts_indices_and_letters(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {"question": " 2+2? ", "choices": ["3", "4"], "answer": 1, "subject": "math"},
            {"question": "Sky?", "choices": ["red", "blue", "green"], "answer": "b"},
        ],
    )
    assert load_questions(path) == [
        q("2+2?", ["3", "4"], 1, "math", 1),
        q("Sky?", ["red", "blue", "green"], 1, None, 2),
    ]


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"choices": ["a", "b"], "answer": 0}, "question", "non-empty string"),
        ({"question": "x", "choices": ["a"], "answer": 0}, "choices", "at least two"),
        ({"question": "x", "choices": "ab", "answer": 0}, "choices", "at least two"),
        ({"question": "x", "choices": ["a", 3], "answer": 0}, "choices[1]", "non-empty string"),
        ({"question": "x", "choices": ["a", "b"], "answer": 2}, "answer", "not one of the 2 choices"),
        ({"question": "x", "choices": ["a", "b"], "answer": "C"}, "answer", "not one of the 2 choices"),
        ({"question": "x", "choices": ["a", "b"], "answer": True}, "answer", "index or letter"),
        ({"question": "x", "choices": ["a", "b"]}, "answer", "index or letter"),
        ({"question": "x", "choices": ["a", "b"], "answer": 0, "subject": 7}, "subject", "non-empty"),
    ],
)
def test_bad_records_name_line_and_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    good = {"question": "fine", "choices": ["a", "b"], "answer": "A"}
    path = write_jsonl(tmp_path / "mc.jsonl", [good, record])
    with pytest.raises(DataError, match=message) as err:
        load_questions(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)


def test_prompts_in_both_formats() -> None:
    shot = q("1+1?", ["2", "3"], 0, "high_school_math")
    question = q("2+2?", ["3", "4"], 1, "high_school_math")
    header = "The following are multiple choice questions (with answers) about high school math.\n\n"
    assert build_prompt(question, [shot], "text") == (
        header + "Question: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:"
    )
    assert build_prompt(question, [shot], "letter") == (
        header + "1+1?\nA. 2\nB. 3\nAnswer: A\n\n2+2?\nA. 3\nB. 4\nAnswer:"
    )
    assert build_prompt(q("Sky?", ["red", "blue"], 1), [], "text") == "Question: Sky?\nAnswer:"


def test_shots_come_from_the_questions_subject_when_the_pool_has_it() -> None:
    pool = [q("a", ["x", "y"], 0, "bio"), q("b", ["x", "y"], 0, "law"), q("c", ["x", "y"], 0, "law")]
    assert select_shots(q("?", ["x", "y"], 0, "law"), pool, 5) == pool[1:]
    assert select_shots(q("?", ["x", "y"], 0, "law"), pool, 1) == pool[1:2]
    assert select_shots(q("?", ["x", "y"], 0, "art"), pool, 2) == pool[:2]
    assert select_shots(q("?", ["x", "y"], 0), pool, 0) == []


# ---------------------------------------------------------------------------------------------
# Scoring


def test_score_questions_scores_each_choice_after_its_prompt(llama, causal_reply_log_prob) -> None:
    questions = [q("2+2?", ["3", "four"], 1), q("Sky?", ["blue", "red", "a green one"], 0)]
    encoder = PromptEncoder(TOK, "causal")
    prompts = [build_prompt(x, [], "text") for x in questions]
    scores = score_questions(encoder, lambda rows: score_replies(llama, rows, 2), questions, prompts, "text")
    for question, prompt, s in zip(questions, prompts, scores, strict=True):
        rows = [encoder.encode_with_reply(prompt, choice) for choice in question.choices]
        assert s.log_probs == pytest.approx([causal_reply_log_prob(llama, c, a) for c, a in rows], abs=1e-5)
        assert s.num_tokens == [len(" " + choice) for choice in question.choices]  # ByT5: one token a byte


def test_predictions_by_sum_and_per_token_and_metrics() -> None:
    scores = ChoiceScores([-4.0, -3.5], [4, 2])
    assert (scores.prediction, scores.prediction_per_token) == (1, 0)  # -3.5 > -4; -1 > -1.75
    questions = [q("a", ["x", "y"], 0, "bio"), q("b", ["x", "y"], 1, "bio"), q("c", ["x", "y"], 1, "law")]
    metrics = mc_metrics(questions, [scores, scores, ChoiceScores([-9.0, -1.0], [1, 1])])
    assert metrics == {
        "overall": {"num_questions": 3, "accuracy": 66.6667, "accuracy_per_token": 66.6667},
        "per_subject": {
            "bio": {"num_questions": 2, "accuracy": 50.0, "accuracy_per_token": 50.0},
            "law": {"num_questions": 1, "accuracy": 100.0, "accuracy_per_token": 100.0},
        },
    }
    assert mc_metrics(questions[:1], [scores])["per_subject"] == {
        "bio": {"num_questions": 1, "accuracy": 0.0, "accuracy_per_token": 100.0}
    }
    assert mc_metrics([q("a", ["x", "y"], 0)], [scores])["per_subject"] == {}
