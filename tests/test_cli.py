from __future__ import annotations

import json

import pytest
from transformers import ByT5Tokenizer

from lmadapt.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert name in out


def test_data_render_json_and_marked_text(tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    ByT5Tokenizer().save_pretrained(tok_dir)
    data = tmp_path / "d.jsonl"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    data.write_text(json.dumps({"messages": messages}) + "\n")

    assert main(["data", "render", "--data", str(data), "--tokenizer", str(tok_dir), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "<|user|>\nhi\n<|assistant|>\nyo</s>\n"
    trained = [t for t in row["labels"] if t != -100]
    assert trained == [ord("y") + 3, ord("o") + 3, 1]  # ByT5 ids are bytes + 3; </s> is 1

    assert main(["data", "render", "--data", str(data), "--tokenizer", str(tok_dir)]) == 0
    out = capsys.readouterr().out
    assert "<|assistant|>\n⟦yo</s>⟧\n" in out
    assert f"{data}:1" in out


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert (
        main(["data", "render", "--data", str(tmp_path / "missing.jsonl"), "--tokenizer", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmadapt: error:")
