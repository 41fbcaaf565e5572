"""The Tulu 2 paper numbers shown beside a suite's results, against the design notes' copy of Table 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.eval.suite import HEADLINES, PAPER

TULU_NOTES = Path(__file__).resolve().parents[2].parent / "shared" / "design" / "tulu.md"
# Table 1's columns, in order, and the evaluation each one is shown beside.
COLUMNS = {"MMLU": "mmlu", "GSM8k": "gsm8k", "BBH": "bbh", "TydiQA": "tydiqa", "Codex": "humaneval",
           "AlpacaEval": "alpaca", "ToxiGen": "toxigen"}  # fmt: skip


def _table_one() -> dict[str, dict[str, float]]:
    """{model: {column: score}} from the markdown table under "Results to know"."""
    lines = TULU_NOTES.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model | MMLU"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = {h: float(c) for h, c in zip(header[1:], cells[1:], strict=True)}
    return rows


def test_paper_numbers_equal_tulu_2_table_1():
    if not TULU_NOTES.is_file():
        pytest.skip(f"design notes not found at {TULU_NOTES} (outside this checkout)")
    table = _table_one()
    assert set(PAPER) == set(COLUMNS.values())
    for column, name in COLUMNS.items():
        assert PAPER[name].scores == {model: scores[column] for model, scores in table.items()}, name


def test_every_paper_number_has_a_headline_in_the_same_direction():
    assert set(PAPER) <= set(HEADLINES)
    assert not HEADLINES["toxigen"].higher_is_better
    assert all(HEADLINES[name].higher_is_better for name in PAPER if name != "toxigen")
