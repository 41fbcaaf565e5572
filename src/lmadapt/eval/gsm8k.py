"""Math word problems by generation with final-answer extraction (GSM8K and the like, from local files).

Records: {"question": str, "answer": str or number}. A GSM8K answer is a worked solution ending in
"#### <number>"; the gold answer is the number after the last "####" (an answer that is just a number
is its own gold). The model's final answer is the last number in what it generates. Both sides are
normalised (thousands commas, "$" and a trailing period dropped; "72.0" equals "72") before comparing.

Few-shot examples are worked solutions with calculator annotations ("<<48/2=24>>") removed and the
"#### 72" line written as "The answer is 72.", the chain-of-thought form models imitate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lmadapt.data.formats import read_records
from lmadapt.errors import DataError

# A number as written in prose: a minus sign unless it joins two words ("10-15" is 10 and 15), a dollar
# sign, digits with thousands commas (not a trailing comma: "5, 6" is two numbers) and decimals (not a
# sentence's final period).
NUMBER = re.compile(r"(?:(?<!\w)-)?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
_CALCULATOR = re.compile(r"<<[^>]*>>")
ANSWER_MARK = "####"


@dataclass(frozen=True)
class Problem:
    """One problem: `solution` as written in the file, `gold` its normalised final answer."""

    question: str
    solution: str
    gold: str
    line: int


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written as text ("$1,234.50." -> "1234.5"); None if it is not one."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    # format(..., "f") writes 1E+2 as "100"; adding 0 turns -0 into 0.
    return format(value + 0, "f")


def extract_answer(text: str) -> str | None:
    """The last number in `text`, normalised; None when there is none."""
    numbers = NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def gold_answer(answer: Any, path: str | Path, line: int) -> str:
    """The normalised final answer of a record's "answer" field (see the module docstring)."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        gold = normalize_number(str(answer))
    elif isinstance(answer, str):
        final = answer.rsplit(ANSWER_MARK, 1)[1] if ANSWER_MARK in answer else answer
        gold = normalize_number(final)
    else:
        raise DataError(path, line, "answer", f"expected a string or a number, got {type(answer).__name__}")
    if gold is None:
        raise DataError(
            path, line, "answer", f"no final answer: expected a number after '{ANSWER_MARK}' or a number"
        )
    return gold


def load_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL/JSON/Parquet file; a bad record raises DataError naming its line and field."""
    path = Path(path)
    problems = []
    for line, record in read_records(path):
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(path, line, "question", "expected a non-empty string")
        if "answer" not in record:
            raise DataError(path, line, "answer", "missing field")
        answer = record["answer"]
        gold = gold_answer(answer, path, line)
        problems.append(Problem(question.strip(), str(answer).strip(), gold, line))
    if not problems:
        raise DataError(path, None, None, "no problems in the file")
    return problems


def worked_answer(problem: Problem) -> str:
    """A few-shot example's answer: the reasoning without calculator annotations, then the final answer."""
    reasoning = ""
    if ANSWER_MARK in problem.solution:
        reasoning = _CALCULATOR.sub("", problem.solution.rsplit(ANSWER_MARK, 1)[0]).strip()
    final = f"The answer is {problem.gold}."
    return f"{reasoning}\n{final}" if reasoning else final


def stop_strings(chat_template: bool) -> list[str]:
    """Where generation stops: a model writing the next "Question:" is past its answer; so is a base model
    writing a blank line, which no few-shot answer holds (a chat model's reply may use them)."""
    return ["Question:"] if chat_template else ["Question:", "\n\n"]


def build_prompt(problem: Problem, shots: Sequence[Problem]) -> str:
    """Answered shots and the problem as "Question: ...\\nAnswer:" blocks separated by blank lines."""
    parts = [f"Question: {shot.question}\nAnswer: {worked_answer(shot)}" for shot in shots]
    parts.append(f"Question: {problem.question}\nAnswer:")
    return "\n\n".join(parts)


def gsm8k_metrics(problems: Sequence[Problem], extracted: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy (x100, 4 decimals) and how many predictions held no number."""
    correct = sum(answer == problem.gold for problem, answer in zip(problems, extracted, strict=True))
    return {
        "num_questions": len(problems),
        "accuracy": round(100 * correct / len(problems), 4),
        "no_number": sum(answer is None for answer in extracted),
    }
