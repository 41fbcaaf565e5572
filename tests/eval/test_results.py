from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.errors import LmadaptError
from lmadapt.eval.report import coverage, coverage_warning
from lmadapt.eval.results import ResultsDir


def _report(out: Path, metrics: dict) -> Path:
    """report.md, with a chart when the metrics have a score above 1."""
    if metrics["score"] <= 1:
        (out / "chart.png").write_bytes(b"png")
    path = out / "report.md"
    path.write_text(f"score {metrics['score']}", encoding="utf-8")
    return path


def test_results_are_written_once_and_replaced_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    first = ResultsDir(out, overwrite=False, extra=["chart.png"])
    assert not out.exists()  # nothing is created before the results are ready
    first.write([{"id": "a"}], {"score": 1}, _report)
    assert json.loads((out / "metrics.json").read_text("utf-8")) == {"score": 1}
    assert (out / "predictions.jsonl").read_text("utf-8") == '{"id": "a"}\n'
    (out / "notes.txt").write_text("mine", encoding="utf-8")

    with pytest.raises(
        LmadaptError, match=r"already holds results \(predictions.jsonl, metrics.json, report.md"
    ):
        ResultsDir(out, overwrite=False, extra=["chart.png"])
    again = ResultsDir(out, overwrite=True, extra=["chart.png"])
    assert (out / "report.md").read_text("utf-8") == "score 1"  # kept until the new results exist
    again.write([], {"score": 2}, _report)
    assert not (out / "chart.png").exists()  # the earlier run's chart does not outlive it
    assert (out / "report.md").read_text("utf-8") == "score 2"
    assert (out / "notes.txt").read_text("utf-8") == "mine"


def test_coverage_counts_missing_and_empty_predictions() -> None:
    counts = coverage(["a", None, "", "  \n", "b", None])
    assert counts == {"total": 6, "predicted": 4, "missing": 2, "empty": 2}
    assert coverage_warning(counts) == (
        "coverage 33.3%: 2 of 6 have no prediction and 2 of 6 predictions are empty (scored as empty answers)"
    )
    assert coverage_warning(coverage(["a", "b"])) is None
    assert coverage_warning(None) is None
