from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval.gsm8k import (
    Problem,
    build_prompt,
    extract_answer,
    gsm8k_metrics,
    load_problems,
    normalize_number,
    stop_strings,
    worked_answer,
)

SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So she sold 72 clips. The answer is 72.", "72"),
        ("The answer is $1,234.50.", "1234.5"),
        ("He pays $18", "18"),
        ("It costs 3.0 dollars", "3"),
        ("We get 5, 6", "6"),
        ("Temperature drops to -5 degrees", "-5"),
        ("A loss of $-12", "-12"),
        ("It took 10-15 minutes", "15"),  # a hyphen between numbers is no minus sign
        ("1,000,000 people came", "1000000"),
        ("Half: 0.50", "0.5"),
        ("7 apples and then 2 more. Total: 9!", "9"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer_takes_the_last_number(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("72", "72"), (" 1,000 ", "1000"), ("$5.", "5"), ("2.500", "2.5"), ("-0.0", "0"), ("1e2", "100")],
)
def test_normalize_number(text: str, expected: str) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "", "1.2.3"])
def test_normalize_rejects_non_numbers(text: str) -> None:
    assert normalize_number(text) is None


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_load_problems_reads_the_final_answer(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "How many clips?", "answer": SOLUTION},
            {"question": "Price?", "answer": "It is #### $1,200"},
            {"question": "Plain?", "answer": 3.0},
            {"question": "Text number?", "answer": "-4"},
        ],
    )
    problems = load_problems(path)
    assert [p.gold for p in problems] == ["72", "1200", "3", "-4"]
    assert problems[0] == Problem("How many clips?", SOLUTION, "72", 1)
    assert problems[2].solution == "3.0" and problems[3].line == 4


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"answer": "#### 4"}, "question", "non-empty string"),
        ({"question": "  ", "answer": "#### 4"}, "question", "non-empty string"),
        ({"question": "q"}, "answer", "missing field"),
        ({"question": "q", "answer": "four #### many"}, "answer", "no final answer"),
        ({"question": "q", "answer": "she has four"}, "answer", "no final answer"),
        ({"question": "q", "answer": ["4"]}, "answer", "expected a string or a number, got list"),
        ({"question": "q", "answer": True}, "answer", "expected a string or a number, got bool"),
    ],
)
def test_bad_records_name_line_and_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "ok", "answer": "#### 1"}, record])
    with pytest.raises(DataError, match=message) as err:
        load_problems(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)


def test_few_shot_prompt_uses_worked_answers() -> None:
    shot = Problem("How many clips?", SOLUTION, "72", 1)
    assert worked_answer(shot) == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72."
    )
    assert worked_answer(Problem("q", "3.0", "3", 1)) == "The answer is 3."
    problem = Problem("What is 2+2?", "#### 4", "4", 2)
    assert build_prompt(problem, [shot]) == (
        f"Question: How many clips?\nAnswer: {worked_answer(shot)}\n\nQuestion: What is 2+2?\nAnswer:"
    )
    assert build_prompt(problem, []) == "Question: What is 2+2?\nAnswer:"
    assert stop_strings(chat_template=False) == ["Question:", "\n\n"]
    assert stop_strings(chat_template=True) == ["Question:"]


def test_metrics() -> None:
    problems = [Problem(q, f"#### {n}", str(n), n) for n, q in enumerate("abc", start=1)]
    metrics = gsm8k_metrics(problems, ["1", None, "4"])
    assert metrics == {"num_questions": 3, "accuracy": 33.3333, "no_number": 1}
