"""MMLU as Tulu 2 scored it (open-instruct's eval/mmlu): the official CSV release, 0 or 5 shots, the letter
with the most probable next token.

Layout: DIR/test/<subject>_test.csv and DIR/dev/<subject>_dev.csv, no header, rows of question, the four
choices and the answer letter. A subject's shots are the first k rows of its dev file.

Prompt: the header "The following are multiple choice questions (with answers) about  <subject words>.\\n\\n"
(two spaces: the subject's words are each preceded by one, as in the original MMLU code Tulu copied), each
shot as "question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n", then the question ending in "Answer:".
A prompt longer than 2048 tokens loses shots from the end until it fits (counted as the model receives it,
BOS included: one token more than Tulu counted). Through a chat template the prompt
is one user turn and the reply starts with "The answer is:".

Prediction: the choice whose letter token is most probable next. The letter token is the last token of
" A" (" B", ...) as the tokenizer encodes it, Tulu's choice; their log-probabilities come from one forward
pass per prompt (`eval.scoring.score_next_tokens`), so the argmax is Tulu's argmax over the four tokens.
Accuracy per subject, its mean over subjects (macro) and over questions (micro: Tulu's "average_acc"), and
over the questions of each of the MMLU paper's 17 subcategories and 4 categories (`SUBCATEGORIES`, the
grouping of the original MMLU code that Tulu reported as "subcat_acc" and "cat_acc").
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmadapt.errors import DataError
from lmadapt.eval.multiple_choice import LETTERS, Question, render

NUM_CHOICES = 4
TULU_MAX_PROMPT_TOKENS = 2048
CHAT_REPLY_START = "The answer is:"

# The 57 subjects by subcategory, and the subcategories by category, as the original MMLU code groups them.
SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "math": (
        "abstract_algebra",
        "college_mathematics",
        "elementary_mathematics",
        "high_school_mathematics",
        "high_school_statistics",
    ),
    "health": (
        "anatomy",
        "clinical_knowledge",
        "college_medicine",
        "human_aging",
        "medical_genetics",
        "nutrition",
        "professional_medicine",
        "virology",
    ),
    "physics": ("astronomy", "college_physics", "conceptual_physics", "high_school_physics"),
    "business": ("business_ethics", "management", "marketing"),
    "biology": ("college_biology", "high_school_biology"),
    "chemistry": ("college_chemistry", "high_school_chemistry"),
    "computer science": (
        "college_computer_science",
        "computer_security",
        "high_school_computer_science",
        "machine_learning",
    ),
    "economics": ("econometrics", "high_school_macroeconomics", "high_school_microeconomics"),
    "engineering": ("electrical_engineering",),
    "philosophy": (
        "formal_logic",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "world_religions",
    ),
    "other": ("global_facts", "miscellaneous", "professional_accounting"),
    "history": (
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "prehistory",
    ),
    "geography": ("high_school_geography",),
    "politics": (
        "high_school_government_and_politics",
        "public_relations",
        "security_studies",
        "us_foreign_policy",
    ),
    "psychology": ("high_school_psychology", "professional_psychology"),
    "culture": ("human_sexuality", "sociology"),
    "law": ("international_law", "jurisprudence", "professional_law"),
}
CATEGORIES: dict[str, tuple[str, ...]] = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other (business, health, misc.)": ("other", "business", "health"),
}


def subjects(data: str | Path) -> list[str]:
    """The subjects of DIR/test/, sorted (as Tulu evaluates them)."""
    test = Path(data) / "test"
    if not test.is_dir():
        raise DataError(str(test), None, None, "no such directory: expected the MMLU data/ layout")
    names = sorted(p.name.removesuffix("_test.csv") for p in test.glob("*_test.csv"))
    if not names:
        raise DataError(str(test), None, None, "no <subject>_test.csv files")
    return names


def load_csv(path: str | Path, subject: str) -> list[Question]:
    """The rows of one MMLU CSV file (blank lines skipped); a malformed row is a DataError naming its line."""
    path = Path(path)
    questions = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        line = 1
        for row in reader:
            if not row:  # a blank line, which pandas (Tulu's reader) skips too
                line = reader.line_num + 1
                continue
            if len(row) != NUM_CHOICES + 2:
                raise DataError(path, line, None, f"expected {NUM_CHOICES + 2} columns, got {len(row)}")
            answer = row[-1].strip()
            if answer not in LETTERS[:NUM_CHOICES]:
                raise DataError(path, line, "answer", f"expected one of A, B, C, D, got {row[-1]!r}")
            questions.append(Question(row[0], row[1:-1], LETTERS.index(answer), subject, line))
            line = reader.line_num + 1
    return questions


def header(subject: str) -> str:
    words = "".join(" " + word for word in subject.split("_"))
    return f"The following are multiple choice questions (with answers) about {words}.\n\n"


def build_prompt(question: Question, shots: Sequence[Question]) -> str:
    """The header, the answered shots and the question (module docstring)."""
    answered = "".join(render(shot, "letter", LETTERS[shot.answer]) + "\n\n" for shot in shots)
    return header(str(question.subject)) + answered + render(question, "letter")


def _accuracy(hits: Sequence[bool]) -> dict[str, Any]:
    return {"num_questions": len(hits), "accuracy": round(100 * sum(hits) / len(hits), 4)}


def accuracy_metrics(questions: Sequence[Question], predictions: Sequence[int]) -> dict[str, Any]:
    """Accuracy (x100, 4 decimals) per subject, macro (mean over subjects) and micro (over questions), and
    over the questions of each subcategory and category that has any (subjects outside the 57 in none)."""
    by_subject: dict[str, list[bool]] = {}
    for question, prediction in zip(questions, predictions, strict=True):
        by_subject.setdefault(str(question.subject), []).append(prediction == question.answer)
    subcategories = {
        name: hits
        for name, members in SUBCATEGORIES.items()
        if (hits := [hit for subject in members for hit in by_subject.get(subject, [])])
    }
    categories = {
        name: hits
        for name, members in CATEGORIES.items()
        if (hits := [hit for sub in members for hit in subcategories.get(sub, [])])
    }
    all_hits = [hit for hits in by_subject.values() for hit in hits]
    macro = sum(sum(hits) / len(hits) for hits in by_subject.values()) / len(by_subject)
    return {
        "overall": {
            "num_questions": len(all_hits),
            "num_subjects": len(by_subject),
            "accuracy_micro": round(100 * sum(all_hits) / len(all_hits), 4),
            "accuracy_macro": round(100 * macro, 4),
        },
        "per_category": {name: _accuracy(hits) for name, hits in categories.items()},
        "per_subcategory": {name: _accuracy(hits) for name, hits in sorted(subcategories.items())},
        "per_subject": {name: _accuracy(hits) for name, hits in sorted(by_subject.items())},
    }
