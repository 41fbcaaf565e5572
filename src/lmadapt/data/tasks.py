"""Task-structured instruction data in the Super-NaturalInstructions layout, and prompt rendering.

A `Task` keeps its definition, demonstrations and instances apart until a prompt is rendered, because
HINT feeds the instruction (definition + demonstrations) to the hypernetwork and only the instance to
the underlying model. `encode_prompt` renders the Tk-Instruct concatenation of both, and is by
construction `encode_instruction(...) + encode_instance(...)`.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmadapt.errors import ConfigError, DataError


@dataclass
class Demonstration:
    """A worked example shown with the instruction (SuperNI "Positive/Negative Examples")."""

    input: str
    output: str
    explanation: str = ""


@dataclass
class Instance:
    """One input to solve and its reference outputs (one or more)."""

    id: str
    input: str
    outputs: list[str]


@dataclass
class Task:
    """One SuperNI task: an instruction, demonstrations, instances and metadata.

    Only the first `Definition` string of a task file is kept. List-valued metadata (source, languages,
    ...) mirror the SuperNI JSON fields of the same name.
    """

    name: str
    definition: str
    positive_examples: list[Demonstration]
    negative_examples: list[Demonstration]
    instances: list[Instance]
    categories: list[str]
    source: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    input_language: list[str] = field(default_factory=lambda: ["English"])
    output_language: list[str] = field(default_factory=lambda: ["English"])
    instruction_language: list[str] = field(default_factory=lambda: ["English"])
    contributors: list[str] = field(default_factory=list)
    url: list[str] = field(default_factory=list)
    instance_license: list[str] = field(default_factory=list)


# Task attribute <-> SuperNI JSON key for the list-of-strings metadata fields, which may be absent.
_METADATA_KEYS = {
    "contributors": "Contributors",
    "source": "Source",
    "url": "URL",
    "reasoning": "Reasoning",
    "input_language": "Input_language",
    "output_language": "Output_language",
    "instruction_language": "Instruction_language",
    "domains": "Domains",
    "instance_license": "Instance License",
}


def _require(record: dict[str, Any], key: str, kind: type, path: Path, where: str) -> Any:
    if key not in record:
        raise DataError(path, None, where + key, "missing field")
    value = record[key]
    if not isinstance(value, kind):
        raise DataError(path, None, where + key, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _string_list(record: dict[str, Any], key: str, path: Path, where: str = "") -> list[str]:
    values = _require(record, key, list, path, where)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(path, None, f"{where}{key}[{i}]", f"expected str, got {type(value).__name__}")
    return values


def _demonstrations(record: dict[str, Any], key: str, path: Path) -> list[Demonstration]:
    demos = []
    for i, item in enumerate(_require(record, key, list, path, "")):
        where = f"{key}[{i}]."
        if not isinstance(item, dict):
            raise DataError(path, None, f"{key}[{i}]", "expected an object")
        explanation = item.get("explanation", "")
        if not isinstance(explanation, str):
            raise DataError(path, None, where + "explanation", "expected str")
        demos.append(
            Demonstration(
                input=_require(item, "input", str, path, where),
                output=_require(item, "output", str, path, where),
                explanation=explanation,
            )
        )
    return demos


def _instances(record: dict[str, Any], path: Path) -> list[Instance]:
    instances = []
    for i, item in enumerate(_require(record, "Instances", list, path, "")):
        where = f"Instances[{i}]."
        if not isinstance(item, dict):
            raise DataError(path, None, f"Instances[{i}]", "expected an object")
        instances.append(
            Instance(
                id=_require(item, "id", str, path, where),
                input=_require(item, "input", str, path, where),
                outputs=_string_list(item, "output", path, where),
            )
        )
    return instances


def load_task_json(path: str | Path) -> Task:
    """Read one SuperNI task file (`tasks/<name>.json`); the task name is the file stem.

    Raises DataError naming the file and the JSON field (e.g. "Instances[3].output") when the file is
    not valid JSON or a field is missing or of the wrong type. Metadata lists may be absent.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, None, f"invalid JSON: {err.msg}") from err
    if not isinstance(record, dict):
        raise DataError(path, None, None, "a task file must hold one JSON object")
    definitions = _string_list(record, "Definition", path)
    if not definitions:
        raise DataError(path, None, "Definition", "empty list")
    metadata = {
        attr: _string_list(record, key, path) for attr, key in _METADATA_KEYS.items() if key in record
    }
    return Task(
        name=path.stem,
        definition=definitions[0],
        positive_examples=_demonstrations(record, "Positive Examples", path),
        negative_examples=_demonstrations(record, "Negative Examples", path),
        instances=_instances(record, path),
        categories=_string_list(record, "Categories", path),
        **metadata,
    )


