"""BIG-Bench Hard, 3-shot chain of thought, as Tulu 2 scored it (open-instruct's eval/bbh).

Layout (the official BBH repository): DIR/bbh/<task>.json holding {"examples": [{"input", "target"}, ...]}
and DIR/cot-prompts/<task>.txt, whose first two lines (a canary line and "-----") precede the three worked
examples. Both directories must name the same tasks.

Prompt: the worked examples (stripped) + "\\n\\nQ: " + input + "\\nA:". Through a chat template the text up
to the input is one user turn and the reply starts with "A:". Answers are generated greedily (Tulu: at
most 512 new tokens, no stop string) and the prediction is what follows the first "So the answer is" up
to the next period, stripped; an output without that phrase gives its first paragraph. Exact match
ignores case and ASCII punctuation (Hugging Face `evaluate`'s exact_match with ignore_case and
ignore_punctuation, as Tulu called it); the headline is the mean over tasks.

With a limit per task, each task's examples are drawn by `random.sample` from one generator seeded 42,
tasks in sorted order (Tulu drew them in its directory listing's order, which the file system decides).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.errors import DataError
from lmadapt.eval.gsm8k import tulu_match  # the same Hugging Face exact_match settings

TULU_MAX_EXAMPLES_PER_TASK = 40
TULU_MAX_NEW_TOKENS = 512
SAMPLE_SEED = 42
HEADER_LINES = 2
CHAT_REPLY_START = "A:"
_ANSWER = re.compile(r"So the answer is (.*?)\.")


@dataclass(frozen=True)
class Example:
    task: str
    index: int  # position in the task's JSON "examples"
    input: str
    target: str


def load_tasks(data: str | Path) -> dict[str, str]:
    """Task name -> its chain-of-thought prompt (header lines dropped), for the tasks of DIR/bbh and
    DIR/cot-prompts, which must agree."""
    data = Path(data)
    tasks = {p.stem for p in (data / "bbh").glob("*.json")}
    prompts = {p.stem for p in (data / "cot-prompts").glob("*.txt")}
    if not tasks:
        raise DataError(str(data / "bbh"), None, None, "no <task>.json files (expected the BBH layout)")
    if tasks != prompts:
        missing = sorted(tasks ^ prompts)
        raise DataError(str(data), None, None, f"bbh/ and cot-prompts/ differ in tasks: {', '.join(missing)}")
    return {
        name: "".join(
            (data / "cot-prompts" / f"{name}.txt").read_text("utf-8").splitlines(True)[HEADER_LINES:]
        )
        for name in sorted(tasks)
    }


def load_examples(data: str | Path, task: str) -> list[Example]:
    """The examples of DIR/bbh/<task>.json; a malformed record is a DataError naming it."""
    path = Path(data) / "bbh" / f"{task}.json"
    try:
        records = json.loads(path.read_text("utf-8"))["examples"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(str(path), None, "examples", f'expected {{"examples": [...]}}: {err}') from err
    examples = []
    for i, record in enumerate(records):
        for field in ("input", "target"):
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(str(path), None, f"examples[{i}].{field}", "expected a string")
        examples.append(Example(task, i, record["input"], record["target"]))
    return examples


def sample_examples(by_task: dict[str, list[Example]], max_per_task: int | None) -> dict[str, list[Example]]:
    """At most `max_per_task` examples of each task (module docstring); None or 0 keeps all."""
    if not max_per_task:
        return by_task
    rng = random.Random(SAMPLE_SEED)
    return {
        task: rng.sample(examples, max_per_task) if len(examples) > max_per_task else examples
        for task, examples in sorted(by_task.items())
    }


def build_prompt(cot_prompt: str, example: Example, chat: bool) -> str:
    """The worked examples and the question; a plain prompt ends in "\\nA:", a chat prompt's reply starts
    with it instead (`PromptEncoder.encode_with_reply_start`)."""
    text = cot_prompt.strip() + "\n\nQ: " + example.input
    return text if chat else text + "\n" + CHAT_REPLY_START


def extract_answer(output: str) -> tuple[str, bool]:
    """(prediction, whether it followed "So the answer is") of a generated output."""
    found = _ANSWER.search(output)
    if found:
        return found.group(1).strip(), True
    return output.strip().split("\n\n")[0].strip(), False


def bbh_metrics(
    examples: Sequence[Example], predictions: Sequence[str], found: Sequence[bool]
) -> dict[str, Any]:
    """Exact match (x100, 4 decimals) per task and its mean over tasks."""
    per_task: dict[str, dict[str, Any]] = {}
    for example, prediction, had_phrase in zip(examples, predictions, found, strict=True):
        task = per_task.setdefault(example.task, {"num_examples": 0, "correct": 0, "no_answer": 0})
        task["num_examples"] += 1
        task["correct"] += tulu_match(prediction, example.target)
        task["no_answer"] += not had_phrase
    scores = {
        name: {
            "num_examples": t["num_examples"],
            "exact_match": round(100 * t["correct"] / t["num_examples"], 4),
            "no_answer": t["no_answer"],
        }
        for name, t in sorted(per_task.items())
    }
    mean = sum(t["correct"] / t["num_examples"] for t in per_task.values()) / len(per_task)
    return {
        "overall": {
            "num_tasks": len(per_task),
            "num_examples": len(examples),
            "exact_match": round(100 * mean, 4),
        },
        "per_task": scores,
    }
