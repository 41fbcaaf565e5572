from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from lmadapt import demo
from lmadapt.demo.pipeline import run_stages
from lmadapt.errors import LmadaptError


def test_demo_end_to_end_with_stages_side_by_side(tmp_path, tiny_settings):
    report = demo.run(tmp_path, settings=replace(tiny_settings, workers=2))
    out = report.parent
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == ["sft", "hint", "dpo", "grpo"]
    text = report.read_text()
    for r in results:
        # Every stage is scored by `eval superni`: the table is its metrics.json, set by set.
        for set_name in demo.EVAL_SETS:
            metrics = json.loads((out / "eval" / r["name"] / set_name / "metrics.json").read_text())
            assert r["scores"][set_name]["exact_match"] == metrics["overall"]["exact_match"]
            assert r["per_set"][set_name]["eval seconds per instance"] > 0
        assert r["train_seconds"] > 0 and r["trained_tokens"] > 0
        cells = " | ".join(
            f"{r['scores'][s][k]:.1f}" for s in demo.EVAL_SETS for k in ("exact_match", "rougeL")
        )
        assert f"| {r['name']} | {cells} |" in text
    dpo = results[2]["extra"]
    assert dpo["train_pairs"] > 0 and dpo["heldout_pairs"] > 0
    assert "nan" not in text and "(or pairs)" not in text
    steps, batch = tiny_settings.dpo_steps, tiny_settings.dpo_batch_size
    assert f"{steps * batch} seen in {steps} steps of {batch}" in text
    assert f"{dpo['preference_accuracy_before']:.1f}% before DPO" in text
    grpo = results[3]["extra"]
    assert f"{grpo['exact_match_before']:.1f} after SFT, {grpo['exact_match_after']:.1f} after GRPO" in text
    assert grpo["exact_match_before"] == results[0]["scores"]["heldout_phrasings"]["exact_match"]
    assert (out / "scores.png").is_file() and (out / "sft" / "loss.png").is_file()
    assert "seed 0; stages ran in 2 process(es)" in text


def _stage(name: str, log: list[str]):
    def run(ctx):
        log.append(name)
        return name

    return run


def test_stages_run_in_order_and_a_missing_need_is_an_error():
    log: list[str] = []
    ctx = SimpleNamespace(settings=SimpleNamespace(workers=1), results={})
    stages = {
        "a": demo.Stage(_stage("a", log)),
        "b": demo.Stage(_stage("b", log), needs=("a",)),
    }
    assert run_stages(ctx, stages) == ["a", "b"] and log == ["a", "b"]
    ctx.results.clear()
    with pytest.raises(LmadaptError, match="stage b needs c"):
        run_stages(ctx, {"b": demo.Stage(_stage("b", log), needs=("c",))})
