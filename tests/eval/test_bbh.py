from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval import bbh
from lmadapt.eval.bbh import Example

COT = (
    "Evaluate the result of a random Boolean expression.\n"
    "\n"
    "Q: not ( True ) and ( True ) is\n"
    "A: Let's think step by step.\nnot True = False. So the answer is False.\n"
)


def write_bbh(root: Path, tasks: dict[str, list[dict]], cot: dict[str, str] | None = None) -> Path:
    """Tasks in the official layout: bbh/<task>.json and cot-prompts/<task>.txt (a canary line, "-----")."""
    (root / "bbh").mkdir(parents=True)
    (root / "cot-prompts").mkdir()
    for name, examples in tasks.items():
        (root / "bbh" / f"{name}.json").write_text(json.dumps({"examples": examples}), encoding="utf-8")
    for name in cot if cot is not None else tasks:
        text = (cot or {}).get(name, COT)
        (root / "cot-prompts" / f"{name}.txt").write_text(f"CANARY GUID\n-----\n{text}", encoding="utf-8")
    return root


def test_loader_strips_the_header_and_matches_tasks(tmp_path: Path) -> None:
    data = write_bbh(tmp_path / "ok", {"b_task": [{"input": "x", "target": "y"}], "a_task": []})
    prompts = bbh.load_tasks(data)
    assert list(prompts) == ["a_task", "b_task"] and prompts["b_task"] == COT
    assert bbh.load_examples(data, "b_task") == [Example("b_task", 0, "x", "y")]

    data = write_bbh(tmp_path / "mismatch", {"a": [], "b": []}, cot={"a": COT, "c": COT})
    with pytest.raises(DataError, match="differ in tasks: b, c"):
        bbh.load_tasks(data)
    data = write_bbh(tmp_path / "bad", {"t": [{"input": "x"}]})
    with pytest.raises(DataError, match=r"examples\[0\]\.target"):
        bbh.load_examples(data, "t")
    with pytest.raises(DataError, match="BBH layout"):
        bbh.load_tasks(tmp_path / "nowhere")


def test_prompt_is_tulus_text() -> None:
    example = Example("t", 0, "True and False is", "False")
    expected = (
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( True ) and ( True ) is\n"
        "A: Let's think step by step.\nnot True = False. So the answer is False.\n\n"
        "Q: True and False is"
    )
    assert bbh.build_prompt(COT, example, chat=True) == expected
    assert bbh.build_prompt(COT, example, chat=False) == expected + "\nA:"


@pytest.mark.parametrize(
    ("output", "prediction", "found"),
    [
        (" Let's see. So the answer is (B). Then So the answer is (C).", "(B)", True),
        ("So the answer is  valid .", "valid", True),
        ("So the answer is 3.5.", "3", True),  # up to the first period, as Tulu's pattern reads it
        ("the answer is yes.", "the answer is yes.", False),  # the phrase is case-sensitive
        ("\n  No idea\nreally.\n\nQ: next", "No idea\nreally.", False),
        ("So the answer is yes", "So the answer is yes", False),  # no period: no match
    ],
)
def test_answer_extraction(output: str, prediction: str, found: bool) -> None:
    assert bbh.extract_answer(output) == (prediction, found)


def test_metrics_average_over_tasks_by_hand() -> None:
    examples = [Example("a", 0, "", "x"), Example("b", 0, "", "y"), Example("b", 1, "", "z")]
    metrics = bbh.bbh_metrics(examples, ["X", "y", "w"], [True, False, True])
    # task a: 1/1, task b: 1/2 -> mean of tasks 75 (the micro figure, 2/3, is not Tulu's)
    assert metrics == {
        "overall": {"num_tasks": 2, "num_examples": 3, "exact_match": 75.0},
        "per_task": {
            "a": {"num_examples": 1, "exact_match": 100.0, "no_answer": 0},
            "b": {"num_examples": 2, "exact_match": 50.0, "no_answer": 1},
        },
    }


def test_sampling_is_seeded_in_sorted_task_order() -> None:
    by_task = {
        name: [Example(name, i, "", "") for i in range(n)] for name, n in [("z", 9), ("a", 5), ("m", 2)]
    }
    sampled = bbh.sample_examples(by_task, 3)
    rng = random.Random(42)
    assert sampled["a"] == rng.sample(by_task["a"], 3)
    assert sampled["m"] == by_task["m"]  # fewer than the limit: all, and no draw
    assert sampled["z"] == rng.sample(by_task["z"], 3)
    assert bbh.sample_examples(by_task, 0) == by_task
