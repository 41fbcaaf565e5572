from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.errors import ConfigError
from lmadapt.eval.sources import HeuristicSource, ModelSource, PredictionsFile
from lmadapt.hint.run import FORMAT, HINT_FILE
from lmadapt.hint.source import HintSource
from lmadapt.recipes.evaluate import run_gsm8k, superni_source


@pytest.fixture
def hint_run(tmp_path: Path) -> Path:
    """A run directory as far as choosing a source reads it: hint.json with the training settings."""
    settings = {
        "template": "tulu",
        "encoding": "def+1pos",
        "max_instruction_length": 64,
        "max_input_length": 64,
    }
    run = tmp_path / "hint-run"
    run.mkdir()
    (run / HINT_FILE).write_text(json.dumps({"format": FORMAT, "settings": settings}), encoding="utf-8")
    return run


def test_each_source_gets_the_settings_it_can_honour(hint_run: Path) -> None:
    source = superni_source(
        model="m", chat_template="off", max_source_tokens=0, max_new_tokens=9, batch_size=2
    )
    assert source == ModelSource(
        "m", chat_template="off", batch_size=2, max_new_tokens=9, max_source_tokens=0
    )
    assert superni_source(model="m") == ModelSource("m", "auto", 16, 128, 1024)
    assert superni_source(predictor="copy-demo") == HeuristicSource("copy-demo")
    assert superni_source(predictions="p.jsonl") == PredictionsFile("p.jsonl")
    with_model = superni_source(predictions="p.jsonl", model="m", max_new_tokens=7)
    assert with_model == PredictionsFile("p.jsonl", ModelSource("m", max_new_tokens=7))
    hint = superni_source(model=str(hint_run), batch_size=3)
    assert hint == HintSource(str(hint_run), batch_size=3, max_new_tokens=128)


def test_a_hint_run_is_no_plain_model(hint_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a HINT run: .* only `lmadapt eval superni`"):
        run_gsm8k("unused.jsonl", "unused-out", model=str(hint_run))


def test_a_hint_run_is_read_in_its_training_encoding_unless_asked(hint_run: Path) -> None:
    assert superni_source(model=str(hint_run)).default_encoding() == "def+1pos"
    assert superni_source(model="m").default_encoding() == "def+2pos"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictor": "copy-demo", "max_new_tokens": 5}, "--max-new-tokens has no effect with --predictor"),
        (
            {"predictor": "copy-input", "chat_template": "on"},
            "--chat-template has no effect with --predictor",
        ),
        ({"predictor": "copy-input", "batch_size": 4}, "--batch-size has no effect"),
        ({"predictions": "p", "chat_template": "off"}, "--chat-template has no effect with --predictions"),
        (
            {"predictions": "p", "model": "m", "batch_size": 2},
            "--batch-size has no effect with --predictions",
        ),
        ({"predictions": "p", "model": "m", "max_source_tokens": 9}, "--max-source-tokens has no effect"),
        ({"predictions": "p", "max_new_tokens": 9}, "no --model to count compute for"),
        ({"hint": True, "chat_template": "auto"}, "--chat-template has no effect on a HINT run"),
        ({"hint": True, "max_source_tokens": 0}, "--max-source-tokens has no effect on a HINT run"),
        ({"hint": True, "predictions": "p"}, "cannot be combined with a HINT run"),
        ({"model": "m", "chat_template": "maybe"}, "chat_template 'maybe'"),
        ({"model": "m", "batch_size": 0}, "batch_size must be at least 1"),
        ({"predictor": "oracle"}, "unknown predictor"),
        ({}, "say where predictions come from"),
    ],
)
def test_a_setting_a_source_cannot_honour_is_an_error(hint_run: Path, kwargs: dict, message: str) -> None:
    if kwargs.pop("hint", False):
        kwargs["model"] = str(hint_run)
    with pytest.raises(ConfigError, match=message):
        superni_source(**kwargs)
