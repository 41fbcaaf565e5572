from __future__ import annotations

import json

import yaml

from lmadapt.data.tasks import encode_instance, encode_instruction
from lmadapt.demo.rl_stage import RL_SET, stage_grpo
from lmadapt.demo.stages import stage_sft


def test_grpo_stage_trains_from_sft_on_fresh_inputs_and_reports_before_and_after(demo_context):
    ctx = demo_context
    ctx.results["sft"] = stage_sft(ctx)
    result = stage_grpo(ctx)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["path"] == str(ctx.results["sft"].run_dir)
    assert saved["reward"]["kind"] == "exact_match"
    prompts = [
        json.loads(line) for line in (ctx.out / "data" / "grpo_prompts.jsonl").read_text().splitlines()
    ]
    s = ctx.settings
    assert len(prompts) == s.grpo_prompts_per_task * len(ctx.suite.heldout_phrasings)
    contents = [p["messages"][0]["content"] for p in prompts]
    for task in ctx.suite.heldout_phrasings:  # none of a task's RL prompts is one of its evaluation prompts
        own = [c for c in contents if c.startswith(encode_instruction(task, ctx.encoding))]
        evaluated = tuple(encode_instance(i.input, compact=True) for i in task.instances)
        assert len(own) == s.grpo_prompts_per_task and not any(c.endswith(evaluated) for c in own)
    before = ctx.results["sft"].scores[RL_SET]["exact_match"]
    assert result.extra["exact_match_before"] == before
    assert result.extra["exact_match_after"] == result.scores[RL_SET]["exact_match"]
    assert f"{before:.1f} after SFT" in result.notes[1]
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == s.grpo_steps and "reward_mean" in records[-1]
