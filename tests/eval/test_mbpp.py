from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval import mbpp
from lmadapt.eval.sandbox import Sandbox

# The original MBPP release (mbpp.jsonl): code with Windows line ends, setup code, asserts.
ORIGINAL = {
    "text": "Write a function to find the shared elements from the given two lists.",
    "code": "def similar_elements(test_tup1, test_tup2):\r\n"
    "  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
    "task_id": 2,
    "test_setup_code": "",
    "test_list": [
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
    ],
    "challenge_test_list": [],
}
# The sanitized / MBPP+ layout: "prompt" is the description, imports apart, "test" the full test code.
PLUS = {
    "task_id": 3,
    "prompt": "Write a python function to identify non-prime numbers.",
    "code": "import math\ndef is_not_prime(n):\n"
    "    return any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))",
    "test_imports": ["import math"],
    "test_list": ["assert is_not_prime(2) == False"],
    "test": "assert is_not_prime(10) == True\nassert is_not_prime(35) == True\n",
}


def write_mbpp(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_loader_reads_both_layouts_with_open_instructs_prompt(tmp_path: Path) -> None:
    original, plus = mbpp.load_problems(write_mbpp(tmp_path / "mbpp.jsonl", [ORIGINAL, PLUS]))
    assert (original.task_id, plus.task_id) == ("2", "3")
    # description and signature joined as open-instruct joins them (no separator)
    assert original.instruction == (
        "Complete the following python function.\n\n\nWrite a function to find the shared elements from the "
        "given two lists.def similar_elements(test_tup1, test_tup2)"
    )
    assert original.reply_start == "Here is the completed function:\n\n\n```python\n"
    assert original.prompt == original.instruction + "\n\n" + original.reply_start
    assert plus.instruction.endswith("non-prime numbers.import math\ndef is_not_prime(n)")
    # The program is the completion and the tests: setup + asserts, or MBPP+'s test code.
    assert original.program("CODE") == "CODE\n\n" + "\n".join(ORIGINAL["test_list"])
    assert plus.program("CODE") == "CODE\n" + PLUS["test"]


def test_reference_solutions_pass_and_wrong_ones_fail(tmp_path: Path) -> None:
    problems = mbpp.load_problems(write_mbpp(tmp_path / "mbpp.jsonl", [ORIGINAL, PLUS]))
    sandbox = Sandbox()
    for problem, record in zip(problems, [ORIGINAL, PLUS], strict=True):
        assert sandbox.run(problem.program(record["code"])).passed
    wrong = "def similar_elements(a, b):\n    return ()\n"
    assert sandbox.run(problems[0].program(wrong)).status == "failed"


def test_loader_names_the_bad_record(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mbpp.jsonl:2: field 'test_list'"):
        mbpp.load_problems(write_mbpp(tmp_path / "mbpp.jsonl", [ORIGINAL, {**ORIGINAL, "test_list": []}]))
    no_code = {key: value for key, value in ORIGINAL.items() if key != "code"}
    with pytest.raises(DataError, match=r"mbpp.jsonl:1: field 'code'"):
        mbpp.load_problems(write_mbpp(tmp_path / "mbpp.jsonl", [no_code]))
