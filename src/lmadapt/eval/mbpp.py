"""MBPP-style problems with open-instruct's prompt (eval/mbpp, 2024; MBPP is not among Tulu 2's numbers).

File: JSONL(.gz), one problem a line, in the original MBPP layout {"task_id", "text", "code", "test_list",
"test_setup_code"?} or the sanitized/MBPP+ one {"task_id", "prompt" (the description), "code",
"test_list", "test_imports"?, "test"?}. The tests are "test" when present (MBPP+'s full test code), else
the setup code or imports followed by the asserts of "test_list".

Prompt: the description followed directly by the reference code up to its first ":" (the function's
signature; open-instruct joins them without a separator). Through a chat template the user turn is
"Complete the following python function.\\n\\n\\n" + that, and the reply starts with "Here is the completed
function:\\n\\n\\n```python\\n"; the model writes the whole function and stops at "```". The program is the
completion + "\\n" + the tests, as open-instruct runs it (10 seconds each). open-instruct's plain prompt
is the bare description and signature, whose completion alone cannot define the function; a plain model
here is shown the chat prompt's text instead (instruction, a blank line, the reply start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmadapt.data.formats import read_records
from lmadapt.errors import DataError
from lmadapt.eval.code_eval import CodeProblem, Protocol, checked

INSTRUCTION = "Complete the following python function.\n\n\n"
REPLY_START = "Here is the completed function:\n\n\n```python\n"


def _string(record: dict[str, Any], name: str, path: str | Path, line: int) -> str:
    if not isinstance(record.get(name), str):
        raise DataError(str(path), line, name, "expected a string")
    return record[name]


def _tests(record: dict[str, Any], path: str | Path, line: int) -> str:
    if "test" in record:
        return _string(record, "test", path, line)
    asserts = record.get("test_list")
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) for a in asserts):
        raise DataError(str(path), line, "test_list", "expected a non-empty list of assert strings")
    imports = record.get("test_imports") or []
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise DataError(str(path), line, "test_imports", "expected a list of strings")
    setup = record.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise DataError(str(path), line, "test_setup_code", "expected a string")
    return "\n".join([*imports, setup, *asserts])


def load_problems(path: str | Path) -> list[CodeProblem]:
    """The problems of an MBPP-style JSONL(.gz) file, in file order; a bad record is a DataError naming it."""
    problems = []
    for line, record in read_records(path):
        description_field = "text" if "text" in record else "prompt"
        description = _string(record, description_field, path, line)
        signature = _string(record, "code", path, line).split(":")[0]
        task_id = record.get("task_id")
        if not isinstance(task_id, int | str):
            raise DataError(str(path), line, "task_id", "expected a number or string")
        instruction = INSTRUCTION + description + signature
        problems.append(
            CodeProblem(
                task_id=str(task_id),
                prompt=instruction + "\n\n" + REPLY_START,
                instruction=instruction,
                reply_start=REPLY_START,
                head="",
                tests="\n" + _tests(record, path, line),
            )
        )
    return checked(problems, path)


PROTOCOL = Protocol(
    name="mbpp",
    title="MBPP (open-instruct prompt)",
    load=load_problems,
    stop=("```",),
    samples=20,
    temperature=0.1,
    top_p=1.0,
    max_new_tokens=512,
    timeout_s=10.0,
)
