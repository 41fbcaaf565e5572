from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.data.superni import EvalInstance
from lmadapt.errors import DataError
from lmadapt.eval.metrics import score
from lmadapt.eval.report import (
    CHART_NAME,
    read_predictions,
    superni_metrics,
    superni_prediction_records,
    write_jsonl,
    write_metrics,
    write_report,
)


def instance(task: str, i: int, category: str, reference: str, track: str = "default") -> EvalInstance:
    return EvalInstance(
        f"{task}-{i}", task, category, track, "Definition: x.\n\n", f"in {i}", "prompt", [reference]
    )


INSTANCES = [
    instance("t1", 0, "Textual Entailment", "yes"),
    instance("t1", 1, "Textual Entailment", "no"),
    instance("t2", 0, "Title Generation", "a big red dog"),
    instance("t3", 0, "Title Generation", "small cat"),
]
PREDICTIONS = ["Yes.", "yes", "a red dog", "small cat"]


def scored(predictions=PREDICTIONS, instances=INSTANCES) -> dict:
    results = score(
        predictions,
        [x.references for x in instances],
        task_names=[x.task for x in instances],
        categories=[x.category for x in instances],
        tracks=[x.track for x in instances],
    )
    return superni_metrics(results, instances, {"total": 4, "predicted": 4, "missing": 0, "empty": 0})


def test_superni_metrics_layout() -> None:
    metrics = scored()
    assert metrics["track"] == "default"
    assert metrics["overall"] == {"num_tasks": 3, "num_instances": 4, "exact_match": 50.0, "rougeL": 71.4286}
    # ROUGE-L of "a red dog" vs "a big red dog": P = 1, R = 3/4, F = 6/7.
    assert metrics["per_task"]["t2"] == {
        "category": "title_generation",
        "track": "default",
        "num_instances": 1,
        "exact_match": 0.0,
        "rougeL": 85.7143,
    }
    assert metrics["per_task"]["t1"]["exact_match"] == 50.0
    assert metrics["per_category"] == {
        "textual_entailment": {
            "num_tasks": 1,
            "num_instances": 2,
            "exact_match": 50.0,
            "rougeL": 50.0,
            "tk_instruct_metric": "exact_match",
        },
        "title_generation": {
            "num_tasks": 2,
            "num_instances": 2,
            "exact_match": 50.0,
            "rougeL": 92.8571,
            "tk_instruct_metric": "rougeL",
        },
    }
    assert metrics["tk_instruct"]["exact_match_for_textual_entailment"] == 50.0
    assert metrics["tracks"] == {"default": {"num_instances": 4, "exact_match": 50.0, "rougeL": 71.4286}}


def test_superni_metrics_with_two_tracks_describes_default_and_lists_both() -> None:
    instances = [*INSTANCES[:2], instance("x1", 0, "Textual Entailment", "oui", track="xlingual")]
    tokenizer = type("Chars", (), {"tokenize": staticmethod(list)})()
    results = score(
        ["yes", "no", "oui"],
        [x.references for x in instances],
        task_names=[x.task for x in instances],
        categories=[x.category for x in instances],
        tracks=[x.track for x in instances],
        xlingual_tokenizer=tokenizer,
    )
    metrics = superni_metrics(results, instances, {"total": 4, "predicted": 4, "missing": 0, "empty": 0})
    assert metrics["overall"]["num_instances"] == 2 and metrics["overall"]["num_tasks"] == 1
    assert metrics["per_category"]["textual_entailment"]["num_instances"] == 2
    assert (
        metrics["per_task"]["x1"]["track"] == "xlingual" and metrics["per_task"]["x1"]["exact_match"] == 100.0
    )
    assert set(metrics["tracks"]) == {"default", "xlingual"}


def test_predictions_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    write_jsonl(path, superni_prediction_records(INSTANCES, ["ü", "b", "c", "d"]))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {"id": "t1-0", "task": "t1", "prediction": "ü"}
    assert read_predictions(path, [x.id for x in INSTANCES]) == ["ü", "b", "c", "d"]
    # Any order; instances without a record get None.
    path.write_text(
        '{"id": "t3-0", "prediction": "z"}\n\n{"id": "t1-1", "prediction": ""}\n', encoding="utf-8"
    )
    assert read_predictions(path, [x.id for x in INSTANCES]) == [None, "", None, "z"]


@pytest.mark.parametrize(
    ("second_line", "field", "message"),
    [
        ('{"id": "t9-0", "prediction": "x"}', "id", "unknown instance id 't9-0'"),
        ('{"id": "t1-0", "prediction": "x"}', "id", "repeats line 1"),
        ('{"id": "t1-1"}', "prediction", "missing field"),
        ('{"id": "t1-1", "prediction": null}', "prediction", "expected a string"),
        ('{"id": "t1-1", "prediction": ', None, "invalid JSON"),
    ],
)
def test_bad_prediction_records_name_file_and_line(
    tmp_path: Path, second_line: str, field: str | None, message: str
) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": "t1-0", "prediction": "x"}\n' + second_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        read_predictions(path, [x.id for x in INSTANCES])
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)


def test_write_metrics_and_report(tmp_path: Path) -> None:
    metrics = scored()
    metrics["run"] = {"data": "/d", "split": "default", "encoding": "def+2pos", "predictor": "copy-demo"}
    metrics["flops"] = {
        "mean_tokens": {"instruction": 200.0, "input": 20.0, "output": 5.0},
        "concatenation": {"per_instance": 2.0e9, "total": 8.0e9},
        "instruction_once": {"per_instance": 5.0e8, "total": 2.0e9},
        "instruction_once_over_concatenation": 0.25,
        "check": {"tokens": 64, "analytic": 1000, "counted": 1000},
    }
    write_metrics(tmp_path / "metrics.json", metrics)
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == metrics
    report = write_report(tmp_path, metrics).read_text(encoding="utf-8")
    assert "| 50.00 | 71.43 |" in report
    assert "| textual entailment | 1 | 2 | 50.00 | 50.00 | EM 50.00 |" in report
    assert "| title generation | 2 | 2 | 50.00 | 92.86 | ROUGE-L 92.86 |" in report
    assert "| t2 | title generation | 1 | 0.00 | 85.71 |" in report
    assert f"![per-category scores]({CHART_NAME})" in report
    assert "Instruction-once / concatenation: 0.250." in report
    assert (tmp_path / CHART_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_compute_or_with_its_error(tmp_path: Path) -> None:
    metrics = {**scored(), "flops": None}
    assert "compute" not in write_report(tmp_path, metrics).read_text(encoding="utf-8")
    metrics["flops"] = {"error": "FLOPs accounting does not know model type 'bert'"}
    assert "Not computed: FLOPs accounting does not know" in write_report(tmp_path, metrics).read_text(
        "utf-8"
    )
