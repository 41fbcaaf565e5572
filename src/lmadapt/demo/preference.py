"""The demo's preference stage: DPO on pairs built from the synthetic suite, after SFT.

A pair's chosen reply is the correct answer. The rejected one is the SFT model's own answer,
sampled at temperature 1, when it is wrong (the most useful negative: its own mistake), otherwise
a plausible near-miss of the correct answer (an item dropped or repeated, two items swapped, the
input copied). Preference accuracy is the share of held-out pairs whose chosen reply gets the
higher log-probability.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import (
    DataConfig,
    DPOConfig,
    DPOTrainConfig,
    ModelConfig,
    PreferenceLossConfig,
    SourceConfig,
)
from lmadapt.data.preference import PreferencePair, collate_pairs, tokenize_pairs
from lmadapt.data.tasks import Task, encode_prompt
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import encode_prompt as encode_chat_prompt
from lmadapt.demo.stages import Context, StageResult, train_and_score
from lmadapt.eval.generate import generate
from lmadapt.eval.metrics import exact_match
from lmadapt.models.load import load_model, load_tokenizer
from lmadapt.recipes import dpo
from lmadapt.train.preference import reply_log_probs


def near_misses(answer: str, instance_input: str, rng: random.Random) -> list[str]:
    """Wrong answers a weak model plausibly gives, in a seeded random order; none equal `answer`."""
    items = answer.split()
    candidates = [instance_input, " ".join(items[:-1]), " ".join(items + items[-1:])]
    if len(items) >= 2:
        candidates.append(" ".join([items[1], items[0], *items[2:]]))
    rng.shuffle(candidates)
    return [c for c in dict.fromkeys(candidates) if c and exact_match(c, [answer]) == 0.0]


def build_pairs(
    tasks: Sequence[Task], per_task: int, model: torch.nn.Module, tokenizer: Any, ctx: Context, seed: int
) -> tuple[list[dict[str, Any]], float]:
    """Preference records for up to `per_task` instances of each task, and the share of them whose
    rejected reply is the model's own (wrong) sampled answer."""
    rng = random.Random(seed)
    template = get_template("tokenizer", tokenizer)
    rows = []
    for task in tasks:
        for inst in task.instances[:per_task]:
            prompt = [{"role": "user", "content": encode_prompt(task, inst.input, ctx.encoding)}]
            rows.append((prompt, inst))
    ids = [encode_chat_prompt(prompt, template, tokenizer) for prompt, _ in rows]
    # Sampled (not greedy) answers: the model's likely mistakes, which a greedy pass mostly hides.
    answers = generate(
        model,
        tokenizer,
        ids,
        max_new_tokens=ctx.settings.max_new_tokens,
        batch_size=64,
        do_sample=True,
        seed=seed,
    )
    records, own = [], 0
    for (prompt, inst), answer in zip(rows, answers, strict=True):
        chosen = inst.outputs[0]
        if exact_match(answer, inst.outputs) == 0.0 and answer.strip():
            rejected, own = answer.strip(), own + 1
        else:
            misses = near_misses(chosen, inst.input, rng)
            if not misses:
                continue
            rejected = misses[0]
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records, own / max(1, len(records))


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@torch.no_grad()
def preference_accuracy(model: torch.nn.Module, tokenizer: Any, records: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen reply has the higher summed log-probability under `model`."""
    template = get_template("tokenizer", tokenizer)
    pairs = [
        PreferencePair(r["prompt"], r["chosen"], r["rejected"], "<demo>", i + 1)
        for i, r in enumerate(records)
    ]
    tokenized, _ = tokenize_pairs(pairs, template, tokenizer, max_length=512)
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    wins = 0
    for start in range(0, len(tokenized), 64):
        chunk = tokenized[start : start + 64]
        logps, _ = reply_log_probs(model, collate(chunk))
        wins += int((logps[: len(chunk)] > logps[len(chunk) :]).sum())
    model.train(was_training)
    return 100.0 * wins / max(1, len(tokenized))


def stage_dpo(ctx: Context) -> StageResult:
    """DPO from the SFT model, then the same evaluation; reports preference accuracy before/after."""
    s = ctx.settings
    sft_dir = ctx.results["sft"].run_dir
    assert sft_dir is not None
    tokenizer = load_tokenizer(str(sft_dir))
    model, _ = load_model(ModelConfig(path=str(sft_dir)))
    train, own_train = build_pairs(ctx.suite.train, s.dpo_pairs_per_task, model, tokenizer, ctx, s.seed)
    held, own_held = build_pairs(
        ctx.suite.heldout_instances, s.eval_instances, model, tokenizer, ctx, s.seed + 1
    )
    before = preference_accuracy(model, tokenizer, held)
    data_dir = ctx.out / "data"
    cfg = DPOConfig(
        model=ModelConfig(path=str(sft_dir)),
        data=DataConfig(
            sources=[SourceConfig(path=str(write_jsonl(train, data_dir / "dpo_train.jsonl")))],
            eval_sources=[SourceConfig(path=str(write_jsonl(held, data_dir / "dpo_heldout.jsonl")))],
            template="tokenizer",
            max_length=256,
            cache_dir=str(ctx.out / "cache"),
            seed=s.seed,
        ),
        train=DPOTrainConfig(
            output_dir=str(ctx.out / "dpo"),
            seed=s.seed,
            max_steps=s.dpo_steps,
            batch_size=s.dpo_batch_size,
            lr=s.dpo_lr,
            num_threads=s.num_threads,
            warmup_ratio=0.1,
            schedule="linear",
            log_every=5,
        ),
        dpo=PreferenceLossConfig(loss="dpo", beta=s.dpo_beta),
    )
    description = f"DPO (beta {s.dpo_beta}) from the SFT model on {len(train)} suite pairs"
    result, stage = train_and_score(ctx, "dpo", description, dpo.run, cfg)
    after = preference_accuracy(result.model, tokenizer, held)
    pairs_seen = result.fit.state.units  # the preference objective's unit: steps x batch, repeats included
    stage.notes = [
        f"Pairs: {len(train)} for training, {pairs_seen} seen in {result.fit.state.step} steps of "
        f"{s.dpo_batch_size} ({pairs_seen / max(1, len(train)):.2g} passes over them); "
        f"{len(held)} held out (held-out instances of the training tasks).",
        f"Rejected reply is the SFT model's own wrong answer (sampled at temperature 1): "
        f"{100 * own_train:.0f}% of training pairs, {100 * own_held:.0f}% of held-out pairs; "
        "the others are near-misses of the correct answer.",
        f"Preference accuracy on the held-out pairs (chosen reply more likely than rejected): "
        f"{before:.1f}% before DPO, {after:.1f}% after.",
    ]
    stage.extra.update(
        preference_accuracy_before=before,
        preference_accuracy_after=after,
        train_pairs=len(train),
        heldout_pairs=len(held),
        rejected_is_models_own_error={"train": own_train, "heldout": own_held},
    )
    return stage
