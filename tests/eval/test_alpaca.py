from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.errors import ConfigError, DataError
from lmadapt.eval import alpaca
from lmadapt.eval.alpaca import Instruction
from lmadapt.eval.winrate import length_controlled_win_rate

REFERENCES = [
    {
        "instruction": "What is the capital of France?",
        "output": "Paris.",
        "generator": "text_davinci_003",
        "dataset": "helpful_base",
    },
    {
        "instruction": "Name a prime.",
        "output": "7",
        "generator": "text_davinci_003",
        "dataset": "koala",
    },
    {"instruction": "Say hi.", "output": "Hi!", "generator": "text_davinci_003", "dataset": "koala"},
]


def write_json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, indent=4), encoding="utf-8")  # alpaca_eval.json: one JSON list
    return path


def test_loader_reads_the_alpaca_eval_layout(tmp_path: Path) -> None:
    items = alpaca.load_instructions(write_json(tmp_path / "alpaca_eval.json", REFERENCES))
    assert items[1] == Instruction("Name a prime.", "7", "text_davinci_003", "koala", 2)
    bare = alpaca.load_instructions(write_json(tmp_path / "bare.json", [{"instruction": "x", "output": ""}]))
    assert bare == [Instruction("x", "", "", "", 1)]
    with pytest.raises(DataError, match=r"no_output\.json:2: field 'output': missing field"):
        alpaca.load_instructions(
            write_json(tmp_path / "no_output.json", [REFERENCES[0], {"instruction": "y"}])
        )
    with pytest.raises(DataError, match="field 'instruction': expected a non-empty string"):
        alpaca.load_instructions(write_json(tmp_path / "blank.json", [{"instruction": " ", "output": "o"}]))


def test_model_outputs_are_matched_by_instruction(tmp_path: Path) -> None:
    items = alpaca.load_instructions(write_json(tmp_path / "ref.json", REFERENCES))
    model = [
        {"instruction": "Say hi.", "output": "Hello", "generator": "tulu"},
        {"instruction": "What is the capital of France?", "output": "Paris"},
    ]
    outputs, generator = alpaca.read_outputs(write_json(tmp_path / "model_outputs.json", model), items)
    assert outputs == ["Paris", None, "Hello"] and generator == "tulu"
    _, generator = alpaca.read_outputs(write_json(tmp_path / "nameless.json", model[1:]), items)
    assert generator == "nameless"
    with pytest.raises(DataError, match=r"unknown\.json:1: field 'instruction': not among"):
        alpaca.read_outputs(
            write_json(tmp_path / "unknown.json", [{"instruction": "?", "output": "o"}]), items
        )
    with pytest.raises(DataError, match=r"twice\.json:2: field 'instruction': repeats line 1"):
        alpaca.read_outputs(write_json(tmp_path / "twice.json", [model[0], model[0]]), items)


def test_judge_prompt_and_label_tokens() -> None:
    plain = alpaca.judge_prompt("Add 1+1.", "2", "3", chat=False)
    assert plain == (
        alpaca.JUDGE_INSTRUCTIONS
        + "\n\n## Instruction\n\nAdd 1+1.\n\n## Output (a)\n\n2\n\n## Output (b)\n\n3"
        "\n\n## Which output is better, Output (a) or Output (b)?\n\nBetter: Output ("
    )
    assert alpaca.judge_prompt("Add 1+1.", "2", "3", chat=True) == plain.removesuffix("\n\nBetter: Output (")
    # Braces in outputs are text, not placeholders.
    assert "{output_b}" in alpaca.judge_prompt("i", "{output_b}", "x", chat=True)
    assert alpaca.label_token_ids(ByT5Tokenizer()) == [ord("a") + 3, ord("b") + 3]

    class MergingTokenizer:
        """Encodes "(a" as one token, as some BPE vocabularies would."""

        def __call__(self, text: str, add_special_tokens: bool):
            return {"input_ids": [len(text)]}

        def decode(self, ids: list[int]) -> str:
            return "(a"

    with pytest.raises(ConfigError, match="does not encode 'a' after '\\(' as a token of its own"):
        alpaca.label_token_ids(MergingTokenizer())


class RecordingJudge:
    def __init__(self, preference: float):
        self.preference, self.items = preference, []

    def judge(self, items):
        self.items = list(items)
        return [(self.preference, {"asked": 1.0}) for _ in items]

    def settings(self):
        return {}


def test_identical_outputs_are_draws_the_judge_is_not_asked_about() -> None:
    items = [Instruction("i1", "same", "", "", 1), Instruction("i2", "ref", "", "", 2)]
    judge = RecordingJudge(0.9)
    verdicts = alpaca.preferences(judge, items, ["same", "mine"])
    assert judge.items == [("i2", "mine", "ref")]
    assert verdicts == [(0.5, {}), (0.9, {"asked": 1.0})]


def test_metrics_by_hand_with_both_orders_and_datasets() -> None:
    items = [
        Instruction("i1", "ref one", "", "koala", 1),  # 7 characters
        Instruction("i2", "r", "", "koala", 2),
        Instruction("i3", "reference", "", "oasst", 3),
    ]
    outputs = ["longer output", "out", "reference"]  # 13, 3, 9 characters: differences 6, 2, 0
    verdicts = [
        (0.8, {"model_first": 0.9, "model_second": 0.7}),
        (0.4, {"model_first": 0.6, "model_second": 0.2}),
        (0.5, {}),  # identical: a draw, not asked
    ]
    metrics = alpaca.alpaca_metrics(items, outputs, verdicts)
    overall = metrics["overall"]
    assert overall["win_rate"] == pytest.approx(100 * 1.7 / 3)
    deviations = [0.8 - 1.7 / 3, 0.4 - 1.7 / 3, 0.5 - 1.7 / 3]
    assert overall["standard_error"] == pytest.approx(
        100 * math.sqrt(sum(d * d for d in deviations) / 2) / math.sqrt(3)
    )
    assert (overall["n_wins"], overall["n_draws"], overall["n_losses"]) == (1, 1, 1)
    assert overall["discrete_win_rate"] == pytest.approx(50.0)
    assert overall["avg_length"] == pytest.approx(25 / 3) and overall[
        "avg_reference_length"
    ] == pytest.approx(17 / 3)
    expected = length_controlled_win_rate([0.8, 0.4, 0.5], [6, 2, 0])
    assert overall["length_controlled_win_rate"] == pytest.approx(expected["length_controlled_win_rate"])
    assert metrics["length_control"]["length_coefficient"] == pytest.approx(expected["length_coefficient"])
    assert metrics["per_dataset"]["koala"]["win_rate"] == pytest.approx(60.0)
    assert metrics["per_dataset"]["oasst"] == {"win_rate": 50.0, "standard_error": None, "n_total": 1}
    # Both orders asked twice: they agree on pair 1 (0.9, 0.7 both > 0.5) and disagree on pair 2 (0.6 vs
    # 0.2). The output shown first: 0.9, 1 - 0.7, 0.6, 1 - 0.2 -> mean 2.6 / 4 = 0.65.
    assert metrics["position"] == {
        "pairs": 2,
        "order_agreement": 50.0,
        "first_shown_preference": pytest.approx(65.0),
    }
