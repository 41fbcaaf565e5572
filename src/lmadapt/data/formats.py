"""Read instruction data files and normalise every record to a list of {"role", "content"} messages.

Supported record formats (chosen per file from the first record's keys when format="auto"):
  messages           {"messages": [{"role": ..., "content": ...}, ...]}
  prompt_completion  {"prompt": str | messages, "completion": str | messages}
  alpaca             {"instruction": str, "input": str (optional), "output": str}
  sharegpt           {"conversations": [{"from": "human" | "gpt" | "system" | ..., "value": str}, ...]}
Supported sources: .jsonl (or .jsonl.gz), .json (a JSON array, or JSON lines), .parquet, and directories
written by `datasets.Dataset.save_to_disk`. Every invalid record raises DataError naming the file, the 1-based
line (JSON lines), element (JSON array) or row (Parquet, saved dataset), and the offending field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.errors import ConfigError, DataError, LmadaptError

ROLES = ("system", "user", "assistant")
FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
}

Messages = list[dict[str, str]]


@dataclass
class Conversation:
    """One normalised training conversation and where it came from (for error messages and logs)."""

    messages: Messages
    source: str
    line: int


@dataclass(frozen=True)
class RecordLocation:
    """Location of one record; `unit` says what `line` counts so messages can say so."""

    path: str
    line: int
    unit: str  # "line", "element" (JSON array) or "row" (Parquet, saved dataset)

    def error(self, field: str | None, message: str) -> DataError:
        if self.unit != "line":
            message = f"{message} ({self.unit} {self.line})"
        return DataError(self.path, self.line, field, message)


def record_unit(path: Path) -> str:
    if path.is_dir() or path.suffix == ".parquet":
        return "row"
    if path.suffix == ".json":
        with path.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return "element" if head.startswith(b"[") else "line"
    return "line"


def _decode(raw: bytes, where: RecordLocation) -> str:
    try:
        return raw.decode("utf-8-sig" if where.line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise where.error(None, f"invalid UTF-8 at byte {e.start} of the line: {e.reason}") from None


def _read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            where = RecordLocation(str(path), number, "line")
            text = _decode(raw, where)
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise where.error(None, f"invalid JSON: {e.msg} (column {e.colno})") from None
            yield number, _require_object(record, where)


def _read_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(str(path), line, None, f"invalid UTF-8: {e.reason}") from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    for number, record in enumerate(records, start=1):
        yield number, _require_object(record, RecordLocation(str(path), number, "element"))


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except pa.ArrowException as e:
        raise LmadaptError(f"{path}: not a readable Parquet file ({e})") from None
    number = 0
    for batch in batches:
        for record in batch.to_pylist():
            number += 1
            yield number, record


def _read_saved_dataset(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise LmadaptError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise LmadaptError(f"{path}: saved DatasetDict has no 'train' split (splits: {list(dataset)})")
        dataset = dataset["train"]
    yield from enumerate(dataset, start=1)


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, record) for every record of a data file or saved dataset directory.

    line is 1-based: the physical line for JSON lines (blank lines are skipped but counted), the element
    number for a JSON array, the row number for Parquet files and saved datasets.
    """
    path = existing_file(path)
    if path.is_dir():
        yield from _read_saved_dataset(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    elif record_unit(path) == "element":
        yield from _read_json_array(path)
    elif path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz"):
        yield from _read_json_lines(path)
    else:
        raise LmadaptError(
            f"{path}: unsupported data file type (use .jsonl(.gz), .json, .parquet or a saved dataset)"
        )


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise LmadaptError(f"data file not found: {path}")
    return path


def _require_object(record: Any, where: RecordLocation) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise where.error(None, f"record is not a JSON object (got {type(record).__name__})")
    return record


def _field(
    record: dict[str, Any], name: str, where: RecordLocation, kind: type, label: str | None = None
) -> Any:
    """record[name], checked for presence and type; label is the field path used in errors."""
    label = label or name
    if name not in record or record[name] is None:
        raise where.error(label, "missing required field")
    value = record[name]
    if not isinstance(value, kind):
        raise where.error(label, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def required_text(record: dict[str, Any], name: str, where: RecordLocation, label: str | None = None) -> str:
    value = _field(record, name, where, str, label)
    if not value.strip():
        raise where.error(label or name, "content is empty")
    return value


def message_list(value: Any, label: str, where: RecordLocation) -> Messages:
    if not isinstance(value, list):
        raise where.error(label, f"expected a list of messages, got {type(value).__name__}")
    messages = []
    for index, message in enumerate(value):
        item = f"{label}[{index}]"
        if not isinstance(message, dict):
            raise where.error(item, f"expected an object, got {type(message).__name__}")
        role = _field(message, "role", where, str, f"{item}.role")
        if role not in ROLES:
            raise where.error(f"{item}.role", f"unknown role '{role}' (expected one of {', '.join(ROLES)})")
        messages.append(
            {"role": role, "content": required_text(message, "content", where, f"{item}.content")}
        )
    return messages


def _turn_or_messages(record: dict[str, Any], name: str, role: str, where: RecordLocation) -> Messages:
    """A prompt/completion field: a plain string is one `role` turn, a list is a message list."""
    if isinstance(record.get(name), list):
        return message_list(record[name], name, where)
    return [{"role": role, "content": required_text(record, name, where)}]


def _parse_messages(record: dict[str, Any], where: RecordLocation) -> Messages:
    return message_list(_field(record, "messages", where, list), "messages", where)


def _parse_prompt_completion(record: dict[str, Any], where: RecordLocation) -> Messages:
    prompt = _turn_or_messages(record, "prompt", "user", where)
    return prompt + _turn_or_messages(record, "completion", "assistant", where)


def _alpaca_prompt(record: dict[str, Any], where: RecordLocation) -> str:
    instruction = required_text(record, "instruction", where)
    extra = record.get("input")
    if extra is not None and not isinstance(extra, str):
        raise where.error("input", f"expected str, got {type(extra).__name__}")
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def _parse_alpaca(record: dict[str, Any], where: RecordLocation) -> Messages:
    return [
        {"role": "user", "content": _alpaca_prompt(record, where)},
        {"role": "assistant", "content": required_text(record, "output", where)},
    ]


def _parse_sharegpt(record: dict[str, Any], where: RecordLocation) -> Messages:
    turns = _field(record, "conversations", where, list)
    messages = []
    for index, turn in enumerate(turns):
        item = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise where.error(item, f"expected an object, got {type(turn).__name__}")
        speaker = _field(turn, "from", where, str, f"{item}.from")
        if speaker.lower() not in SHAREGPT_ROLES:
            known = ", ".join(SHAREGPT_ROLES)
            raise where.error(f"{item}.from", f"unknown speaker '{speaker}' (expected one of {known})")
        content = required_text(turn, "value", where, f"{item}.value")
        messages.append({"role": SHAREGPT_ROLES[speaker.lower()], "content": content})
    return messages


# format -> (parser, the field named when a conversation has no assistant turn)
_PARSERS: dict[str, tuple[Callable[[dict[str, Any], RecordLocation], Messages], str]] = {
    "messages": (_parse_messages, "messages"),
    "prompt_completion": (_parse_prompt_completion, "completion"),
    "alpaca": (_parse_alpaca, "output"),
    "sharegpt": (_parse_sharegpt, "conversations"),
}


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record's keys indicate, or None when they match no known format."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    if "prompt" in record or "completion" in record:
        return "prompt_completion"
    return None


def load_conversations(path: str | Path, format: str = "auto") -> list[Conversation]:
    """Read and validate every record of `path` as a conversation with at least one assistant turn."""
    conversations = list(iter_conversations(path, format))
    if not conversations:
        raise DataError(str(path), None, None, "no records found")
    return conversations


def iter_conversations(path: str | Path, format: str = "auto") -> Iterator[Conversation]:
    """`load_conversations` one record at a time (a pool of millions is streamed, never held)."""
    if format != "auto" and format not in _PARSERS:
        raise ConfigError(f"unknown data format '{format}' (expected auto or one of {', '.join(FORMATS)})")
    path = existing_file(path)
    unit = record_unit(path)
    fmt = None if format == "auto" else format
    for line, record in read_records(path):
        where = RecordLocation(str(path), line, unit)
        if fmt is None:
            fmt = detect_format(record)
            if fmt is None:
                keys = ", ".join(sorted(record)) or "none"
                raise where.error(
                    None, f"unknown format: record keys ({keys}) match none of {', '.join(FORMATS)}"
                )
        parse, turns_field = _PARSERS[fmt]
        messages = parse(record, where)
        if not any(m["role"] == "assistant" for m in messages):
            raise where.error(turns_field, "conversation has no assistant turn")
        yield Conversation(messages, str(path), line)


def prompt_part(messages: Messages) -> Messages:
    """The messages before the last assistant turn (all of them when there is none): what a model reads."""
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return messages[: replies[-1]] if replies else messages


def parse_prompt(record: dict[str, Any], where: RecordLocation) -> Messages:
    """The prompt of a record whose reply may be missing (an unlabelled example of a target task).

    Any SFT format (its prompt part), or {"input": str} as a SuperNI instance holds it.
    """
    fmt = detect_format(record)
    if fmt == "messages":
        messages = prompt_part(message_list(_field(record, "messages", where, list), "messages", where))
    elif fmt == "sharegpt":
        messages = prompt_part(_parse_sharegpt(record, where))
    elif fmt == "alpaca":
        messages = [{"role": "user", "content": _alpaca_prompt(record, where)}]
    elif fmt == "prompt_completion":
        messages = _turn_or_messages(record, "prompt", "user", where)
    elif "input" in record:
        messages = [{"role": "user", "content": required_text(record, "input", where)}]
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise where.error(
            None,
            f"no prompt: record keys ({keys}) hold none of messages, prompt, instruction, conversations, "
            "input",
        )
    if not messages:
        raise where.error(fmt, "no message before the reply")
    return messages
