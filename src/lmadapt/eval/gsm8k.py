"""Math word problems by generation with final-answer extraction (GSM8K and the like, from local files), as
Tulu 2 evaluated GSM8K (open-instruct's `eval/gsm`): 8-shot chain of thought on a seeded sample of 200.

Records: {"question": str, "answer": str or number}. A GSM8K answer is a worked solution ending in
"#### <number>"; the gold answer is the number after the last "####" (an answer that is just a number
is its own gold). A few-shot record may carry its chain of thought as "cot_answer" (the field of Tulu's
exemplars, the 8 of Wei et al. 2022); otherwise a worked solution becomes one: its lines joined, calculator
annotations ("<<48/2=24>>") removed and "The answer is 72." at the end, on one line as Tulu's are.

Prompt (Tulu): "Answer the following questions.\n\n", the shots as "Question: ...\nAnswer: ..." blocks
separated by blank lines, then "Question: <q>\nAnswer:" ("Answer the following question." without shots).
Through a chat template the question is the user turn and the reply starts with "Answer:". Plain prompts
stop at the first newline (Tulu's stop token), chat replies at EOS.

Scoring (Tulu): digit-grouping commas dropped, the last number of the output (`TULU_NUMBER`) or the whole
output when it holds none, compared with the gold ignoring case and punctuation (`tulu_match`: so
"72.0" is not "72"). `accuracy_numeric` beside it compares numbers by value ("$1,200.00" = "1200").
"""

from __future__ import annotations

import random
import re
import string
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
TULU_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_DIGIT_COMMA = re.compile(r"(\d),(\d)")
TULU_SHOTS = 8
TULU_MAX_QUESTIONS = 200  # a sample drawn as Tulu drew it: random.seed(42); random.sample(test, 200)
TULU_SEED = 42
TULU_MAX_NEW_TOKENS = 512
CHAT_REPLY_START = "Answer:"


@dataclass(frozen=True)
class Problem:
    """One problem: `solution` as written in the file, `gold` its normalised final answer."""

    question: str
    solution: str
    gold: str
    line: int
    cot: str | None = None  # a few-shot example's own chain of thought ("cot_answer")


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


def tulu_extract(text: str) -> str:
    """Tulu's prediction: the last number of `text` after digit commas are dropped, else `text` itself."""
    numbers = TULU_NUMBER.findall(_DIGIT_COMMA.sub(r"\1\2", text))
    return numbers[-1] if numbers else text


def tulu_gold(solution: str) -> str:
    """Tulu's reference: the text after "####" (the whole answer without one), digit commas dropped."""
    final = solution.split(ANSWER_MARK)[1] if ANSWER_MARK in solution else solution
    return _DIGIT_COMMA.sub(r"\1\2", final.strip())


def tulu_match(prediction: str, gold: str) -> bool:
    """Hugging Face `exact_match` with ignore_case and ignore_punctuation, as Tulu called it."""
    drop = str.maketrans("", "", string.punctuation)
    return prediction.lower().translate(drop) == gold.lower().translate(drop)


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
        cot = record.get("cot_answer")
        if cot is not None and (not isinstance(cot, str) or not cot.strip()):
            raise DataError(path, line, "cot_answer", "expected a non-empty string")
        problems.append(Problem(question.strip(), str(answer).strip(), gold, line, cot and cot.strip()))
    if not problems:
        raise DataError(path, None, None, "no problems in the file")
    return problems


def sample_problems(problems: Sequence[Problem], max_questions: int | None) -> list[Problem]:
    """Tulu's sample: `max_questions` drawn with Python's random seeded 42 (all when None, 0 or enough)."""
    if not max_questions or len(problems) <= max_questions:
        return list(problems)
    return random.Random(TULU_SEED).sample(list(problems), max_questions)


def worked_answer(problem: Problem) -> str:
    """A few-shot example's answer on one line: its "cot_answer", else the solution's reasoning without
    calculator annotations followed by "The answer is <gold>."."""
    if problem.cot is not None:
        return problem.cot
    reasoning = ""
    if ANSWER_MARK in problem.solution:
        lines = _CALCULATOR.sub("", problem.solution.rsplit(ANSWER_MARK, 1)[0]).split("\n")
        reasoning = " ".join(line.strip() for line in lines if line.strip())
    final = f"The answer is {problem.gold}."
    return f"{reasoning} {final}" if reasoning else final


def stop_strings(chat_template: bool) -> list[str] | None:
    """Tulu's stops: a plain prompt's answer ends at the first newline; a chat reply at EOS."""
    return None if chat_template else ["\n"]


def build_prompt(problem: Problem, shots: Sequence[Problem], chat_template: bool) -> str:
    """Tulu's prompt (module docstring); through a chat template it ends at the question, and the reply
    begins with CHAT_REPLY_START (`PromptEncoder.encode_with_reply_start`)."""
    header = "Answer the following questions.\n\n" if shots else "Answer the following question.\n\n"
    demos = "".join(f"Question: {shot.question}\nAnswer: {worked_answer(shot)}\n\n" for shot in shots)
    question = f"Question: {problem.question}"
    return header + demos + (question if chat_template else question + "\nAnswer:")


def gsm8k_metrics(problems: Sequence[Problem], outputs: Sequence[str]) -> dict[str, Any]:
    """Tulu's accuracy (`tulu_match` of `tulu_extract`), accuracy by numeric value, and how many outputs
    held no number; x100, 4 decimals."""
    pairs = list(zip(problems, outputs, strict=True))
    tulu = sum(tulu_match(tulu_extract(text), tulu_gold(p.solution)) for p, text in pairs)
    numeric = sum(extract_answer(text) == p.gold for p, text in pairs)
    return {
        "num_questions": len(problems),
        "accuracy": round(100 * tulu / len(problems), 4),
        "accuracy_numeric": round(100 * numeric / len(problems), 4),
        "no_number": sum(extract_answer(text) is None for _, text in pairs),
    }
