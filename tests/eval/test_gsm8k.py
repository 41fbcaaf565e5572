from __future__ import annotations

import json
import random
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
    sample_problems,
    stop_strings,
    tulu_extract,
    tulu_gold,
    tulu_match,
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
            {"question": "Text number?", "answer": "-4", "cot_answer": " 0 - 4 = -4. The answer is -4. "},
        ],
    )
    problems = load_problems(path)
    assert problems[3].cot == "0 - 4 = -4. The answer is -4." and problems[0].cot is None
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
        ({"question": "q", "answer": "#### 4", "cot_answer": 4}, "cot_answer", "non-empty string"),
    ],
)
def test_bad_records_name_line_and_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "ok", "answer": "#### 1"}, record])
    with pytest.raises(DataError, match=message) as err:
        load_problems(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)


def test_few_shot_answers_are_one_line_chains_of_thought() -> None:
    shot = Problem("How many clips?", SOLUTION, "72", 1)
    assert worked_answer(shot) == (
        "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. "
        "The answer is 72."
    )
    assert worked_answer(Problem("q", "3.0", "3", 1)) == "The answer is 3."
    assert worked_answer(Problem("q", "#### 6", "6", 1, cot="15 - 9 = 6. The answer is 6.")) == (
        "15 - 9 = 6. The answer is 6."
    )


def test_prompts_are_tulus() -> None:
    shot = Problem("Trees?", "#### 6", "6", 1, cot="21 - 15 = 6. The answer is 6.")
    problem = Problem("What is 2+2?", "#### 4", "4", 2)
    assert build_prompt(problem, [shot, shot], chat_template=False) == (
        "Answer the following questions.\n\n"
        "Question: Trees?\nAnswer: 21 - 15 = 6. The answer is 6.\n\n"
        "Question: Trees?\nAnswer: 21 - 15 = 6. The answer is 6.\n\n"
        "Question: What is 2+2?\nAnswer:"
    )
    assert build_prompt(problem, [], chat_template=False) == (
        "Answer the following question.\n\nQuestion: What is 2+2?\nAnswer:"
    )
    # Through a chat template the user turn ends at the question; the reply starts with "Answer:".
    assert build_prompt(problem, [], chat_template=True) == (
        "Answer the following question.\n\nQuestion: What is 2+2?"
    )
    assert stop_strings(chat_template=False) == ["\n"]
    assert stop_strings(chat_template=True) is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("So 600 + 600 = 1,200. The answer is 1,200.", "1200"),
        ("It is -3.5 or maybe 4.0", "4.0"),
        ("I do not know", "I do not know"),
        ("+7 then .5", ".5"),
    ],
)
def test_tulu_extraction(output: str, expected: str) -> None:
    assert tulu_extract(output) == expected


def test_tulu_gold_and_match() -> None:
    assert tulu_gold(SOLUTION) == "72" and tulu_gold("Costs #### 1,200") == "1200" and tulu_gold("5") == "5"
    assert tulu_match("72", "72") and tulu_match("Yes.", "yes")
    assert not tulu_match("72.0", "72")  # punctuation is dropped, not numbers compared: "720" != "72"
    assert tulu_match("7.2", "72")  # ... which also makes these equal, as in Tulu's scoring


def test_tulu_match_ignores_case_and_punctuation_only_as_bbh_needs() -> None:
    assert tulu_match("(b)", "(B)")
    assert tulu_match("Yes!", "yes")
    assert tulu_match("dont", "don't")
    assert not tulu_match("(B)", "(C)")
    assert not tulu_match(" yes", "yes")  # whitespace is not stripped by that scorer
    assert not tulu_match("(A) apple", "(A)")


def test_sample_is_the_one_tulu_drew() -> None:
    problems = [Problem(f"q{i}", f"#### {i}", str(i), i + 1) for i in range(300)]
    random.seed(42)  # Tulu's code: the module-level generator, seeded, then random.sample
    expected = random.sample(problems, 200)
    assert sample_problems(problems, 200) == expected
    assert sample_problems(problems, 0) == problems and sample_problems(problems, 400) == problems


def test_metrics() -> None:
    problems = [Problem(q, f"#### {n}", str(n), n) for n, q in enumerate("abc", start=1)]
    metrics = gsm8k_metrics(problems, ["The answer is 1.", "no idea", "It is 3.0"])
    assert metrics == {"num_questions": 3, "accuracy": 33.3333, "accuracy_numeric": 66.6667, "no_number": 1}
