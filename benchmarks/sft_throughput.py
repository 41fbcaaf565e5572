"""SFT training throughput: lmadapt's engine vs a plain PyTorch + transformers loop, same model and data.

    python benchmarks/sft_throughput.py [--steps 4] [--rounds 3] [--seq-len 512] [--batch 4]

Both sides train the same ~10M-parameter Llama (fp32, CPU) on the same examples: sequences of
`--seq-len` tokens whose second half is the trained reply. The naive peer is what a user writes
by hand: model(input_ids, labels=...) with the model's mean loss and torch AdamW. The two sides run
alternately for `--rounds` rounds and each keeps its best round, so a background load that comes
and goes penalises neither. The last line is one JSON object with trained tokens/s of both and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lmadapt.config import TrainConfig
from lmadapt.data.collate import collate_causal
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.models.tiny import tiny_llama
from lmadapt.train.distributed import setup_accelerator
from lmadapt.train.loop import fit
from lmadapt.train.objectives import LanguageModelling

VOCAB = 8192


def make_examples(n: int, seq_len: int, seed: int = 0) -> list[TokenizedExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(3, VOCAB) for _ in range(seq_len)]
        half = seq_len // 2
        out.append(TokenizedExample(ids, [-100] * half + ids[half:]))
    return out


def model_10m() -> torch.nn.Module:
    torch.manual_seed(0)
    # 8192 x 256 embeddings + untied head (4.2M) + 6 layers x 1.0M = ~10.5M parameters.
    return tiny_llama(
        VOCAB, hidden_size=256, num_layers=6, num_heads=8, intermediate_size=688, max_positions=2048
    )


def run_ours(examples: list[TokenizedExample], steps: int, batch: int) -> float:
    model = model_10m()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            output_dir=str(Path(tmp) / "run"), batch_size=batch, max_steps=steps, lr=1e-4, progress=False
        )
        out = Path(tmp) / "run"
        out.mkdir()
        acc = setup_accelerator(cfg)

        def collate(rows):
            return collate_causal(rows, pad_token_id=0)

        fit(model, LanguageModelling("causal"), examples[:batch], collate, cfg, out, acc)  # warm-up step
        cfg.max_steps = steps + 1
        shutil.rmtree(out)
        out.mkdir()
        start = time.perf_counter()
        result = fit(model, LanguageModelling("causal"), examples, collate, cfg, out, acc)
        return result.state.trained_tokens / (time.perf_counter() - start)


def run_naive(examples: list[TokenizedExample], steps: int, batch: int) -> float:
    model = model_10m()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens, start = 0, None
    for step in range(steps + 1):
        rows = examples[(step * batch) % len(examples) :][:batch]
        input_ids = torch.tensor([r.input_ids for r in rows])
        labels = torch.tensor([r.labels for r in rows])
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step == 0:  # the first step is warm-up, as for ours
            start = time.perf_counter()
        else:
            tokens += int((labels[:, 1:] != -100).sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    params = sum(p.numel() for p in model_10m().parameters())
    examples = make_examples(args.batch * (args.steps + 1), args.seq_len)
    naive = ours = 0.0
    for _ in range(args.rounds):
        naive = max(naive, run_naive(examples, args.steps, args.batch))
        ours = max(ours, run_ours(examples, args.steps, args.batch))
    print(
        f"{params / 1e6:.1f}M-param Llama, seq {args.seq_len}, batch {args.batch}, "
        f"best of {args.rounds} rounds of {args.steps} steps, "
        f"{torch.get_num_threads()} threads: lmadapt {ours:.0f} trained tok/s, "
        f"naive loop {naive:.0f} trained tok/s"
    )
    print(
        json.dumps(
            {
                "params": params,
                "seq_len": args.seq_len,
                "batch": args.batch,
                "steps": args.steps,
                "rounds": args.rounds,
                "threads": torch.get_num_threads(),
                "ours_trained_tokens_per_s": round(ours, 1),
                "naive_trained_tokens_per_s": round(naive, 1),
                "ours_total_tokens_per_s": round(2 * ours, 1),
                "speed_ratio": round(ours / naive, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
