from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.config import PromptDataConfig
from lmadapt.data.tasks import Demonstration, Instance, Task, save_task_json
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import encode_prompt
from lmadapt.errors import ConfigError, DataError
from lmadapt.rl.prompts import ground_truths, load_prompts


def _write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _load(cfg: PromptDataConfig):
    tokenizer = ByT5Tokenizer()
    return load_prompts(cfg, get_template("tulu", tokenizer), tokenizer)


def test_prompt_and_messages_records_with_every_ground_truth_form(tmp_path):
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
    ]
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"prompt": "rev ab", "ground_truth": "ba"},
            {"messages": conversation, "ground_truth": 4},
            {"prompt": "name one", "ground_truth": ["x", "y"]},
        ],
    )
    prompts = _load(PromptDataConfig(sources=[str(path)]))
    assert [p.ground_truth for p in prompts] == [["ba"], ["4"], ["x", "y"]]
    assert [p.line for p in prompts] == [1, 2, 3]
    tokenizer = ByT5Tokenizer()
    assert prompts[1].prompt_ids == encode_prompt(conversation, get_template("tulu", tokenizer), tokenizer)
    assert ground_truths(prompts[:2], 2) == [["ba"], ["ba"], ["4"], ["4"]]


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"prompt": "q"}, "ground_truth", "missing required field"),
        ({"prompt": "q", "ground_truth": []}, "ground_truth", "empty list"),
        (
            {"prompt": "q", "ground_truth": ["a", {"b": 1}]},
            "ground_truth[1]",
            "expected a string or a number",
        ),
        ({"prompt": "", "ground_truth": "a"}, "prompt", "content is empty"),
        ({"question": "q", "ground_truth": "a"}, "prompt", "give 'prompt' or 'messages'"),
        (
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "ground_truth": 1,
            },
            "messages",
            "must end with a user message",
        ),
    ],
)
def test_a_bad_row_names_file_line_and_field(tmp_path, record, field, message):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "fine", "ground_truth": "a"}, record])
    with pytest.raises(DataError) as error:
        _load(PromptDataConfig(sources=[str(path)]))
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 2, field)
    assert message in str(error.value)


def test_superni_layout_tasks_become_prompts_with_their_outputs_as_ground_truth(tmp_path):
    root = tmp_path / "ni"
    task = Task(
        name="task1_echo",
        definition="Repeat the input.",
        positive_examples=[Demonstration("a", "a"), Demonstration("b", "b")],
        negative_examples=[],
        instances=[Instance(f"echo-{i}", f"word{i}", [f"word{i}", f"WORD{i}"]) for i in range(3)],
        categories=["Text Matching"],
    )
    save_task_json(task, root / "tasks" / "task1_echo.json")
    (root / "splits" / "default").mkdir(parents=True)
    (root / "splits" / "default" / "train_tasks.txt").write_text("task1_echo\n", encoding="utf-8")
    prompts = _load(PromptDataConfig(superni=str(root)))
    assert len(prompts) == 3
    assert {tuple(p.ground_truth) for p in prompts} == {(f"word{i}", f"WORD{i}") for i in range(3)}
    assert all("Repeat the input." in p.messages[0]["content"] for p in prompts)


def test_long_prompts_are_dropped_and_no_prompts_at_all_is_an_error(tmp_path):
    path = _write(
        tmp_path / "p.jsonl", [{"prompt": "x" * 100, "ground_truth": "a"}, {"prompt": "y", "ground_truth": 1}]
    )
    assert len(_load(PromptDataConfig(sources=[str(path)], max_prompt_length=60))) == 1
    with pytest.raises(ConfigError, match="max_prompt_length"):
        _load(PromptDataConfig(sources=[str(path)], max_prompt_length=5))
    with pytest.raises(ConfigError, match="no prompts"):
        _load(PromptDataConfig())
