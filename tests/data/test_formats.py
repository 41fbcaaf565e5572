from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.data.formats import Conversation, load_conversations, read_records
from lmadapt.errors import ConfigError, DataError, LmadaptError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_messages_jsonl_keeps_physical_line_numbers(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps({"messages": CHAT}) + "\n\n" + json.dumps({"messages": CHAT[1:], "id": 7}) + "\n"
    )
    assert load_conversations(path) == [
        Conversation(CHAT, str(path), 1),
        Conversation(CHAT[1:], str(path), 3),
    ]


def test_messages_extra_keys_are_dropped(tmp_path):
    record = {
        "messages": [{"role": "user", "content": "q", "name": "x"}, {"role": "assistant", "content": "a"}]
    }
    path = write_lines(tmp_path / "d.jsonl", [record])
    assert load_conversations(path)[0].messages == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_prompt_completion_strings_and_message_lists(tmp_path):
    path = write_lines(
        tmp_path / "pc.jsonl",
        [
            {"prompt": "2+2?", "completion": "4"},
            {"prompt": CHAT[:2], "completion": [{"role": "assistant", "content": "Yo"}]},
        ],
    )
    conversations = load_conversations(path)
    assert [c.messages for c in conversations] == [
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        [*CHAT[:2], {"role": "assistant", "content": "Yo"}],
    ]


def test_alpaca_joins_instruction_and_nonempty_input(tmp_path):
    path = write_lines(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Translate.", "input": "chat", "output": "cat"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Count.", "output": "1 2"},
        ],
    )
    assert [c.messages for c in load_conversations(path)] == [
        [{"role": "user", "content": "Translate.\n\nchat"}, {"role": "assistant", "content": "cat"}],
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}],
        [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "1 2"}],
    ]


def test_sharegpt_roles_are_mapped(tmp_path):
    turns = [
        {"from": "system", "value": "S"},
        {"from": "human", "value": "a"},
        {"from": "gpt", "value": "b"},
        {"from": "user", "value": "c"},
        {"from": "chatgpt", "value": "d"},
        {"from": "Human", "value": "e"},
        {"from": "bard", "value": "f"},
    ]
    path = write_lines(tmp_path / "sg.jsonl", [{"conversations": turns, "id": "x"}])
    roles = ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    expected = [{"role": r, "content": t["value"]} for r, t in zip(roles, turns, strict=True)]
    assert load_conversations(path)[0].messages == expected


