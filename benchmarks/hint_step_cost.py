"""Training cost per trained token: HINT vs SFT (concatenation) on the demo's model, in one process.

    python benchmarks/hint_step_cost.py [--steps 12] [--rounds 3] [--instances 50] [--profile]

Three arms: `sft`, `hint`, and `hint_unfixed`, HINT with the generator's cross-attention as it was
before it projected its learned queries once per pass and padded short softmax rows (`UnfixedAttention`
below, same weights and outputs), so the effect of that change is measured in the same process.

Both arms train the demo's tiny Llama (built from `DemoSettings`, one thread) on the same batches of
the same examples, as the demo's stages encode them: SFT reads the def+compact prompt concatenated
with the input; HINT's hypernetwork reads the instruction (once per distinct instruction in a batch)
and the model reads the compact instance. A step is forward, backward and an AdamW update; trained
tokens (the reply tokens the loss is computed on) are the same for both arms. The arms alternate for
`--rounds` rounds and each keeps its best round, so a load that comes and goes penalises neither.
`--profile` prints each arm's top operators (torch.profiler, self CPU time). The last line is one JSON
object: milliseconds per trained token of each arm, `hint_over_sft` and `hint_unfixed_over_sft`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import ModelConfig
from lmadapt.data.collate import collate_causal
from lmadapt.data.tasks import PromptEncoding, encode_prompt
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import tokenize_causal
from lmadapt.demo.hint_stage import DEMO_MODULES
from lmadapt.demo.stages import DemoSettings, build_base_model
from lmadapt.demo.suite import build_suite
from lmadapt.hint.data import collate_hint, instance_template, task_dataset
from lmadapt.hint.generator import CrossAttention
from lmadapt.hint.model import HintModel
from lmadapt.models.load import load_model, load_tokenizer
from lmadapt.train.objectives import LanguageModelling

Arm = tuple[torch.nn.Module, LanguageModelling, list[dict[str, torch.Tensor]]]


class UnfixedAttention(CrossAttention):
    """The earlier forward: the shared queries are expanded to every instruction row and projected per
    row, and the softmax runs over the instruction length as it is (PyTorch's scalar path below 16)."""

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, n_queries, dim = states.shape[0], queries.shape[-2], queries.shape[-1]
        head_dim = dim // self.num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.num_heads, head_dim).transpose(1, 2)

        rows = queries.expand(batch, -1, -1)
        q, k, v = heads(self.q(rows)), heads(self.k(states)), heads(self.v(states))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        mixed = torch.matmul(scores.softmax(dim=-1), v)
        return self.o(mixed.transpose(1, 2).reshape(batch, n_queries, dim))


def build_arms(base: Path, settings: DemoSettings, instances: int, steps: int) -> dict[str, Arm]:
    suite = build_suite(seed=settings.seed, train_instances=instances, eval_instances=1)
    build_base_model(suite, settings, base)
    tokenizer = load_tokenizer(str(base))
    encoding = PromptEncoding.parse(settings.encoding)
    template = get_template("tulu", tokenizer)
    sft_examples = []
    for task in suite.train:
        for instance in task.instances:
            messages = [
                {"role": "user", "content": encode_prompt(task, instance.input, encoding)},
                {"role": "assistant", "content": instance.outputs[0]},
            ]
            sft_examples.append(tokenize_causal(messages, template, tokenizer, 256))
    # The demo's HINT stage settings: tulu template, compact instances, 192 + 64 tokens.
    hint_data = task_dataset(
        suite.train,
        encoding,
        tokenizer,
        instance_template("tulu", tokenizer),
        "causal",
        256,
        192,
        64,
        "compact",
    )
    assert len(hint_data.examples) == len(sft_examples)  # row i is the same instance in both arms
    rng = random.Random(settings.seed)
    batches = [rng.sample(range(len(sft_examples)), settings.batch_size) for _ in range(steps + 1)]
    pad = tokenizer.pad_token_id

    torch.manual_seed(settings.seed)
    sft_model, _ = load_model(ModelConfig(path=str(base)))
    sft = [collate_causal([sft_examples[i] for i in b], pad) for b in batches]
    torch.manual_seed(settings.seed)
    underlying, _ = load_model(ModelConfig(path=str(base)))
    hint_model = HintModel(underlying, DEMO_MODULES)
    hint = [collate_hint([hint_data.examples[i] for i in b], hint_data.instructions, pad) for b in batches]
    unfixed = copy.deepcopy(hint_model)
    unfixed.generator.attention.__class__ = UnfixedAttention
    with torch.no_grad():  # the same function: only the cost differs
        ids, mask = hint[0]["instruction_ids"], hint[0]["instruction_mask"]
        states, _ = hint_model.encode_instruction(ids, mask)
        queries = hint_model.generator.queries
        expected = hint_model.generator.attention(queries, states, mask)
        torch.testing.assert_close(unfixed.generator.attention(queries, states, mask), expected)
    objective = LanguageModelling("causal")
    return {
        "sft": (sft_model, objective, sft),
        "hint": (hint_model, objective, hint),
        "hint_unfixed": (unfixed, objective, hint),
    }


def time_round(arm: Arm) -> tuple[float, int]:
    """Seconds and trained tokens of the arm's steps after a first warm-up step."""
    model, objective, batches = arm
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seconds, tokens = 0.0, 0
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        weight = objective.weight(batch)
        (objective.loss_sum(model, batch) / weight).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k > 0:
            seconds += time.perf_counter() - start
            tokens += weight
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round and arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=50, help="instances per training task")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = DemoSettings()
    with tempfile.TemporaryDirectory() as tmp:
        arms = build_arms(Path(tmp) / "base", settings, args.instances, args.steps)
    best: dict[str, Any] = {}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            seconds, tokens = time_round(arm)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, tokens)
    result = {f"{name}_ms_per_trained_token": 1e3 * s / t for name, (s, t) in best.items()}
    result["trained_tokens_per_step"] = best["sft"][1] / args.steps
    sft = result["sft_ms_per_trained_token"]
    for name in ("hint", "hint_unfixed"):
        result[f"{name}_over_sft"] = result[f"{name}_ms_per_trained_token"] / sft
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, arm in arms.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                time_round(arm)
            print(name, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), sep="\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
