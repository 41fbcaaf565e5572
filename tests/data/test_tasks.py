from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.data.tasks import (
    Demonstration,
    Instance,
    PromptEncoding,
    Task,
    encode_instance,
    encode_instruction,
    encode_prompt,
    load_task_json,
    save_task_json,
)
from lmadapt.errors import ConfigError, DataError

SUPERNI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superni"


def task_record() -> dict:
    return {
        "Contributors": ["Ann"],
        "Source": ["copa"],
        "URL": ["https://example.org"],
        "Categories": ["Cause Effect Classification"],
        "Reasoning": ["Commonsense Reasoning"],
        "Definition": ["Pick the more plausible cause", "an unused second definition"],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Commonsense"],
        "Positive Examples": [
            {"input": "The man fell.", "output": "He slipped", "explanation": "Slipping causes falls"},
            {"input": "It rained?", "output": "clouds!", "explanation": ""},
            {"input": "third", "output": "unused", "explanation": ""},
        ],
        "Negative Examples": [{"input": "The cup broke", "output": "joy", "explanation": "not a cause"}],
        "Instances": [
            {"id": "task1-ab12", "input": "The door opened", "output": ["wind", "a person"]},
            {"id": "task1-cd34", "input": "x", "output": ["y"]},
        ],
        "Instance License": ["MIT"],
    }


def write(tmp_path: Path, record, name: str = "task1_copa.json") -> Path:
    path = tmp_path / name
    path.write_text(record if isinstance(record, str) else json.dumps(record), encoding="utf-8")
    return path


def test_load_reads_every_field(tmp_path):
    task = load_task_json(write(tmp_path, task_record()))
    assert task.name == "task1_copa"
    assert task.definition == "Pick the more plausible cause"
    assert task.positive_examples[0] == Demonstration("The man fell.", "He slipped", "Slipping causes falls")
    assert len(task.positive_examples) == 3
    assert task.negative_examples == [Demonstration("The cup broke", "joy", "not a cause")]
    assert task.instances == [
        Instance("task1-ab12", "The door opened", ["wind", "a person"]),
        Instance("task1-cd34", "x", ["y"]),
    ]
    assert task.categories == ["Cause Effect Classification"]
    assert (task.source, task.contributors, task.url) == (["copa"], ["Ann"], ["https://example.org"])
    assert (task.reasoning, task.domains) == (["Commonsense Reasoning"], ["Commonsense"])
    assert task.instance_license == ["MIT"]


def test_save_then_load_round_trips(tmp_path):
    task = load_task_json(write(tmp_path, task_record()))
    out = tmp_path / "again" / "task1_copa.json"
    save_task_json(task, out)
    assert load_task_json(out) == task
    written = json.loads(out.read_text(encoding="utf-8"))
    expected = task_record()
    expected["Definition"] = expected["Definition"][:1]
    assert written == expected
    assert list(written) == list(expected)


def test_missing_metadata_defaults(tmp_path):
    record = {k: v for k, v in task_record().items() if k in {"Definition", "Categories", "Instances"}}
    record |= {"Positive Examples": [], "Negative Examples": []}
    task = load_task_json(write(tmp_path, record))
    assert task.source == [] and task.input_language == ["English"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("Definition"), "Definition"),
        (lambda r: r.update(Definition="just a string"), "Definition"),
        (lambda r: r.update(Definition=[]), "Definition"),
        (lambda r: r.pop("Instances"), "Instances"),
        (lambda r: r["Instances"][1].pop("output"), "Instances[1].output"),
        (lambda r: r["Instances"][0].update(output="wind"), "Instances[0].output"),
        (lambda r: r["Instances"][0].update(output=["wind", 3]), "Instances[0].output[1]"),
        (lambda r: r["Positive Examples"][1].pop("input"), "Positive Examples[1].input"),
        (lambda r: r.pop("Categories"), "Categories"),
        (lambda r: r.update(Source="copa"), "Source"),
    ],
)
def test_bad_field_names_file_and_field(tmp_path, mutate, field):
    record = task_record()
    mutate(record)
    path = write(tmp_path, record)
    with pytest.raises(DataError) as err:
        load_task_json(path)
    assert err.value.field == field
    assert err.value.path == str(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path, '{\n "Definition": ["x"],\n oops\n}')
    with pytest.raises(DataError) as err:
        load_task_json(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert "invalid JSON" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("def", PromptEncoding(True, 0, 0, False)),
        ("def+2pos", PromptEncoding(True, 2, 0, False)),
        ("def+2pos+2neg", PromptEncoding(True, 2, 2, False)),
        ("def+2pos+expl", PromptEncoding(True, 2, 0, True)),
        ("DEF + 1pos + 3neg + expl", PromptEncoding(True, 1, 3, True)),
        ("2pos", PromptEncoding(False, 2, 0, False)),
    ],
)
def test_encoding_parse(spec, expected):
    assert PromptEncoding.parse(spec) == expected
    assert PromptEncoding.parse(str(expected)) == expected


