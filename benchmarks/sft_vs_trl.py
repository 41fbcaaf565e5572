"""SFT throughput on long-tailed chat data: lmadapt (padded, packed, length-grouped) vs TRL's SFTTrainer.

    python benchmarks/sft_vs_trl.py [--conversations 2000] [--seconds 15] [--warmup 1] [--rounds 3]
                                    [--threads 2] [--trl-fastest '{"padding_free": true, ...}']

Synthetic chats whose lengths are lognormal (median ~120 tokens, long tail, capped at 512), a
byte-level BPE tokenizer trained here on them, and a ~7.9M-parameter Llama (fp32, CPU), batch 8,
max length 512, rendered with the Tulu template on every side. Six sides, each in its own subprocess
per round, rounds alternating so a background load that comes and goes penalises none:

- lmadapt_random: `data.batching=random` (random batches of 8 examples, right-padded);
- lmadapt_packed: `data.batching=packed` (8 rows of up to 512 tokens, examples isolated);
- lmadapt_grouped: `data.batching=grouped`, the default (8 examples of similar length);
- trl_default: SFTTrainer with its SFTConfig defaults (gradient checkpointing on) but fp32 and batch 8;
- trl_fastest: the same plus `--trl-fastest` (default: padding-free, no gradient checkpointing);
- limit: the bare model's forward + backward + AdamW on full 8 x 512 rows of the same tokens,
  the most this machine does with this model (no padding, no data handling).

Each side trains `--warmup` unmeasured steps, then as many steps as fit in `--seconds`, and counts
the real (non-padding) input tokens of those steps. Each side keeps its best round. The last line
is one JSON object: tokens_per_s of every side, and for every lmadapt side its ratios
vs_trl_default, vs_trl_fastest and of_limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import StepTimes, run_child

VOCAB = 8192
MAX_LENGTH = 512
BATCH = 8
LMADAPT_SIDES = {
    "lmadapt_random": ["data.batching=random"],
    "lmadapt_packed": ["data.batching=packed"],
    "lmadapt_grouped": ["data.batching=grouped"],  # the default
}
SIDES = [*LMADAPT_SIDES, "trl_default", "trl_fastest", "limit"]


def conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Chats of pseudo-words with Zipf frequencies; total words lognormal (median 95, cap 420)."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bdfgklmnprstvz" for b in "aeiou"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)})
    weights = [1 / (rank + 1) for rank in range(len(words))]
    chats = []
    for _ in range(n):
        total = min(420, max(8, round(rng.lognormvariate(math.log(95), 1.0))))
        user = max(3, total // 5)
        text = rng.choices(words, weights, k=total)
        chats.append(
            [
                {"role": "user", "content": " ".join(text[:user]) + "?"},
                {"role": "assistant", "content": " ".join(text[user:]) + "."},
            ]
        )
    return chats


def prepare(work: Path, n: int) -> dict:
    """The chats (JSONL), the trained tokenizer and the model, shared by every side; returns length stats."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lmadapt.data.templates import get_template
    from lmadapt.models.tiny import tiny_llama

    chats = conversations(n)
    with open(work / "chats.jsonl", "w", encoding="utf-8") as f:
        for messages in chats:
            f.write(json.dumps({"messages": messages}) + "\n")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator((m["content"] for chat in chats for m in chat), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    template = get_template("tulu", tok)
    tok.chat_template = template.jinja  # TRL renders the chats with it, as lmadapt does
    torch.manual_seed(0)
    # 8192 x 256 embeddings + untied head (4.2M) + 4 layers x 0.94M = ~7.9M parameters.
    model = tiny_llama(
        VOCAB, hidden_size=256, num_layers=4, num_heads=8, intermediate_size=880, tokenizer=tok
    )
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    lengths = sorted(min(MAX_LENGTH, len(tok(template.render(chat)).input_ids)) for chat in chats)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "median_tokens": statistics.median(lengths),
        "p90_tokens": lengths[int(0.9 * len(lengths))],
        "capped": sum(n == MAX_LENGTH for n in lengths),
        "mean_tokens": round(statistics.fmean(lengths), 1),
    }


class Stop(Exception):
    """Raised from inside lmadapt's training loop once the measured time is up."""


class Meter:
    """Real tokens per step and step boundaries, for a side that runs `warmup` steps then `seconds`."""

    def __init__(self, warmup: int, seconds: float) -> None:
        self.warmup, self.seconds = warmup, seconds
        self.tokens: list[int] = []  # real tokens of step i
        self.start: float | None = None
        self.end = 0.0

    def measured(self, steps_done: int) -> dict:
        tokens = sum(self.tokens[self.warmup : steps_done])
        seconds = self.end - (self.start or self.end)
        return {"tokens_per_s": tokens / seconds, "steps": steps_done - self.warmup, "seconds": seconds}


def run_lmadapt(work: Path, args: argparse.Namespace, side: str) -> dict:
    from lmadapt.config import SFTConfig, load_config
    from lmadapt.recipes import sft

    meter = Meter(args.warmup, args.seconds)
    fit = sft.fit

    def counting_fit(model, objective, train, collate: Callable, *a, **kw):
        def timed_collate(items: list) -> dict:
            # A step collates its micro-batch first (grad_accum=1), so a collate marks a step's start.
            now, step = time.perf_counter(), len(meter.tokens)
            if step == args.warmup:
                meter.start = now
            elif meter.start is not None and now - meter.start >= args.seconds:
                meter.end = now
                raise Stop
            meter.tokens.append(sum(len(e.input_ids) for item in items for e in _examples(item)))
            return collate(items)

        return fit(model, objective, train, timed_collate, *a, **kw)

    sft.fit = counting_fit
    cfg = load_config(
        SFTConfig,
        None,
        [
            f"model.path={work / 'model'}",
            f"data.sources.0.path={work / 'chats.jsonl'}",
            f"data.cache_dir={work / 'cache'}",
            f"data.max_length={MAX_LENGTH}",
            f"train.output_dir={work / side}",
            "train.overwrite=true",
            f"train.batch_size={BATCH}",
            "train.max_steps=1000000",
            "train.lr=1e-4",
            "train.log_every=1000000",
            "train.progress=false",
            f"train.num_threads={args.threads}",
            *LMADAPT_SIDES[side],
        ],
    )
    with contextlib.suppress(Stop):
        sft.run(cfg)
    return meter.measured(len(meter.tokens))


