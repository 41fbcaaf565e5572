"""`lmadapt eval humaneval | mbpp`: completions (canned or generated) run in the sandbox, scored by pass@k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmadapt.cli import main
from lmadapt.config import load_config
from lmadapt.data.templates import TULU_JINJA
from lmadapt.errors import ConfigError, DataError
from lmadapt.eval.results import RESULT_FILES
from lmadapt.eval.suite import SuiteConfig
from lmadapt.models.load import load_tokenizer
from lmadapt.recipes.eval_suite import run_suite
from lmadapt.recipes.evaluate import RUNNERS, run_humaneval, run_mbpp

ADD = {
    "task_id": "HumanEval/0",
    "prompt": 'def add(a, b):\n    """Sum of a and b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
}
NEG = {
    "task_id": "HumanEval/1",
    "prompt": "def neg(x):\n",
    "canonical_solution": "    return -x\n",
    "test": "def check(candidate):\n    assert candidate(2) == -2\n",
    "entry_point": "neg",
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_canned_completions_score_by_what_their_programs_do(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [ADD, NEG])
    canned = {
        "HumanEval/0#0": "    return a + b\n",  # right
        "HumanEval/0#1": "    return a - b\n",  # wrong answer
        "HumanEval/0#2": "    while True:\n        pass\n",  # never ends
        "HumanEval/1#0": "    return -x\n",
        "HumanEval/1#1": "    import os\n    os.remove(__file__)\n    return -x\n",  # its own file: allowed
        # HumanEval/1#2 missing: scored as an empty completion, which fails
    }
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prediction": p} for i, p in canned.items()])
    out = tmp_path / "out"
    metrics = run_humaneval(data, out, predictions=predictions, samples=3, k=[1, 2], timeout=1)
    # problem 0: 1 of 3 pass; problem 1: 2 of 3. pass@1 = (1/3 + 2/3) / 2; pass@2 = (1 - 1/3 + 1) / 2
    assert metrics["overall"] == {
        "num_problems": 2,
        "samples_per_problem": 3,
        "pass@1": 50.0,
        "pass@2": round(100 * (2 / 3 + 1) / 2, 4),
    }
    assert metrics["outcomes"] in (
        {"failed": 2, "passed": 3, "timeout": 1},
        {"failed": 2, "passed": 3, "signal": 1},
    )
    assert metrics["coverage"] == {"total": 6, "predicted": 5, "missing": 1, "empty": 0}
    assert metrics["sandbox"]["limits"]["cpu_s"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["id"], r["passed"]) for r in rows] == [
        ("HumanEval/0#0", True),
        ("HumanEval/0#1", False),
        ("HumanEval/0#2", False),
        ("HumanEval/1#0", True),
        ("HumanEval/1#1", True),
        ("HumanEval/1#2", False),
    ]
    assert "AssertionError" in rows[1]["stderr"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| 2 | 3 | 50.00 | 83.33 |" in report and "WARNING: coverage" in report

    # predictions.jsonl is itself a predictions file: rescoring it gives the same numbers.
    again = run_humaneval(
        data, tmp_path / "again", predictions=out / "predictions.jsonl", samples=3, k=[1, 2]
    )
    assert again["overall"] == metrics["overall"]


def test_mbpp_canned_completions(tmp_path: Path) -> None:
    problem = {
        "task_id": 2,
        "text": "Write a function to add two numbers.",
        "code": "def add(a, b):\n    return a + b",
        "test_setup_code": "",
        "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
    }
    data = write_jsonl(tmp_path / "mbpp.jsonl", [problem])
    canned = [("2#0", "def add(a, b):\n    return a + b\n"), ("2#1", "def add(a, b):\n    return a * b\n")]
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prediction": p} for i, p in canned])
    metrics = run_mbpp(data, tmp_path / "out", predictions=predictions, samples=2, k=[1, 2])
    assert metrics["overall"]["pass@1"] == 50.0 and metrics["overall"]["pass@2"] == 100.0
    assert metrics["run"]["title"] == "MBPP (open-instruct prompt)"


def test_settings_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [ADD])
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "HumanEval/0#0", "prediction": "x"}])
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--model PATH or --predictions FILE"):
        run_humaneval(data, out)
    with pytest.raises(ConfigError, match="--temperature has no effect with --predictions"):
        run_humaneval(data, out, predictions=predictions, temperature=0.2)
    with pytest.raises(ConfigError, match="pass@10 needs at least 10 samples"):
        run_humaneval(data, out, predictions=predictions, samples=2)
    unknown = write_jsonl(tmp_path / "u.jsonl", [{"id": "HumanEval/0#5", "prediction": "x"}])
    with pytest.raises(DataError, match="unknown instance id 'HumanEval/0#5'"):
        run_humaneval(data, out, predictions=unknown, samples=2, k=[1])
    assert not out.exists()


