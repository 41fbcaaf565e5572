from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmadapt.data.superni import load_superni
from lmadapt.data.tasks import Demonstration, Instance, Task, save_task_json
from lmadapt.errors import ConfigError, DataError, LmadaptError
from lmadapt.eval.generate import generate
from lmadapt.models.load import load_tokenizer
from lmadapt.recipes.evaluate import OUTPUT_FILES, run_superni


def write_clone(root: Path, language: str = "English") -> Path:
    """Two test tasks. copy-demo answers "yes" and "a title": 3 of 5 exact, ROUGE-L 60 overall."""
    tasks = [
        Task(
            name="task1_entail",
            definition="Does the premise entail the hypothesis? Answer yes or no",
            positive_examples=[Demonstration("Premise: it rains. Hypothesis: it is wet.", "yes")],
            negative_examples=[],
            instances=[Instance(f"t1-{i}", f"pair {i}", [ref]) for i, ref in enumerate(["yes", "no", "yes"])],
            categories=["Textual Entailment"],
            input_language=[language],
            output_language=[language],
        ),
        Task(
            name="task2_title",
            definition="Write a title",
            positive_examples=[Demonstration("Some text.", "a title")],
            negative_examples=[],
            instances=[
                Instance("t2-0", "text 0", ["A title!"]),
                Instance("t2-1", "text 1", ["another thing"]),
            ],
            categories=["Title Generation"],
        ),
    ]
    for task in tasks:
        save_task_json(task, root / "tasks" / f"{task.name}.json")
    listing = root / "splits" / "default" / "test_tasks.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("task1_entail\ntask2_title\n", encoding="utf-8")
    return root


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return write_clone(tmp_path / "ni")


def test_predictor_run_writes_all_results(clone: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    metrics = run_superni(clone, out, predictor="copy-demo", encoding="def")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert metrics["overall"] == {"num_tasks": 2, "num_instances": 5, "exact_match": 60.0, "rougeL": 60.0}
    assert metrics["per_category"]["textual_entailment"]["exact_match"] == 66.6667
    assert metrics["per_task"]["task2_title"]["rougeL"] == 50.0
    assert metrics["tk_instruct"]["exact_match_for_textual_entailment"] == 66.6667
    assert metrics["flops"] is None
    assert metrics["run"]["predictor"] == "copy-demo" and metrics["run"]["encoding"] == "def"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1] == {"id": "t1-1", "task": "task1_entail", "prediction": "yes"}
    assert len(rows) == 5
    assert "| textual entailment | 1 | 3 | 66.67 | 66.67 | EM 66.67 |" in (out / "report.md").read_text(
        "utf-8"
    )


def test_existing_results_are_kept_unless_overwrite(clone: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    run_superni(clone, out, predictor="copy-input")  # other files in the directory are no obstacle
    with pytest.raises(LmadaptError, match=r"already holds results .*--overwrite"):
        run_superni(clone, out, predictor="copy-demo")
    assert json.loads((out / "metrics.json").read_text("utf-8"))["run"]["predictor"] == "copy-input"
    run_superni(clone, out, predictor="copy-demo", overwrite=True)
    assert json.loads((out / "metrics.json").read_text("utf-8"))["run"]["predictor"] == "copy-demo"
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_scoring_a_predictions_file(clone: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(
        '{"id": "t1-1", "prediction": "No"}\n{"id": "t2-0", "prediction": "a title"}\n', "utf-8"
    )
    metrics = run_superni(clone, tmp_path / "eval", predictions=predictions)
    assert metrics["missing_predictions"] == 3
    assert metrics["overall"]["exact_match"] == 40.0  # the three missing ones score as ""
    rows = (tmp_path / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["prediction"] for r in rows] == ["", "No", "", "a title", ""]

    predictions.write_text('{"id": "t1-1", "prediction": "No"}\n{"id": "t7-0", "prediction": "?"}\n', "utf-8")
    with pytest.raises(DataError, match="unknown instance id 't7-0'") as err:
        run_superni(clone, tmp_path / "eval2", predictions=predictions)
    assert (err.value.path, err.value.line) == (str(predictions), 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "say where predictions come from"),
        ({"predictor": "copy-demo", "model": "m"}, "drop --model"),
        ({"predictor": "oracle"}, "unknown predictor"),
        ({"predictor": "copy-demo", "encoding": "def+2shots"}, "prompt encoding"),
    ],
)
def test_argument_errors(clone: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_superni(clone, tmp_path / "eval", **kwargs)
    assert not (tmp_path / "eval").exists()


def test_xlingual_tasks_need_a_tokenizer_before_any_work(tmp_path: Path) -> None:
    root = write_clone(tmp_path / "ni", language="Spanish")
    listing = tmp_path / "list.txt"
    listing.write_text("task1_entail\ntask2_title\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="GPT-2 tokenizer"):
        run_superni(root, tmp_path / "eval", split=str(listing), predictor="copy-demo")
    assert not (tmp_path / "eval").exists()


def test_model_run_generates_and_counts_compute(clone: Path, tmp_path: Path, tiny_llama_dir: Path) -> None:
    out = tmp_path / "eval"
    metrics = run_superni(
        clone, out, model=str(tiny_llama_dir), encoding="def+1pos", max_new_tokens=4, batch_size=2
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    instances = load_superni(clone, encoding="def+1pos")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    expected = generate(
        model, load_tokenizer(str(tiny_llama_dir)), [x.prompt for x in instances], max_new_tokens=4
    )
    assert [r["prediction"] for r in rows] == expected
    assert metrics["overall"]["num_instances"] == 5
    flops = metrics["flops"]
    check = flops["check"]
    assert abs(check["analytic"] - check["counted"]) / check["counted"] < 0.10
    assert flops["num_instances"] == 5
    assert flops["mean_tokens"]["output"] <= 4
    # ByT5 tokens are bytes: the instruction of the first task is its UTF-8 length.
    assert flops["mean_tokens"]["instruction"] == sum(len(x.instruction_text.encode()) for x in instances) / 5
    assert flops["instruction_once"]["total"] < flops["concatenation"]["total"]
    assert "Inference compute" in (out / "report.md").read_text(encoding="utf-8")


def test_encoder_decoder_model_run(clone: Path, tmp_path: Path, tiny_t5_dir: Path) -> None:
    torch.manual_seed(0)
    metrics = run_superni(clone, tmp_path / "eval", model=str(tiny_t5_dir), encoding="def", max_new_tokens=3)
    assert metrics["overall"]["num_instances"] == 5
    assert metrics["flops"]["model"]["is_encoder_decoder"] is True
    check = metrics["flops"]["check"]
    assert abs(check["analytic"] - check["counted"]) / check["counted"] < 0.10


def test_predictions_file_with_a_model_only_counts_compute(
    clone: Path, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text('{"id": "t2-1", "prediction": "another thing"}\n', encoding="utf-8")
    metrics = run_superni(clone, tmp_path / "eval", predictions=predictions, model=str(tiny_llama_dir))
    assert metrics["per_task"]["task2_title"]["exact_match"] == 50.0  # the file's prediction, not generated
    assert metrics["flops"]["mean_tokens"]["output"] == (len("another thing") + 1 + 4 * 1) / 5
