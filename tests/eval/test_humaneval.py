from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval import humaneval
from lmadapt.eval.sandbox import Sandbox

# Two problems in the official release's layout (HumanEval.jsonl.gz, one JSON object a line).
PROBLEMS = [
    {
        "task_id": "HumanEval/0",
        "prompt": 'def add(a, b):\n    """Sum of a and b.\n    >>> add(1, 2)\n    3\n    """\n',
        "canonical_solution": "    return a + b\n",
        "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
        "    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    },
    {
        "task_id": "HumanEval/1",
        "prompt": "from typing import List\n\n\ndef negate(xs: List[int]) -> List[int]:\n",
        "canonical_solution": "    return [-x for x in xs]\n",
        "test": "def check(candidate):\n    assert candidate([1, -2]) == [-1, 2]\n",
        "entry_point": "negate",
    },
]


def write_humaneval(path: Path, problems: list[dict] = PROBLEMS) -> Path:
    text = "".join(json.dumps(problem) + "\n" for problem in problems)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["HumanEval.jsonl.gz", "HumanEval.jsonl"])
def test_loader_reads_the_official_layout(tmp_path: Path, name: str) -> None:
    problems = humaneval.load_problems(write_humaneval(tmp_path / name))
    assert [p.task_id for p in problems] == ["HumanEval/0", "HumanEval/1"]
    first = problems[0]
    assert first.prompt == PROBLEMS[0]["prompt"]
    assert first.instruction == "Complete the following python function.\n\n\n" + PROBLEMS[0]["prompt"]
    assert first.reply_start == "Here is the completed function:\n\n\n" + PROBLEMS[0]["prompt"]
    assert first.program("    return a + b\n") == (
        PROBLEMS[0]["prompt"] + "    return a + b\n" + "\n" + PROBLEMS[0]["test"] + "\n" + "check(add)"
    )


def test_loader_names_the_bad_record(tmp_path: Path) -> None:
    bad = [PROBLEMS[0], {**PROBLEMS[1], "entry_point": None}]
    with pytest.raises(DataError, match=r"HumanEval.jsonl:2: field 'entry_point'"):
        humaneval.load_problems(write_humaneval(tmp_path / "HumanEval.jsonl", bad))
    with pytest.raises(DataError, match="appears twice"):
        humaneval.load_problems(write_humaneval(tmp_path / "twice.jsonl", [PROBLEMS[0], PROBLEMS[0]]))


def test_canonical_solutions_pass_and_wrong_ones_fail_in_the_sandbox(tmp_path: Path) -> None:
    problems = humaneval.load_problems(write_humaneval(tmp_path / "HumanEval.jsonl"))
    sandbox = Sandbox()
    for problem, record in zip(problems, PROBLEMS, strict=True):
        assert sandbox.run(problem.program(record["canonical_solution"])).passed
    wrong = sandbox.run(problems[0].program("    return a - b\n"))
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    # A completion that runs past the function (stop sequences missed) still has to define it.
    assert sandbox.run(problems[1].program("    pass\nprint('x')")).status == "failed"
