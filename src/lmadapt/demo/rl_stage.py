"""The demo's online RL stage: GRPO from the SFT model with an exact-match reward (RLVR).

The SFT model leaves the held-out phrasings of the training families unsaturated (the instructions
are new to it). This stage samples the SFT model's answers to *fresh* inputs of those tasks, rewards an
answer 1 when it exactly matches the rule's output and 0 otherwise, and trains with `lmadapt grpo`:
no demonstration of the answers, only the verifier. It is then scored like every stage; its
held-out-phrasings column counts inputs RL never saw, with instructions it did (its note says so), and
the SFT row is its "before".
"""

from __future__ import annotations

from lmadapt.config import (
    GRPOConfig,
    GRPOLossConfig,
    ModelConfig,
    PromptDataConfig,
    RLTrainConfig,
    RolloutConfig,
    VerifiableRewardConfig,
)
from lmadapt.data.tasks import encode_prompt
from lmadapt.demo.preference import write_jsonl
from lmadapt.demo.stages import Context, StageResult, train_and_score
from lmadapt.demo.suite import fresh_instances
from lmadapt.recipes import grpo

RL_SET = "heldout_phrasings"


def stage_grpo(ctx: Context) -> StageResult:
    s = ctx.settings
    sft = ctx.results["sft"]
    assert sft.run_dir is not None
    records = [
        {
            "messages": [{"role": "user", "content": encode_prompt(task, inst.input, ctx.encoding)}],
            "ground_truth": inst.outputs,
        }
        for task in ctx.suite.heldout_phrasings
        for inst in fresh_instances(task, s.grpo_prompts_per_task, s.seed)
    ]
    prompts = write_jsonl(records, ctx.out / "data" / "grpo_prompts.jsonl")
    cfg = GRPOConfig(
        model=ModelConfig(path=str(sft.run_dir)),
        data=PromptDataConfig(sources=[str(prompts)], template="tokenizer", cache_dir=str(ctx.out / "cache")),
        rollout=RolloutConfig(
            prompts_per_step=s.grpo_prompts_per_step,
            num_generations=s.grpo_generations,
            temperature=1.0,
            max_new_tokens=s.max_new_tokens,
        ),
        reward=VerifiableRewardConfig(kind="exact_match"),
        grpo=GRPOLossConfig(loss_type="dapo", epsilon_high=0.28, beta=s.grpo_beta),
        train=RLTrainConfig(
            output_dir=str(ctx.out / "grpo"),
            seed=s.seed,
            max_steps=s.grpo_steps,
            batch_size=s.grpo_prompts_per_step * s.grpo_generations,
            lr=s.grpo_lr,
            num_threads=s.num_threads,
            progress=s.workers <= 1,
            log_every=5,
        ),
    )
    description = (
        f"GRPO from the SFT model, exact-match reward on fresh inputs of the {RL_SET.replace('_', ' ')} tasks"
    )
    result, stage = train_and_score(ctx, "grpo", description, grpo.run, cfg)
    before, after = sft.scores[RL_SET]["exact_match"], stage.scores[RL_SET]["exact_match"]
    state = result.fit.state
    stage.notes = [
        f"RL prompts: {len(records)} fresh inputs of the {len(ctx.suite.heldout_phrasings)} "
        "held-out-phrasing tasks (none of their evaluation inputs), "
        f"{s.grpo_prompts_per_step} prompts x {s.grpo_generations} samples per step, {state.step} steps; "
        "reward 1 for an exact match, else 0.",
        "Held-out phrasings exact match (evaluation inputs, unseen by RL; the instructions were seen in RL, "
        f"so this column is no longer zero-shot for this row): {before:.1f} after SFT, {after:.1f} after "
        "GRPO.",
    ]
    stage.extra.update(
        rl_set=RL_SET, exact_match_before=before, exact_match_after=after, rl_prompts=len(records)
    )
    return stage
