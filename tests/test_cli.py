from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def _run_cli_in_subprocess(tmp_path, *argv: str) -> list[str]:
    """Run `main(argv)` in a fresh interpreter; returns [exit code, whether torch got imported]."""
    code = (
        "import sys\nfrom lmadapt.cli import main\n"
        f"rc = main({list(argv)!r})\nprint(rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("lmadapt: error:"), (
        done.stderr
    )
    return done.stdout.split()


def test_config_errors_come_before_any_heavy_import(tmp_path):
    """A CLI error is instant: parsing and config checks import neither torch nor transformers."""
    (tmp_path / "typo.yaml").write_text("model:\n  paht: x\n")
    (tmp_path / "bad.yaml").write_text("model:\n  path: x\n data: [\n")
    for argv in [("sft", "missing.yaml"), ("dpo", "typo.yaml"), ("reward", "bad.yaml"), ("hint", "bad.yaml")]:
        assert _run_cli_in_subprocess(tmp_path, *argv) == ["2", "False", "False"]


def test_invalid_yaml_is_one_line_with_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: x\n data: [\n")
    assert main(["sft", str(bad)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"lmadapt: error: {bad}:3:2: invalid YAML: ")


def test_missing_data_file_is_one_line(tmp_path, tiny_llama_dir, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"model: {{path: {tiny_llama_dir}}}\ndata: {{sources: [{{path: {tmp_path / 'missing.jsonl'}}}]}}\n"
        f"train: {{output_dir: {tmp_path / 'run'}, max_steps: 1, progress: false}}\n"
    )
    assert main(["sft", str(config)]) == 2
    stderr = capsys.readouterr().err
    err = stderr.strip().splitlines()[-1]  # after the log lines of loading the model
    assert "missing.jsonl" in err and err.startswith("lmadapt: error:") and "Traceback" not in stderr
    with pytest.raises(FileNotFoundError):  # --debug shows the full detail
        main(["--debug", "sft", str(config), "train.overwrite=true"])


def test_model_directory_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["merge", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "neither config.json" in err
    assert not (tmp_path / "out").exists()


def test_data_render_shows_both_sides_of_preference_pairs(tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    ByT5Tokenizer().save_pretrained(tok_dir)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": "yo", "rejected": "no way"}) + "\n")

    assert main(["data", "render", "--data", str(data), "--tokenizer", str(tok_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{data}:1" in out and "chosen 3, rejected 7" in out
    assert "--- chosen:\n<|user|>\nhi\n<|assistant|>\n⟦yo</s>⟧" in out
    assert "--- rejected:\n<|user|>\nhi\n<|assistant|>\n⟦no way</s>⟧" in out

    assert main(["data", "render", "--data", str(data), "--tokenizer", str(tok_dir), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert [t for t in row["chosen"]["labels"] if t != -100] == [ord("y") + 3, ord("o") + 3, 1]
    assert len(row["rejected"]["input_ids"]) == len(row["rejected"]["labels"])


def test_every_eval_command_has_its_function_and_back():
    from lmadapt.cli import EVALS
    from lmadapt.recipes.evaluate import RUNNERS

    assert set(EVALS) == set(RUNNERS)