def task_to_json(task: Task) -> dict[str, Any]:
    """The SuperNI JSON object for a task, keys in the order of the original files."""

    def demos(items: list[Demonstration]) -> list[dict[str, str]]:
        return [{"input": d.input, "output": d.output, "explanation": d.explanation} for d in items]

    meta = {key: list(getattr(task, attr)) for attr, key in _METADATA_KEYS.items()}
    return {
        "Contributors": meta["Contributors"],
        "Source": meta["Source"],
        "URL": meta["URL"],
        "Categories": list(task.categories),
        "Reasoning": meta["Reasoning"],
        "Definition": [task.definition],
        "Input_language": meta["Input_language"],
        "Output_language": meta["Output_language"],
        "Instruction_language": meta["Instruction_language"],
        "Domains": meta["Domains"],
        "Positive Examples": demos(task.positive_examples),
        "Negative Examples": demos(task.negative_examples),
        "Instances": [{"id": x.id, "input": x.input, "output": list(x.outputs)} for x in task.instances],
        "Instance License": meta["Instance License"],
    }


def save_task_json(task: Task, path: str | Path) -> None:
    """Write `task` in the SuperNI task-file layout (readable back with `load_task_json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(task_to_json(task), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


_ENCODING_PART = re.compile(r"(\d+)(pos|neg)")


@dataclass(frozen=True)
class PromptEncoding:
    """Which parts of a task go into the prompt: the Tk-Instruct "def+2pos"-style encodings."""

    add_definition: bool = True
    num_pos: int = 0
    num_neg: int = 0
    add_explanation: bool = False
    # Drops Tk-Instruct's "Now complete the following example -" line: 5 tokens per instance that
    # carry no information, which matters for tiny models trained from scratch (the demo).
    compact: bool = False

    @classmethod
    def parse(cls, spec: str) -> PromptEncoding:
        """Parse "def", "def+2pos", "def+2pos+2neg", "def+2pos+expl", "2pos", "def+compact", ... (parts
        joined by "+")."""
        counts = {"def": 0, "pos": 0, "neg": 0, "expl": 0, "compact": 0}
        seen = []
        for part in (p.strip() for p in spec.lower().split("+")):
            counted = _ENCODING_PART.fullmatch(part)
            kind = counted.group(2) if counted else part
            if not counted and kind not in ("def", "expl", "compact"):
                hint = "use def, <n>pos, <n>neg, expl, compact joined by +"
                raise ConfigError(f"prompt encoding {spec!r}: unknown part {part!r} ({hint})")
            seen.append(kind)
            counts[kind] = int(counted.group(1)) if counted else 1
        if len(set(seen)) != len(seen) or not (counts["def"] or counts["pos"] or counts["neg"]):
            raise ConfigError(f"prompt encoding {spec!r}: a part is repeated or nothing is shown")
        return cls(
            bool(counts["def"]), counts["pos"], counts["neg"], bool(counts["expl"]), bool(counts["compact"])
        )

    def __str__(self) -> str:
        parts = ["def"] if self.add_definition else []
        parts += [f"{self.num_pos}pos"] if self.num_pos else []
        parts += [f"{self.num_neg}neg"] if self.num_neg else []
        parts += ["expl"] if self.add_explanation else []
        parts += ["compact"] if self.compact else []
        return "+".join(parts)


def _end_with_punctuation(text: str) -> str:
    # Tk-Instruct closes every field with a period unless it already ends in punctuation.
    return text if text and text[-1] in string.punctuation else text + "."


def _render_demonstration(kind: str, index: int, demo: Demonstration, add_explanation: bool) -> str:
    # The leading spaces before "Positive Example" and "Output:" are as in the Tk-Instruct collator.
    text = f" {kind} Example {index} -\n"
    text += _end_with_punctuation(f"Input: {demo.input.strip()}") + "\n"
    text += _end_with_punctuation(f" Output: {demo.output.strip()}") + "\n"
    if add_explanation and demo.explanation.strip():
        text += _end_with_punctuation(f" Explanation: {demo.explanation.strip()}") + "\n"
    return text + "\n"


def encode_instruction(task: Task, encoding: PromptEncoding) -> str:
    """The instruction part of a prompt: definition and demonstrations, as Tk-Instruct renders them.

    This is what HINT's hypernetwork reads; it is the same for every instance of the task.
    """
    text = ""
    if encoding.add_definition:
        text += _end_with_punctuation(f"Definition: {task.definition.strip()}") + "\n\n"
    for i, demo in enumerate(task.positive_examples[: encoding.num_pos]):
        text += _render_demonstration("Positive", i + 1, demo, encoding.add_explanation)
    for i, demo in enumerate(task.negative_examples[: encoding.num_neg]):
        text += _render_demonstration("Negative", i + 1, demo, encoding.add_explanation)
    return text


def encode_instance(instance_input: str, compact: bool = False) -> str:
    """The per-instance part of a prompt, ending where the model starts writing its answer."""
    text = "" if compact else "Now complete the following example -\n"
    return text + _end_with_punctuation(f"Input: {instance_input.strip()}") + "\nOutput: "


def encode_prompt(task: Task, instance_input: str, encoding: PromptEncoding) -> str:
    """The full Tk-Instruct source text: instruction followed by the instance."""
    return encode_instruction(task, encoding) + encode_instance(instance_input, encoding.compact)
