from __future__ import annotations

from pathlib import Path

from lmadapt.demo.report import results_table, stage_section, training_line
from lmadapt.demo.stages import StageResult
from lmadapt.demo.suite import EVAL_SETS


def _result(**kw) -> StageResult:
    scores = {s: {"exact_match": 10.0 * i, "rougeL": 10.0 * i + 5} for i, s in enumerate(EVAL_SETS)}
    return StageResult("dpo", "DPO", scores, **kw)


def test_training_line_gives_time_per_trained_token():
    line = training_line(_result(train_seconds=30.0, trained_tokens=12000))
    assert "30 s, 12,000 trained tokens (2.500 ms each)" in line
    assert "ms each" not in training_line(_result(train_seconds=3.0))


def test_stage_section_shows_measures_per_set_and_notes_without_nan():
    per_set = {EVAL_SETS[0]: {"inference FLOPs per instance": 1.5e6, "eval seconds per instance": 0.25}}
    lines = stage_section(_result(per_set=per_set, notes=["Pairs: 5 for training."]), Path("/x"))
    text = "\n".join(lines)
    assert f"| per instance | {' | '.join(EVAL_SETS)} |" in text
    assert "| inference FLOPs per instance | 1.5e+06 | - | - |" in text
    assert "| eval seconds per instance | 0.25 | - | - |" in text
    assert "Pairs: 5 for training." in text and "nan" not in text


def test_results_table_rows():
    table = results_table([_result()])
    assert table.splitlines()[2] == "| dpo | 0.0 | 5.0 | 10.0 | 15.0 | 20.0 | 25.0 |"
