"""DPO training speed and memory: lmadapt (cached reference log-probs) vs TRL's DPOTrainer (defaults).

    python benchmarks/dpo_vs_trl.py [--pairs 48] [--batch 4] [--steps 8] [--warmup 1] [--rounds 2]
                                    [--trl-args '{"precompute_ref_log_probs": true}']

Both sides train the same ~10M-parameter Llama (fp32, CPU) on the same preference pairs, rendered
with the Tulu template: lmadapt reads the JSONL, TRL gets the same text with a byte tokenizer that
adds nothing, so both see identical token ids. TRL runs with its DPOConfig defaults (a reference
model beside the policy, recomputed every step; gradient checkpointing on) except what must match:
batch size, learning rate, steps, fp32 (its bf16 default is for GPUs), no logging/saving. Each side
runs in its own subprocess per round, rounds alternate, and each side keeps its best steps/s, so a
background load that comes and goes penalises neither. Memory is the peak resident set size of the
process (getrusage maxrss) minus its maxrss after imports, i.e. what the model, data and training
added; the whole peak is reported too. lmadapt's one-time reference pass is not a training step, so
it is in setup_s (time before the first step), next to TRL's dataset preparation.

The last line is one JSON object: {"steps_per_s_ratio": ours/TRL, "peak_mem_ratio": ours/TRL, ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import string
import tempfile
import time
from pathlib import Path

from _common import StepTimes, run_child

# On this shared 2-core machine two threads per process were up to 5x slower than one whenever
# other jobs ran (threads wait on each other when one is descheduled), in both sides alike.
THREADS = 1
VOCAB = 8192  # ByT5 ids use the first 384; the rest make the LM head as costly as a small real vocab


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def prepare(work: Path, pairs: int) -> None:
    """The ~10M-parameter model, its tokenizer and the preference pairs, shared by both sides."""
    import torch
    from transformers import ByT5Tokenizer

    from lmadapt.models.tiny import tiny_llama

    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    # 8192 x 256 embeddings + untied head (4.2M) + 6 layers x 1.0M = ~10.5M parameters.
    model = tiny_llama(
        VOCAB,
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

    def words(lo: int, hi: int) -> str:
        n = rng.randint(lo, hi)
        return " ".join(
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(n)
        )

    with open(work / "pairs.jsonl", "w", encoding="utf-8") as f:
        for _ in range(pairs):
            record = {"prompt": words(10, 30), "chosen": words(6, 20), "rejected": words(6, 20)}
            f.write(json.dumps(record) + "\n")


def run_ours(work: Path, args: argparse.Namespace, round_index: int) -> dict:
    from lmadapt.config import DPOConfig, load_config
    from lmadapt.recipes import dpo

    baseline = maxrss_mb()
    fit_started = []
    fit = dpo.fit

    def timed_fit(*a, **kw):
        fit_started.append(time.perf_counter())
        return fit(*a, **kw)

    dpo.fit = timed_fit
    cfg = load_config(
        DPOConfig,
        None,
        [
            f"model.path={work / 'model'}",
            f"data.sources.0.path={work / 'pairs.jsonl'}",
            f"data.cache_dir={work / f'cache-{round_index}'}",  # every round pays the reference pass
            "data.max_length=1024",
            f"train.output_dir={work / f'ours-{round_index}'}",
            f"train.batch_size={args.batch}",
            f"train.max_steps={args.warmup + args.steps}",
            "train.lr=1e-6",
            "train.log_every=1",
            "train.progress=false",
            f"train.num_threads={THREADS}",
            "dpo.reference=cached",
        ],
    )
    start = time.perf_counter()
    result = dpo.run(cfg)
    records = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    # With log_every=1, tokens_per_s is pairs per second of each step (the engine's unit is the pair).
    step_seconds = [args.batch / r["tokens_per_s"] for r in records if "loss" in r][args.warmup :]
    return {
        "steps_per_s": len(step_seconds) / sum(step_seconds),
        "setup_s": fit_started[0] - start,
        "peak_rss_mb": maxrss_mb(),
        "added_rss_mb": maxrss_mb() - baseline,
    }


def run_trl(work: Path, args: argparse.Namespace, round_index: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, ByT5Tokenizer
    from trl import DPOConfig, DPOTrainer

    from lmadapt.data.templates import get_template

    class NoEosByteTokenizer(ByT5Tokenizer):
        """Adds no EOS when called, so TRL's tokenisation of the text below equals lmadapt's."""

        def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
            return token_ids_0 + (token_ids_1 or [])

    baseline = maxrss_mb()
    start = time.perf_counter()
    torch.set_num_threads(THREADS)
    tok = NoEosByteTokenizer()
    template = get_template("tulu", tok)
    rows = []
    for line in (work / "pairs.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows.append(
            {
                "prompt": template.generation_prompt([{"role": "user", "content": record["prompt"]}]),
                "chosen": record["chosen"] + tok.eos_token,
                "rejected": record["rejected"] + tok.eos_token,
            }
        )
    config = DPOConfig(
        output_dir=str(work / f"trl-{round_index}"),
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-6,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=args.warmup + args.steps,
        disable_tqdm=True,
        **json.loads(args.trl_args),
    )
    times = StepTimes()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32),
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
        "setup_s": train_start - start,
        "peak_rss_mb": maxrss_mb(),
        "added_rss_mb": maxrss_mb() - baseline,
        "gradient_checkpointing": config.gradient_checkpointing,
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
    }


def child(args: argparse.Namespace) -> None:
    # Import each side's libraries before the memory baseline, so it measures training, not imports.
    import lmadapt.recipes.dpo  # noqa: F401

    if args.side == "trl":
        import trl  # noqa: F401

        result = run_trl(Path(args.work), args, args.round)
    else:
        result = run_ours(Path(args.work), args, args.round)
    print(json.dumps(result))


def spawn(side: str, work: Path, args: argparse.Namespace, round_index: int) -> dict:
    return run_child(
        __file__,
        [
            "--side",
            side,
            "--work",
            str(work),
            "--round",
            str(round_index),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--trl-args",
            args.trl_args,
        ],
        THREADS,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4, help="pairs per optimizer step, both sides")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trl-args", default="{}", help="JSON of extra DPOConfig arguments for TRL")
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
        prepare(work, args.pairs)
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for round_index in range(args.rounds):
            for side in ("ours", "trl"):
                runs[side].append(spawn(side, work, args, round_index))
    best = {side: max(r["steps_per_s"] for r in rs) for side, rs in runs.items()}
    added = {side: max(r["added_rss_mb"] for r in rs) for side, rs in runs.items()}
    peak = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in runs.items()}
    setup = {side: min(r["setup_s"] for r in rs) for side, rs in runs.items()}
    print(
        f"~10.5M-param Llama, {args.pairs} pairs, batch {args.batch} pairs, best of {args.rounds} rounds of "
        f"{args.steps} steps, {THREADS} threads: lmadapt {best['ours']:.3f} steps/s "
        f"(+{added['ours']:.0f} MB, setup {setup['ours']:.1f}s incl. reference pass), "
        f"TRL {best['trl']:.3f} steps/s (+{added['trl']:.0f} MB, setup {setup['trl']:.1f}s)"
    )
    summary = {
        "pairs": args.pairs,
        "batch_pairs": args.batch,
        "measured_steps": args.steps,
        "rounds": args.rounds,
        "threads": THREADS,
        "trl_args": json.loads(args.trl_args),
        "ours_steps_per_s": round(best["ours"], 4),
        "trl_steps_per_s": round(best["trl"], 4),
        "ours_added_rss_mb": round(added["ours"], 1),
        "trl_added_rss_mb": round(added["trl"], 1),
        "ours_peak_rss_mb": round(peak["ours"], 1),
        "trl_peak_rss_mb": round(peak["trl"], 1),
        "ours_setup_s": round(setup["ours"], 2),
        "trl_setup_s": round(setup["trl"], 2),
        "whole_peak_rss_ratio": round(peak["ours"] / peak["trl"], 3),
        "wall_s": round(time.perf_counter() - began, 1),
        "steps_per_s_ratio": round(best["ours"] / best["trl"], 3),
        "peak_mem_ratio": round(added["ours"] / added["trl"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
