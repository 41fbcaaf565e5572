"""GRPO training speed and memory: lmadapt vs TRL's GRPOTrainer (use_vllm off), same model and work.

    python benchmarks/grpo_vs_trl.py [--prompts 16] [--per-step 4] [--generations 8] [--max-new 32]
                                     [--steps 4] [--warmup 1] [--rounds 2] [--trl-args '{...}']

Both sides train the same ~5M-parameter Llama (4.94M; fp32, CPU) on the same prompts, rendered with the Tulu
template (TRL gets the rendered text through a byte tokenizer that adds nothing, so both sample from
identical prompt ids), with the same G, completion length, temperature, learning rate, loss (grpo,
one update per rollout batch, beta 0, TRL's default) and a cheap graded reward. An RL step is one
rollout batch of per-step x G completions (sampled with the KV cache) and one optimizer step over it;
lmadapt takes it as one micro-batch, as TRL's per_device_train_batch_size = per-step x G does. TRL
otherwise runs with its GRPOConfig defaults, except fp32 (its bf16 default is for GPUs) and no
logging/saving. The random model rarely samples EOS, so both sides generate full-length completions.

Each side runs in its own subprocess per round, rounds alternate, and each keeps its best steps/s
(step end to step end, after the warm-up steps). Memory is the peak resident set size minus the one
after imports (what the model, data and training added). The last line is one JSON object:
{"steps_per_s_ratio": ours/TRL, "peak_mem_ratio": ours/TRL, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import string
import sys
import tempfile
import time
from pathlib import Path

from _common import StepTimes, run_child

THREADS = 1  # see dpo_vs_trl.py: one thread per process is the fair setting on a shared machine
TEMPERATURE = 1.0
LR = 1e-6
# The graded reward both sides use (a module the lmadapt side imports as a verifier).
REWARD_SOURCE = """
def reward(completion, ground_truth):
    return sum(ord(c) % 7 for c in completion) / (7 * max(1, len(completion)))


def trl_reward(completions, **_):
    return [reward(c, None) for c in completions]
