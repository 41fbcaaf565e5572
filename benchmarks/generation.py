"""Batched vs one-at-a-time greedy generation with lmadapt.eval.generate on a tiny random Llama.

    python benchmarks/generation.py

Prints one human-readable line, then one JSON object on the last line.
"""

from __future__ import annotations

import json
import random
import string
import time

import torch
from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

from lmadapt.eval.generate import generate

NUM_PROMPTS = 64
NEW_TOKENS = 32
BATCH_SIZE = 16
# Steps of a 1M-parameter model are far too small to gain from more threads, and on a shared CPU the
# synchronisation of several threads made each step up to 10x slower in both modes.
THREADS = 1


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=384,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config).float().eval()
    # A random model stops at EOS at random; allowing only byte tokens makes every row generate exactly
    # NEW_TOKENS tokens, so both modes do the same work.
    banned = torch.zeros(config.vocab_size)
    banned[:3] = -1e4
    banned[259:] = -1e4
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + banned)
    return model


def timed(fn) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rng = random.Random(0)
    model, tokenizer = tiny_llama(), ByT5Tokenizer()
    prompts = [
        "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(rng.randint(16, 160)))
        for _ in range(NUM_PROMPTS)
    ]
    generate(model, tokenizer, prompts[:2], max_new_tokens=4)  # warm-up

    batched_s, batched = timed(
        lambda: generate(model, tokenizer, prompts, max_new_tokens=NEW_TOKENS, batch_size=BATCH_SIZE)
    )
    sequential_s, sequential = timed(
        lambda: [generate(model, tokenizer, [p], max_new_tokens=NEW_TOKENS)[0] for p in prompts]
    )
    result = {
        "params": sum(p.numel() for p in model.parameters()),
        "prompts": NUM_PROMPTS,
        "new_tokens": NEW_TOKENS,
        "batch_size": BATCH_SIZE,
        "torch_threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 3),
        "sequential_s": round(sequential_s, 3),
        "speedup": round(sequential_s / batched_s, 2),
        "batched_tokens_per_s": round(NUM_PROMPTS * NEW_TOKENS / batched_s, 1),
        "identical_outputs": batched == sequential,
    }
    print(
        f"{NUM_PROMPTS} prompts x {NEW_TOKENS} new tokens, {result['params'] / 1e6:.2f}M-param Llama on CPU: "
        f"batched (batch {BATCH_SIZE}) {batched_s:.2f}s, one at a time {sequential_s:.2f}s, "
        f"speedup {result['speedup']}x, identical outputs: {result['identical_outputs']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
