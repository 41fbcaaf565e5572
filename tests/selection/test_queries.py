from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.config import QuerySourceConfig
from lmadapt.data.tasks import Instance, Task, save_task_json
from lmadapt.errors import DataError
from lmadapt.selection.queries import read_queries


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompt_files_in_any_format_give_their_prompts_and_tasks(tmp_path):
    path = _write(
        tmp_path / "targets.jsonl",
        [
            {"input": "rev abc"},
            {"prompt": "rev xyz", "completion": "zyx", "task": "other"},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"instruction": "add", "input": "1 2"},
        ],
    )
    queries = read_queries([QuerySourceConfig(path=str(path))])
    assert [q.task for q in queries] == ["targets", "other", "targets", "targets"]
    assert [q.messages[-1]["content"] for q in queries] == ["rev abc", "rev xyz", "hi", "add\n\n1 2"]
    assert all(m["role"] != "assistant" for q in queries for m in q.messages)
    assert queries[1].origin == f"{path}:2"
    named = read_queries([QuerySourceConfig(path=str(path), task="mine")])
    assert [q.task for q in named] == ["mine", "other", "mine", "mine"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"input": ""}, "input"),
        ({"input": 3}, "input"),
        ({"prompt": ["x"]}, "prompt[0]"),
        ({"input": "x", "task": 5}, "task"),
        ({"messages": [{"role": "assistant", "content": "only a reply"}]}, "messages"),
        ({"label": "x"}, None),
    ],
)
def test_bad_query_rows_name_file_line_and_field(tmp_path, row, field):
    path = _write(tmp_path / "q.jsonl", [{"input": "fine"}, "", row])
    with pytest.raises(DataError) as err:
        read_queries([QuerySourceConfig(path=str(path))])
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 3, field)


def test_invalid_json_line_is_a_data_error(tmp_path):
    path = _write(tmp_path / "q.jsonl", [{"input": "fine"}, "{not json"])
    with pytest.raises(DataError, match=r"q.jsonl:2: invalid JSON"):
        read_queries([QuerySourceConfig(path=str(path))])


def _task(name: str, inputs: list[str]) -> Task:
    instances = [Instance(f"{name}-{i}", x, ["?"]) for i, x in enumerate(inputs)]
    return Task(name, "reverse the list", [], [], instances, ["reverse"])


def test_superni_task_file_and_clone_give_tk_instruct_prompts(tmp_path):
    save_task_json(_task("task_a", ["a b", "c d", "e f"]), tmp_path / "clone" / "tasks" / "task_a.json")
    save_task_json(_task("task_b", ["g h"]), tmp_path / "clone" / "tasks" / "task_b.json")
    (tmp_path / "clone" / "splits" / "default").mkdir(parents=True)
    (tmp_path / "clone" / "splits" / "default" / "test_tasks.txt").write_text("task_b\ntask_a\n")
    single = read_queries(
        [QuerySourceConfig(path=str(tmp_path / "clone" / "tasks" / "task_a.json"), encoding="def")]
    )
    assert [q.task for q in single] == ["task_a"] * 3
    assert single[0].messages == [
        {
            "role": "user",
            "content": "Definition: reverse the list.\n\n"
            "Now complete the following example -\nInput: a b.\nOutput: ",
        }
    ]
    assert single[0].origin.endswith("task_a.json#task_a-0")
    clone = read_queries([QuerySourceConfig(path=str(tmp_path / "clone"), max_instances=2)])
    assert [(q.task, q.origin.rsplit("#", 1)[1]) for q in clone] == [
        ("task_b", "task_b-0"),
        ("task_a", "task_a-0"),
        ("task_a", "task_a-1"),
    ]
