from __future__ import annotations

import json

import yaml

from lmadapt.demo.hint_stage import stage_hint
from lmadapt.demo.suite import EVAL_SETS
from lmadapt.hint import load_hint_run
from lmadapt.store import MANIFEST


def test_hint_stage_uses_the_sft_budget_and_is_scored_by_eval_superni(demo_context):
    ctx = demo_context
    result = stage_hint(ctx)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["path"] == str(ctx.base_model)
    s = ctx.settings
    assert (saved["train"]["max_steps"], saved["train"]["batch_size"], saved["train"]["lr"]) == (
        s.max_steps,
        s.batch_size,
        s.lr,
    )
    assert load_hint_run(result.run_dir).settings.template == "tulu"
    for set_name in EVAL_SETS:
        metrics = json.loads((ctx.out / "eval" / "hint" / set_name / "metrics.json").read_text())
        assert result.scores[set_name]["exact_match"] == metrics["overall"]["exact_match"]
        assert metrics["run"]["model"] == str(result.run_dir)
        hint_flops = metrics["flops"]["hint"]
        assert result.per_set[set_name]["inference FLOPs per instance"] == hint_flops["per_instance"]
        assert result.per_set[set_name]["eval seconds per instance"] > 0
    assert result.trained_tokens == result_tokens(result.run_dir)
    # Compiled modules: the hypernetwork read each evaluation task's instruction once.
    tasks = sum(len(tasks) for tasks in ctx.suite.eval_sets().values())
    assert len(list((result.run_dir / "modules").glob(f"*/{MANIFEST}"))) == tasks


def result_tokens(run_dir) -> int:
    """Trained tokens the run's own log reports at its last step."""
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return int(last["trained_tokens"])