def test_json_array_uses_element_numbers(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(
        json.dumps([{"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": "d"}], indent=2)
    )
    assert [line for line, _ in read_records(path)] == [1, 2]
    assert load_conversations(path) == [
        Conversation([{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}], str(path), 1),
        Conversation([{"role": "user", "content": "q"}, {"role": "assistant", "content": "d"}], str(path), 2),
    ]


def test_format_is_detected_once_per_file(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [{"messages": CHAT}, {"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError) as error:
        load_conversations(path)
    assert (error.value.line, error.value.field) == (2, "messages")


def test_json_file_with_json_lines(tmp_path):
    path = write_lines(tmp_path / "lines.json", [{"messages": CHAT}, {"messages": CHAT}])
    assert [c.line for c in load_conversations(path)] == [1, 2]


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": CHAT}).encode() + b"\n")
    assert load_conversations(path)[0].messages == CHAT


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    rows = [{"messages": CHAT}, {"messages": CHAT[1:]}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_conversations(path) == [
        Conversation(CHAT, str(path), 1),
        Conversation(CHAT[1:], str(path), 2),
    ]


def test_parquet_alpaca_with_null_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    rows = [
        {"instruction": "I", "input": None, "output": "O"},
        {"instruction": "I", "input": "x", "output": "O"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert [c.messages[0]["content"] for c in load_conversations(path)] == ["I", "I\n\nx"]


def test_saved_dataset_directory(tmp_path):
    import datasets

    rows = [
        {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
        for i in range(3)
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    conversations = load_conversations(tmp_path / "saved")
    assert [c.line for c in conversations] == [1, 2, 3]
    assert conversations[2].messages == [
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]


def test_explicit_format_is_enforced(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"messages": CHAT}])
    with pytest.raises(DataError) as error:
        load_conversations(path, format="alpaca")
    assert (error.value.line, error.value.field) == (1, "instruction")


def test_unknown_format_name_is_a_config_error(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"messages": CHAT}])
    with pytest.raises(ConfigError, match="unknown data format 'tulu'"):
        load_conversations(path, format="tulu")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(LmadaptError, match=r"not-there\.jsonl"):
        load_conversations(tmp_path / "not-there.jsonl")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_conversations(path)


GOOD = json.dumps({"messages": CHAT}).encode()


def messages_line(*messages) -> bytes:
    return json.dumps({"messages": list(messages)}).encode()


USER = {"role": "user", "content": "q"}
ASSISTANT = {"role": "assistant", "content": "a"}

# (second line of the file, field, fragment of the message); the first line is always valid
BAD_RECORDS = {
    "invalid json": (b'{"messages": [', None, "invalid JSON"),
    "bad utf-8": (b'{"messages": "\xff\xfe"}', None, "invalid UTF-8"),
    "not an object": (b"[1, 2]", None, "not a JSON object"),
    "unknown role": (
        messages_line(USER, {"role": "bot", "content": "a"}),
        "messages[1].role",
        "unknown role 'bot'",
    ),
    "empty content": (
        messages_line(USER, {"role": "assistant", "content": ""}),
        "messages[1].content",
        "empty",
    ),
    "blank content": (
        messages_line({"role": "user", "content": " \n\t"}, ASSISTANT),
        "messages[0].content",
        "empty",
    ),
    "no assistant": (messages_line(USER), "messages", "no assistant turn"),
    "content not str": (
        messages_line({"role": "user", "content": 3}, ASSISTANT),
        "messages[0].content",
        "got int",
    ),
    "messages not list": (b'{"messages": "hi"}', "messages", "expected list, got str"),
    "message not object": (messages_line("hi", ASSISTANT), "messages[0]", "expected an object"),
    "role missing": (
        messages_line({"content": "q"}, ASSISTANT),
        "messages[0].role",
        "missing required field",
    ),
    "role not str": (messages_line({"role": 1, "content": "q"}, ASSISTANT), "messages[0].role", "got int"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_invalid_messages_record(tmp_path, case):
    line, field, fragment = BAD_RECORDS[case]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD + b"\n" + line + b"\n" + GOOD + b"\n")
    with pytest.raises(DataError) as error:
        load_conversations(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 2, field)
    assert fragment in str(error.value)
    assert str(error.value).startswith(f"{path}:2:")
    if field:
        assert f"'{field}'" in str(error.value)


@pytest.mark.parametrize(
    ("records", "field", "fragment"),
    [
        ([{"instruction": "i", "input": "x"}], "output", "missing required field"),
        ([{"instruction": "i", "output": "o", "input": 5}], "input", "expected str"),
        ([{"prompt": "p", "completion": ""}], "completion", "empty"),
        ([{"prompt": 1, "completion": "c"}], "prompt", "expected str"),
        ([{"prompt": [USER], "completion": [USER]}], "completion", "no assistant turn"),
        (
            [{"conversations": [{"from": "robot", "value": "x"}]}],
            "conversations[0].from",
            "unknown speaker 'robot'",
        ),
        ([{"conversations": [{"from": "human", "value": "x"}]}], "conversations", "no assistant turn"),
        ([{"conversations": [{"from": "gpt"}]}], "conversations[0].value", "missing required field"),
        ([{"text": "hello"}], None, "unknown format"),
    ],
)
def test_invalid_records_of_other_formats(tmp_path, records, field, fragment):
    path = write_lines(tmp_path / "other.jsonl", records)
    with pytest.raises(DataError) as error:
        load_conversations(path)
    assert (error.value.line, error.value.field) == (1, field)
    assert fragment in str(error.value)
    assert "other.jsonl:1:" in str(error.value)


def test_json_array_errors_name_the_element(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"messages": CHAT}, {"messages": [USER]}]))
    with pytest.raises(DataError) as error:
        load_conversations(path)
    assert (error.value.line, error.value.field) == (2, "messages")
    assert "(element 2)" in str(error.value)


def test_json_array_syntax_error_reports_the_physical_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n{"messages": []},\n{"messages": }\n]')
    with pytest.raises(DataError, match="invalid JSON") as error:
        load_conversations(path)
    assert error.value.line == 3


def test_json_array_bad_utf8_reports_the_physical_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_bytes(b'[\n{"messages": []},\n{"messages": "\xff"}\n]')
    with pytest.raises(DataError, match="invalid UTF-8") as error:
        load_conversations(path)
    assert error.value.line == 3


def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT}, {"messages": [USER]}]), path)
    with pytest.raises(DataError) as error:
        load_conversations(path)
    assert (error.value.line, error.value.field) == (2, "messages")
    assert "d.parquet:2:" in str(error.value) and "(row 2)" in str(error.value)


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(LmadaptError, match="not a dataset saved with save_to_disk"):
        load_conversations(tmp_path / "plain")


def test_unreadable_parquet_file(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LmadaptError, match="not a readable Parquet file"):
        load_conversations(tmp_path / "broken.parquet")