class FakeGenerate:
    """Stands in for `eval.generate.generate`: records its prompts and settings, returns canned texts."""

    def __init__(self, answers: list[str]):
        self.answers, self.prompts, self.kwargs = answers, [], {}

    def __call__(self, model, tokenizer, prompts, **kwargs):
        self.prompts, self.kwargs = list(prompts), kwargs
        return self.answers


def test_model_samples_are_generated_per_problem_and_scored(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [ADD, NEG])
    fake = FakeGenerate(["    return a + b\n", "    return b + a\n", "    return x\n", "    return -x\n"])
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    metrics = run_humaneval(data, tmp_path / "out", model=str(tiny_llama_dir), samples=2, k=[1, 2])
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    shown = [tokenizer.decode(ids, skip_special_tokens=True) for ids in fake.prompts]
    assert shown == [ADD["prompt"], ADD["prompt"], NEG["prompt"], NEG["prompt"]]
    assert list(fake.kwargs["stop"]) == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    sampling = {k: fake.kwargs[k] for k in ("do_sample", "temperature", "top_p", "seed", "max_new_tokens")}
    assert sampling == {
        "do_sample": True,
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": 0,
        "max_new_tokens": 512,
    }
    assert metrics["overall"]["pass@1"] == 75.0 and metrics["overall"]["pass@2"] == 100.0
    assert metrics["run"]["samples"] == 2 and metrics["run"]["chat_template"] is False

    # temperature 0 is greedy: no sampling settings reach generate, and none may be given
    run_humaneval(data, tmp_path / "greedy", model=str(tiny_llama_dir), samples=2, k=[1], temperature=0)
    assert "do_sample" not in fake.kwargs
    with pytest.raises(ConfigError, match="--top-p has no effect with --temperature 0"):
        run_humaneval(data, tmp_path / "g2", model=str(tiny_llama_dir), temperature=0, top_p=0.9)


def test_chat_prompt_is_tulus(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    tokenizer.chat_template = TULU_JINJA
    tokenizer.save_pretrained(tiny_llama_dir)
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [NEG])
    fake = FakeGenerate(["    return -x\n"])
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    metrics = run_humaneval(data, tmp_path / "out", model=str(tiny_llama_dir), samples=1, k=[1])
    assert tokenizer.decode(fake.prompts[0]) == (
        "<|user|>\nComplete the following python function.\n\n\ndef neg(x):\n\n<|assistant|>\n"
        "Here is the completed function:\n\n\ndef neg(x):\n"
    )
    assert metrics["overall"]["pass@1"] == 100.0 and metrics["run"]["chat_template"] is True


def test_cli_runs_humaneval_with_a_real_model(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [ADD, NEG])
    out = tmp_path / "he"
    args = ["eval", "humaneval", "--data", str(data), "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*args, "--samples", "2", "--k", "1", "2", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.startswith("pass@1 0.00, pass@2 0.00; ")  # a random model writes no code
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == ["HumanEval/0#0", "HumanEval/0#1", "HumanEval/1#0", "HumanEval/1#1"]
    assert all(r["status"] == "failed" for r in rows)
    assert main([*args, "--samples", "2"]) == 2  # pass@10 of 2 samples; nothing overwritten
    assert "pass@10 needs at least 10 samples" in capsys.readouterr().err
    assert len(read_jsonl(out / "predictions.jsonl")) == 4


def test_humaneval_runs_in_a_suite(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_jsonl(tmp_path / "HumanEval.jsonl", [NEG])
    suite = {
        "out": str(tmp_path / "suite"),
        "models": {"tiny": str(tiny_llama_dir)},
        "evals": [{"eval": "humaneval", "args": {"data": str(data), "samples": 10, "max_new_tokens": 4}}],
    }
    config = tmp_path / "suite.yaml"
    config.write_text("# lmadapt eval suite suite.yaml\n" + yaml.safe_dump(suite), encoding="utf-8")
    metrics = run_suite(load_config(SuiteConfig, config), RUNNERS)
    alone = json.loads(
        (tmp_path / "suite" / "tiny" / "humaneval" / "metrics.json").read_text(encoding="utf-8")
    )
    assert alone["overall"]["samples_per_problem"] == 10
    entry = metrics["evaluations"]["humaneval"]
    assert entry["metric"] == "pass@10" and entry["scores"] == {"tiny": alone["overall"]["pass@10"]}