@pytest.mark.parametrize("spec", ["", "definition", "def+pos", "def+2pos+3pos", "expl", "def+def"])
def test_encoding_parse_rejects(spec):
    with pytest.raises(ConfigError):
        PromptEncoding.parse(spec)


def small_task() -> Task:
    return Task(
        name="t",
        definition=" Reverse the words ",
        positive_examples=[Demonstration("a b", "b a", "swap them"), Demonstration("x y z?", "z y x.", "")],
        negative_examples=[Demonstration("c d", "c d", "copied")],
        instances=[Instance("t-0", "p q", ["q p"])],
        categories=["reverse"],
    )


def test_prompt_def_only_matches_tk_instruct_text():
    text = encode_prompt(small_task(), " p q ", PromptEncoding.parse("def"))
    tail = "Now complete the following example -\nInput: p q.\nOutput: "
    assert text == "Definition: Reverse the words.\n\n" + tail


def test_prompt_with_demonstrations_matches_tk_instruct_text():
    text = encode_prompt(small_task(), "p q!", PromptEncoding.parse("def+2pos+1neg+expl"))
    assert text == (
        "Definition: Reverse the words.\n\n"
        " Positive Example 1 -\nInput: a b.\n Output: b a.\n Explanation: swap them.\n\n"
        " Positive Example 2 -\nInput: x y z?\n Output: z y x.\n\n"
        " Negative Example 1 -\nInput: c d.\n Output: c d.\n Explanation: copied.\n\n"
        "Now complete the following example -\nInput: p q!\nOutput: "
    )


def test_explanations_only_when_asked_and_examples_capped():
    text = encode_prompt(small_task(), "p", PromptEncoding.parse("5pos"))
    assert "Explanation" not in text and "Definition" not in text
    assert text.count("Positive Example") == 2


def test_instruction_and_instance_split_the_prompt():
    task, encoding = small_task(), PromptEncoding.parse("def+2pos")
    instruction = encode_instruction(task, encoding)
    assert "p q" not in instruction and instruction.startswith("Definition:")
    assert encode_instance("p q") == "Now complete the following example -\nInput: p q.\nOutput: "
    assert instruction + encode_instance("p q") == encode_prompt(task, "p q", encoding)


def test_real_superni_tasks_load():
    if not SUPERNI.is_dir():
        pytest.skip("shared SuperNI sample not present")
    names = ["task020_mctaco_span_based_question", "task1393_superglue_copa_text_completion"]
    names.append((SUPERNI / "splits" / "default" / "test_tasks.txt").read_text().split()[0])
    for name in names:
        path = SUPERNI / "tasks" / f"{name}.json"
        if not path.exists():
            pytest.skip(f"{path} not present")
        raw = json.loads(path.read_text(encoding="utf-8"))
        task = load_task_json(path)
        assert task.name == name
        assert task.definition == raw["Definition"][0]
        assert task.categories == raw["Categories"] and task.categories
        assert len(task.instances) == len(raw["Instances"]) > 0
        assert task.instances[0].id.startswith(name.split("_")[0] + "-")
        assert task.instances[0].outputs == raw["Instances"][0]["output"]
        assert [d.output for d in task.positive_examples] == [d["output"] for d in raw["Positive Examples"]]
        prompt = encode_prompt(task, task.instances[0].input, PromptEncoding.parse("def+2pos"))
        assert prompt.startswith("Definition: ") and prompt.endswith("\nOutput: ")
        assert prompt.count("Positive Example") == min(2, len(task.positive_examples))


def test_compact_encoding_drops_only_the_instance_header():
    task = Task(
        name="t",
        definition="Reverse the list",
        positive_examples=[],
        negative_examples=[],
        instances=[],
        categories=["c"],
    )
    full = encode_prompt(task, "a b", PromptEncoding.parse("def"))
    compact = encode_prompt(task, "a b", PromptEncoding.parse("def+compact"))
    assert (
        full == "Definition: Reverse the list.\n\nNow complete the following example -\nInput: a b.\nOutput: "
    )
    assert compact == "Definition: Reverse the list.\n\nInput: a b.\nOutput: "
    assert str(PromptEncoding.parse("def+2pos+compact")) == "def+2pos+compact"
