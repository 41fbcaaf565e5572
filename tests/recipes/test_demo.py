from __future__ import annotations

import json

from lmadapt.recipes import demo


def test_demo_pipeline_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    settings = demo.DemoSettings(
        max_steps=6,
        train_instances=8,
        eval_instances=2,
        hidden_size=32,
        num_layers=1,
        batch_size=8,
        dpo_steps=2,
        dpo_pairs_per_task=1,
        dpo_batch_size=4,
    )
    seen = []

    def extra_stage(ctx: demo.Context) -> demo.StageResult:
        seen.append(ctx.suite_dir)
        return demo.StageResult(
            "extra", "a plugged-in stage", {s: {"exact_match": 1.0, "rougeL": 2.0} for s in demo.EVAL_SETS}
        )

    monkeypatch.setattr(demo, "STAGES", [*demo.STAGES, extra_stage])
    report = demo.run(tmp_path, settings=settings)
    text = report.read_text()
    assert "| sft |" in text and "| extra | 1.0 | 2.0 |" in text
    results = json.loads((report.parent / "results.json").read_text())
    assert [r["name"] for r in results] == ["sft", "hint", "dpo", "extra"]
    hint = results[1]
    assert set(hint["scores"]) == set(demo.EVAL_SETS) and hint["trained_tokens"] > 0
    dpo = results[2]["extra"]
    assert (
        0.0 <= dpo["preference_accuracy_before"] <= 100.0 and 0.0 <= dpo["preference_accuracy_after"] <= 100.0
    )
    assert dpo["train_pairs"] > 0 and "preference accuracy before" in text
    sft = results[0]
    assert set(sft["scores"]) == set(demo.EVAL_SETS)
    assert all(0.0 <= v["exact_match"] <= 100.0 for v in sft["scores"].values())
    assert sft["trained_tokens"] > 0
    assert (report.parent / "scores.png").is_file() and (report.parent / "sft" / "loss.png").is_file()
    assert (seen[0] / "splits" / "default" / "train_tasks.txt").is_file()