def _examples(item) -> list:
    """A packed row is a list of examples; an unpacked item is one example."""
    return item if isinstance(item, list) else [item]


def run_trl(work: Path, args: argparse.Namespace, side: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    meter = Meter(args.warmup, args.seconds)

    class TimeBudget(StepTimes):
        def on_step_end(self, _args, state, control, **kw):
            super().on_step_end()
            if state.global_step == args.warmup:
                meter.start = self.ends[-1]
            elif meter.start is not None and self.ends[-1] - meter.start >= args.seconds:
                meter.end = self.ends[-1]
                control.should_training_stop = True

    rows = [json.loads(line) for line in (work / "chats.jsonl").read_text().splitlines()]
    extra = json.loads(args.trl_fastest) if side == "trl_fastest" else {}
    settings = {
        "output_dir": str(work / side),
        "per_device_train_batch_size": BATCH,
        "max_length": MAX_LENGTH,
        "max_steps": 1_000_000,
        "learning_rate": 1e-4,
        "bf16": False,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1_000_000,
        "disable_tqdm": True,
    }
    extra = json.loads(args.trl_fastest) if side == "trl_fastest" else {}
    config = SFTConfig(**{**settings, **extra})
    budget = TimeBudget()
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(work / "model"),
        callbacks=[budget],
    )
    collate = trainer.data_collator

    def counting_collate(features: list[dict]) -> dict:
        meter.tokens.append(sum(len(f["input_ids"]) for f in features))
        return collate(features)

    trainer.data_collator = counting_collate
    trainer.train()
    # The data loader may collate one batch ahead: count only the batches of finished steps.
    return {
        **meter.measured(len(budget.ends)),
        "gradient_checkpointing": config.gradient_checkpointing,
        "padding_free": config.padding_free,
        "packing": config.packing,
    }


def run_limit(work: Path, args: argparse.Namespace) -> dict:
    """The bare model on full rows: consecutive 512-token windows of the concatenated chat tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(work / "model")
    text = "\n".join(line for line in (work / "chats.jsonl").read_text().splitlines()[:400])
    ids = torch.tensor(tok(text).input_ids)
    rows = ids[: len(ids) // MAX_LENGTH * MAX_LENGTH].view(-1, MAX_LENGTH)
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    meter = Meter(args.warmup, args.seconds)
    step = 0
    while True:
        now = time.perf_counter()
        if step == args.warmup:
            meter.start = now
        elif meter.start is not None and now - meter.start >= args.seconds:
            meter.end = now
            break
        batch = rows[(step * BATCH) % (len(rows) - BATCH) :][:BATCH]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        meter.tokens.append(batch.numel())
        step += 1
    return meter.measured(step)


def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    if args.side in LMADAPT_SIDES:
        result = run_lmadapt(work, args, args.side)
    elif args.side == "limit":
        result = run_limit(work, args)
    else:
        result = run_trl(work, args, args.side)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--trl-fastest",
        # TRL refuses padding_free with max_length unless packing; the chats fit 512 tokens anyway.
        default='{"padding_free": true, "gradient_checkpointing": false, "max_length": null}',
        help="JSON of the SFTConfig arguments of TRL's fastest side",
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of the sides")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step is slower: allocations, lazy imports)")
    if args.side:
        child(args)
        return

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work, args.conversations)
        runs: dict[str, list[dict]] = {side: [] for side in args.sides.split(",")}
        for _ in range(args.rounds):
            for side in runs:
                flags = ["--side", side, "--work", str(work), "--seconds", str(args.seconds)]
                flags += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
                result = run_child(__file__, [*flags, "--trl-fastest", args.trl_fastest], args.threads)
                print(f"{side}: {json.dumps(result)}", file=sys.stderr, flush=True)
                runs[side].append(result)
    best = {side: max(r["tokens_per_s"] for r in rs) for side, rs in runs.items()}
    print(
        f"{data['params'] / 1e6:.1f}M-param Llama, {args.conversations} chats "
        f"(median {data['median_tokens']} tokens, p90 {data['p90_tokens']}), batch {BATCH}, "
        f"best of {args.rounds} rounds of {args.seconds:.0f}s, {args.threads} threads; real tokens/s: "
        + ", ".join(f"{side} {value:.0f}" for side, value in best.items())
    )
    ratios = {
        name: {side: round(best[side] / best[peer], 3) for side in LMADAPT_SIDES if side in best}
        for name, peer in (
            ("vs_trl_default", "trl_default"),
            ("vs_trl_fastest", "trl_fastest"),
            ("of_limit", "limit"),
        )
        if peer in best
    }
    summary = {
        **data,
        "conversations": args.conversations,
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "threads": args.threads,
        "trl_fastest": json.loads(args.trl_fastest),
        "steps": {side: [r["steps"] for r in rs] for side, rs in runs.items()},
        "wall_s": round(time.perf_counter() - began, 1),
        "tokens_per_s": {side: round(value, 1) for side, value in best.items()},
        **ratios,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