"""


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def prepare(work: Path, prompts: int) -> None:
    """The ~5M-parameter model, its tokenizer, the prompts and the reward module, shared by both sides."""
    import torch
    from transformers import ByT5Tokenizer

    from lmadapt.models.tiny import tiny_llama

    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    # The tokenizer's own 384 ids: every sampled id must decode. 6 layers x 1.0M + embeddings and head.
    model = tiny_llama(
        len(tok),
        hidden_size=256,
        num_layers=6,
        num_heads=8,
        intermediate_size=688,
        max_positions=2048,
        tokenizer=tok,
    )
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    rng = random.Random(0)
    with open(work / "prompts.jsonl", "w", encoding="utf-8") as f:
        for _ in range(prompts):
            text = " ".join(
                "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
                for _ in range(rng.randint(10, 20))
            )
            f.write(json.dumps({"prompt": text, "ground_truth": "x"}) + "\n")
    (work / "bench_reward.py").write_text(REWARD_SOURCE, encoding="utf-8")


def run_ours(work: Path, args: argparse.Namespace, round_index: int) -> dict:
    from lmadapt.config import GRPOConfig, load_config
    from lmadapt.recipes import grpo
    from lmadapt.train.monitor import Monitor

    baseline = maxrss_mb()
    step_ends: list[float] = []
    monitor_step = Monitor.step

    def timed_step(self, *a, **kw):
        step_ends.append(time.perf_counter())
        return monitor_step(self, *a, **kw)

    Monitor.step = timed_step
    batch = args.per_step * args.generations
    cfg = load_config(
        GRPOConfig,
        None,
        [
            f"model.path={work / 'model'}",
            f"data.sources.0={work / 'prompts.jsonl'}",
            f"train.output_dir={work / f'ours-{round_index}'}",
            f"rollout.prompts_per_step={args.per_step}",
            f"rollout.num_generations={args.generations}",
            f"rollout.max_new_tokens={args.max_new}",
            f"rollout.temperature={TEMPERATURE}",
            "reward.kind=verifier",
            "reward.verifier=bench_reward:reward",
            f"train.batch_size={batch}",
            f"train.max_steps={args.warmup + args.steps}",
            f"train.lr={LR}",
            "train.log_every=1",
            "train.progress=false",
            f"train.num_threads={THREADS}",
        ],
    )
    start = time.perf_counter()
    grpo.run(cfg)
    ends = step_ends[args.warmup - 1 :] if args.warmup else [start, *step_ends]
    return {
        "steps_per_s": (len(ends) - 1) / (ends[-1] - ends[0]),
        "peak_rss_mb": maxrss_mb(),
        "added_rss_mb": maxrss_mb() - baseline,
    }


def run_trl(work: Path, args: argparse.Namespace, round_index: int) -> dict:
    import torch
    from bench_reward import trl_reward
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, ByT5Tokenizer
    from trl import GRPOConfig, GRPOTrainer

    from lmadapt.data.templates import get_template

    class NoEosByteTokenizer(ByT5Tokenizer):
        """Adds no EOS when called, so TRL's prompt ids equal lmadapt's."""

        def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
            return token_ids_0 + (token_ids_1 or [])

    baseline = maxrss_mb()
    torch.set_num_threads(THREADS)
    tok = NoEosByteTokenizer()
    template = get_template("tulu", tok)
    rows = [
        {"prompt": template.generation_prompt([{"role": "user", "content": json.loads(line)["prompt"]}])}
        for line in (work / "prompts.jsonl").read_text().splitlines()
    ]
    batch = args.per_step * args.generations
    config = GRPOConfig(
        output_dir=str(work / f"trl-{round_index}"),
        per_device_train_batch_size=batch,
        num_generations=args.generations,
        max_completion_length=args.max_new,
        temperature=TEMPERATURE,
        max_steps=args.warmup + args.steps,
        learning_rate=LR,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=args.warmup + args.steps,
        disable_tqdm=True,
        use_vllm=False,
        **json.loads(args.trl_args),
    )
    times = StepTimes()
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32),
        reward_funcs=trl_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[times],
    )
    train_start = time.perf_counter()
    trainer.train()
    ends = [train_start, *times.ends][args.warmup :]
    return {
        "steps_per_s": (len(ends) - 1) / (ends[-1] - ends[0]),
        "peak_rss_mb": maxrss_mb(),
        "added_rss_mb": maxrss_mb() - baseline,
        "gradient_checkpointing": config.gradient_checkpointing,
        "loss_type": config.loss_type,
    }


def child(args: argparse.Namespace) -> None:
    # Import each side's libraries before the memory baseline, so it measures training, not imports.
    import lmadapt.recipes.grpo  # noqa: F401

    work = Path(args.work)
    os.chdir(work)  # the reward module is imported from here
    sys.path.insert(0, str(work))
    if args.side == "trl":
        import trl  # noqa: F401

        result = run_trl(work, args, args.round)
    else:
        result = run_ours(work, args, args.round)
    print(json.dumps(result))


def spawn(side: str, work: Path, args: argparse.Namespace, round_index: int) -> dict:
    options = {
        "--per-step": args.per_step,
        "--generations": args.generations,
        "--max-new": args.max_new,
        "--steps": args.steps,
        "--warmup": args.warmup,
    }
    flags = [str(x) for pair in options.items() for x in pair]
    child_args = ["--side", side, "--work", str(work), "--round", str(round_index), *flags]
    return run_child(__file__, [*child_args, "--trl-args", args.trl_args], THREADS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--per-step", type=int, default=4, help="prompts per RL step")
    parser.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--max-new", type=int, default=32, help="completion length")
    parser.add_argument("--steps", type=int, default=4, help="measured RL steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trl-args", default="{}", help="JSON of extra GRPOConfig arguments for TRL")
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.prompts)
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for round_index in range(args.rounds):
            for side in ("ours", "trl"):
                runs[side].append(spawn(side, work, args, round_index))
    best = {side: max(r["steps_per_s"] for r in rs) for side, rs in runs.items()}
    added = {side: max(r["added_rss_mb"] for r in rs) for side, rs in runs.items()}
    peak = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in runs.items()}
    print(
        f"~5M-param Llama, {args.per_step} prompts x G={args.generations} x {args.max_new} new tokens per "
        f"step, best of {args.rounds} rounds of {args.steps} steps, {THREADS} thread(s): lmadapt "
        f"{best['ours']:.3f} steps/s (+{added['ours']:.0f} MB), TRL {best['trl']:.3f} steps/s "
        f"(+{added['trl']:.0f} MB)"
    )
    summary = {
        "prompts_per_step": args.per_step,
        "num_generations": args.generations,
        "max_new_tokens": args.max_new,
        "measured_steps": args.steps,
        "rounds": args.rounds,
        "threads": THREADS,
        "trl_args": json.loads(args.trl_args),
        "trl_gradient_checkpointing": runs["trl"][0]["gradient_checkpointing"],
        "ours_steps_per_s": round(best["ours"], 4),
        "trl_steps_per_s": round(best["trl"], 4),
        "ours_added_rss_mb": round(added["ours"], 1),
        "trl_added_rss_mb": round(added["trl"], 1),
        "ours_peak_rss_mb": round(peak["ours"], 1),
        "trl_peak_rss_mb": round(peak["trl"], 1),
        "whole_peak_rss_ratio": round(peak["ours"] / peak["trl"], 3),
        "wall_s": round(time.perf_counter() - began, 1),
        "steps_per_s_ratio": round(best["ours"] / best["trl"], 3),
        "peak_mem_ratio": round(added["ours"] / added["trl"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
