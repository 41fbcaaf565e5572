"""HINT vs the concatenation baseline at the same underlying model and training budget.

    python benchmarks/hint_vs_concat.py [--steps 1200] [--out runs/bench-hint] [--threads 1]

Both arms are the `lmadapt demo` stages (`stage_sft`, `stage_hint` of `lmadapt.demo`): the same tiny Llama
built from the built-in suite's vocabulary, the same steps, batch size (32), learning rate and
schedule, def+2pos prompts (the concatenation model reads them whole; HINT's hypernetwork reads the
instruction, the underlying model only "Input: <x>. Output:"). They are then compared on the held-out
families (every phrasing, 100 instances per task): ROUGE-L and exact match (SuperNI metric), inference
FLOPs per instance (analytic, matmuls, each arm's real prompt and output lengths; HINT includes one
hypernetwork pass per task) and wall time per instance (greedy generation in batches of 64; HINT
includes looking up / compiling each task's modules). The other two evaluation sets are scored on 5
instances per task, to keep the run short.

Prints a table, then one JSON object on the last line: `flops_ratio` and `wall_ratio` are
concatenation's cost over HINT's, `rougeL_gap` and `exact_match_gap` concatenation's score minus HINT's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from lmadapt.config import ModelConfig
from lmadapt.data.superni import eval_instances
from lmadapt.data.tasks import PromptEncoding
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import encode_prompt, encode_text
from lmadapt.demo.hint_stage import stage_hint
from lmadapt.demo.stages import Context, DemoSettings, build_base_model, stage_sft
from lmadapt.demo.suite import build_suite, export_superni
from lmadapt.eval.flops import ModelShape, generation_flops
from lmadapt.eval.generate import generate
from lmadapt.eval.metrics import score
from lmadapt.hint import load_hint_run, predict
from lmadapt.models.load import load_model, load_tokenizer

INSTANCES_PER_TASK = 100
OTHER_SETS_INSTANCES = 5
BATCH_SIZE = 64  # generation
BATCH_OF_TRAINING = 32


def trimmed(tasks: list, n: int) -> list:
    return [replace(t, instances=t.instances[:n]) for t in tasks]


def concatenation_eval(run_dir: Path, instances: list, max_new_tokens: int) -> dict:
    """Greedy generation from the full def+2pos prompts, timed, with FLOPs from real token counts."""
    tokenizer = load_tokenizer(str(run_dir))
    model, _ = load_model(ModelConfig(path=str(run_dir)))
    template = get_template("tokenizer", tokenizer)
    prompts = [encode_prompt([{"role": "user", "content": x.prompt}], template, tokenizer) for x in instances]
    start = time.perf_counter()
    predictions = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - start
    shape = ModelShape.from_config(model.config)
    flops = sum(
        generation_flops(shape, len(p), min(len(encode_text(y, tokenizer)) + 1, max_new_tokens))
        for p, y in zip(prompts, predictions, strict=True)
    )
    return {"predictions": predictions, "flops": flops / len(instances), "seconds": seconds / len(instances)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps of each arm")
    parser.add_argument("--out", default=f"runs/bench-hint-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest on a busy CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    total_start = time.perf_counter()

    # The demo's model and optimiser; def+2pos prompts and a batch of 32 so both arms fit the time budget.
    settings = DemoSettings(
        seed=args.seed,
        encoding="def+2pos",
        max_steps=args.steps,
        batch_size=BATCH_OF_TRAINING,
        warmup_steps=min(100, args.steps // 10),
        num_threads=args.threads,
        eval_instances=INSTANCES_PER_TASK,
    )
    suite = build_suite(
        seed=args.seed, train_instances=settings.train_instances, eval_instances=INSTANCES_PER_TASK
    )
    suite = replace(
        suite,
        heldout_instances=trimmed(suite.heldout_instances, OTHER_SETS_INSTANCES),
        heldout_phrasings=trimmed(suite.heldout_phrasings, OTHER_SETS_INSTANCES),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    ctx = Context(
        out=out,
        settings=settings,
        suite=suite,
        suite_dir=export_superni(suite, out / "suite"),
        base_model=build_base_model(suite, settings, out / "base-model"),
        encoding=PromptEncoding.parse("def+2pos"),
    )
    stages = {"concat": stage_sft(ctx), "hint": stage_hint(ctx)}

    instances = eval_instances(suite.heldout_families, ctx.encoding)
    refs = [x.references for x in instances]
    concat = concatenation_eval(stages["concat"].run_dir, instances, settings.max_new_tokens)
    hinted = predict(
        load_hint_run(stages["hint"].run_dir),
        instances,
        max_new_tokens=settings.max_new_tokens,
        batch_size=BATCH_SIZE,
        persist_cache=False,
    )
    arms = {
        "concat": {**concat, "train_seconds": stages["concat"].train_seconds},
        "hint": {
            "predictions": hinted.predictions,
            "flops": hinted.flops["hint"]["per_instance"],
            "seconds": hinted.seconds / len(instances),
            "train_seconds": stages["hint"].train_seconds,
        },
    }
    result: dict = {"steps": args.steps, "instances": len(instances), "tasks": len(suite.heldout_families)}
    for name, arm in arms.items():
        scored = score(arm.pop("predictions"), refs)["default"]
        result[name] = {
            "rougeL": scored["rougeL"],
            "exact_match": scored["exact_match"],
            "flops_per_instance": arm["flops"],
            "seconds_per_instance": arm["seconds"],
            "train_seconds": round(arm["train_seconds"], 1),
            "other_sets": {k: v for k, v in stages[name].scores.items() if k != "heldout_families"},
        }
    c, h = result["concat"], result["hint"]
    result.update(
        flops_ratio=c["flops_per_instance"] / h["flops_per_instance"],
        wall_ratio=c["seconds_per_instance"] / h["seconds_per_instance"],
        rougeL_gap=c["rougeL"] - h["rougeL"],
        exact_match_gap=c["exact_match"] - h["exact_match"],
        hint_hypernetwork_flops_per_task=hinted.flops["hint"]["hypernetwork_per_task"],
        total_minutes=(time.perf_counter() - total_start) / 60,
    )
    print("| arm | ROUGE-L | EM | GFLOPs/instance | ms/instance | train s |")
    print("|---|---|---|---|---|---|")
    for name in arms:
        r = result[name]
        print(
            f"| {name} | {r['rougeL']:.1f} | {r['exact_match']:.1f} | {r['flops_per_instance'] / 1e9:.4f} "
            f"| {1e3 * r['seconds_per_instance']:.2f} | {r['train_seconds']:.0f} |"
        )
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
