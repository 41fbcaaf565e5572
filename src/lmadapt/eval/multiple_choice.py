"""Multiple-choice evaluation by log-likelihood (MMLU, ARC and the like, from local files).

Records: {"question": str, "choices": [str, ...], "answer": index or letter, "subject": str (optional)}.
Each choice is scored by the log-probability the model gives it as the answer to the prompt: summed over
its tokens, and divided by its token count (length-normalised, so long choices are not penalised for
their length). The prediction under each score is the best choice; accuracy is reported for both.

Two prompt formats: "text" asks "Question: ...\\nAnswer:" and scores each choice's text (ARC-style);
"letter" lists the choices as "A. ...", "B. ..." and scores the letters (the MMLU paper's format).
A record with a subject gets the MMLU header naming it. Few-shot examples come from another file of the
same format, answered, before the question.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.data.formats import read_records
from lmadapt.errors import DataError
from lmadapt.eval.prompts import PromptEncoder

ANSWER_FORMATS = ("text", "letter")
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Question:
    """One question; `answer` is the index of the correct choice, `line` where it is in its file."""

    question: str
    choices: list[str]
    answer: int
    subject: str | None
    line: int


# ---------------------------------------------------------------------------------------------
# Reading


def _answer_index(value: Any, num_choices: int, path: Path, line: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    else:
        raise DataError(path, line, "answer", f"expected a choice index or letter, got {value!r}")
    if not 0 <= index < num_choices:
        raise DataError(path, line, "answer", f"{value!r} is not one of the {num_choices} choices")
    return index


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a JSONL/JSON/Parquet file; a bad record raises DataError naming its line and field."""
    path = Path(path)
    questions = []
    for line, record in read_records(path):
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(path, line, "question", "expected a non-empty string")
        choices = record.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError(path, line, "choices", "expected a list of at least two strings")
        if len(choices) > len(LETTERS):
            raise DataError(path, line, "choices", f"more than {len(LETTERS)} choices")
        for i, choice in enumerate(choices):
            if not isinstance(choice, str) or not choice.strip():
                raise DataError(path, line, f"choices[{i}]", "expected a non-empty string")
        subject = record.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject.strip()):
            raise DataError(path, line, "subject", "expected a non-empty string when present")
        answer = _answer_index(record.get("answer"), len(choices), path, line)
        questions.append(Question(question.strip(), [c.strip() for c in choices], answer, subject, line))
    if not questions:
        raise DataError(path, None, None, "no questions in the file")
    return questions


# ---------------------------------------------------------------------------------------------
# Prompts


def answer_text(question: Question, index: int, answer_format: str) -> str:
    """What is scored for choice `index`: its text, or its letter."""
    return question.choices[index] if answer_format == "text" else LETTERS[index]


def render(question: Question, answer_format: str, answer: str | None = None) -> str:
    """The question ending with "Answer:", followed by " " + `answer` when given (a few-shot example)."""
    if answer_format == "text":
        text = f"Question: {question.question}\nAnswer:"
    else:
        options = "".join(f"{LETTERS[i]}. {choice}\n" for i, choice in enumerate(question.choices))
        text = f"{question.question}\n{options}Answer:"
    return text if answer is None else f"{text} {answer}"


def select_shots(question: Question, pool: Sequence[Question], k: int) -> list[Question]:
    """The first `k` examples of `pool` on the question's subject when the pool has that subject (as MMLU
    takes its 5 shots from the subject's dev set), else the first `k`."""
    same = [shot for shot in pool if question.subject is not None and shot.subject == question.subject]
    return list((same or pool)[:k])


def build_prompt(question: Question, shots: Sequence[Question], answer_format: str) -> str:
    """Header (with a subject), answered shots and the question, separated by blank lines."""
    parts = [render(shot, answer_format, answer_text(shot, shot.answer, answer_format)) for shot in shots]
    parts.append(render(question, answer_format))
    text = "\n\n".join(parts)
    if question.subject:
        subject = question.subject.replace("_", " ").strip()
        text = f"The following are multiple choice questions (with answers) about {subject}.\n\n{text}"
    return text


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class ChoiceScores:
    """Per question: summed log-prob and token count of every choice, and the two predictions."""

    log_probs: list[float]
    num_tokens: list[int]

    @property
    def prediction(self) -> int:
        return max(range(len(self.log_probs)), key=lambda i: self.log_probs[i])

    @property
    def prediction_per_token(self) -> int:
        return max(range(len(self.log_probs)), key=lambda i: self.log_probs[i] / self.num_tokens[i])


def score_questions(
    encoder: PromptEncoder,
    score: Callable[[list[tuple[list[int], list[int]]]], list[float]],
    questions: Sequence[Question],
    prompts: Sequence[str],
    answer_format: str,
) -> list[ChoiceScores]:
    """Score every choice of every question given its prompt (`build_prompt`): `encoder` turns each
    (prompt, choice) into (prompt ids, reply ids) rows and `score` gives each row's summed reply
    log-probability (`eval.scoring.score_replies`, or a source's `score`)."""
    rows = [
        encoder.encode_with_reply(prompt, answer_text(question, i, answer_format))
        for question, prompt in zip(questions, prompts, strict=True)
        for i in range(len(question.choices))
    ]
    log_probs = score(rows)
    out, first = [], 0
    for question in questions:
        end = first + len(question.choices)
        out.append(ChoiceScores(log_probs[first:end], [len(answer) for _, answer in rows[first:end]]))
        first = end
    return out


# ---------------------------------------------------------------------------------------------
# Metrics


def _accuracy(pairs: Sequence[tuple[Question, ChoiceScores]]) -> dict[str, Any]:
    n = len(pairs)
    by_sum = sum(s.prediction == q.answer for q, s in pairs)
    per_token = sum(s.prediction_per_token == q.answer for q, s in pairs)
    return {
        "num_questions": n,
        "accuracy": round(100 * by_sum / n, 4),
        "accuracy_per_token": round(100 * per_token / n, 4),
    }


def mc_metrics(questions: Sequence[Question], scores: Sequence[ChoiceScores]) -> dict[str, Any]:
    """Accuracy (x100) by summed and by per-token log-prob, overall and per subject (sorted by name)."""
    pairs = list(zip(questions, scores, strict=True))
    subjects: dict[str, list[tuple[Question, ChoiceScores]]] = {}
    for question, s in pairs:
        if question.subject is not None:
            subjects.setdefault(question.subject, []).append((question, s))
    return {
        "overall": _accuracy(pairs),
        "per_subject": {name: _accuracy(group) for name, group in sorted(subjects.items())},
    }


def prediction_records(questions: Sequence[Question], scores: Sequence[ChoiceScores]) -> list[dict[str, Any]]:
    """One predictions.jsonl record per question."""
    return [
        {
            "line": question.line,
            "subject": question.subject,
            "answer": question.answer,
            "prediction": s.prediction,
            "prediction_per_token": s.prediction_per_token,
            "log_probs": [round(x, 6) for x in s.log_probs],
            "num_tokens": s.num_tokens,
        }
        for question, s in zip(questions, scores, strict=True)
    ]
