"""Pieces shared by the demo's stages: settings, the context they share, their results, the base
model, the SFT (concatenation) stage, and the one way every stage is timed and scored.

A stage is a function `Context -> StageResult` that builds a config for a public recipe
(`lmadapt.recipes.sft|hint|dpo`), trains and scores it with `train_and_score`: the timed `run(cfg)`, then
`evaluate_run` (`lmadapt eval superni` on each evaluation set). `demo.run` schedules them; a stage
reads the results of the stages it needs from `ctx.results`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from lmadapt.config import DataConfig, ModelConfig, SFTConfig, SourceConfig, TrainConfig
from lmadapt.data.tasks import PromptEncoding, Task, encode_prompt, task_to_json
from lmadapt.demo.suite import EVAL_SETS, Suite
from lmadapt.models.tiny import tiny_llama, word_level_tokenizer
from lmadapt.recipes import sft
from lmadapt.recipes.evaluate import run_superni

log = logging.getLogger("lmadapt")


@dataclass
class DemoSettings:
    """Everything the demo decides, in one place (saved with the report; `lmadapt demo key=value`).

    Tuned so a 1.1M-parameter Llama trained from scratch learns the training families in a few
    minutes on one CPU core: one-token words, the compact def encoding (~25 tokens per example),
    tied embeddings, lr 1e-3 with cosine decay to a tenth.
    """

    seed: int = 0
    encoding: str = "def+compact"
    train_instances: int = 400  # per training task
    eval_instances: int = 10  # per evaluation task
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    batch_size: int = 64
    max_steps: int = 1200
    warmup_steps: int = 100
    # Measured on 2 cores: 1 thread ~9k tokens/s whatever else runs; 2 threads ~16k on an idle machine
    # but 0.3-2.4k while another process holds a core. So each stage gets one thread, and independent
    # stages (SFT and HINT) run side by side in `workers` processes: both cores, no contention collapse.
    num_threads: int = 1
    workers: int = 2
    max_new_tokens: int = 16
    dpo_pairs_per_task: int = 8
    dpo_steps: int = 60
    dpo_batch_size: int = 16
    dpo_lr: float = 5e-5
    dpo_beta: float = 0.1
    grpo_prompts_per_task: int = 16  # fresh inputs of each held-out-phrasing task (demo/rl_stage.py)
    grpo_prompts_per_step: int = 16
    grpo_generations: int = 8
    grpo_steps: int = 80
    grpo_lr: float = 1e-4
    grpo_beta: float = 0.0  # k3 KL to the SFT model


@dataclass
class Context:
    """What the stages share: the run directory, the suite, and the base model."""

    out: Path
    settings: DemoSettings
    suite: Suite
    suite_dir: Path
    base_model: Path
    encoding: PromptEncoding
    results: dict[str, StageResult] = field(default_factory=dict)  # earlier stages, by name


@dataclass
class StageResult:
    name: str
    description: str
    scores: dict[str, dict[str, float]]  # eval set -> {"exact_match", "rougeL"}
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)  # eval set -> family -> EM
    train_seconds: float = 0.0  # the recipe's `run(cfg)`, loading and saving included (`train_and_score`)
    trained_tokens: int = 0  # tokens the loss was computed on (DPO: chosen and rejected replies)
    run_dir: Path | None = None
    # eval set -> measure -> value, from `evaluate_run` (inference FLOPs and eval seconds per instance)
    per_set: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # sentences for the report, each saying what it counts
    extra: dict[str, Any] = field(default_factory=dict)  # machine-readable details for results.json


def chat_example(task: Task, instance_input: str, answer: str, encoding: PromptEncoding) -> dict[str, Any]:
    prompt = encode_prompt(task, instance_input, encoding)
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def write_chat_jsonl(tasks: list[Task], encoding: PromptEncoding, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for task in tasks:
            for inst in task.instances:
                f.write(json.dumps(chat_example(task, inst.input, inst.outputs[0], encoding)) + "\n")
    return path


@dataclass
class Evaluation:
    scores: dict[str, dict[str, float]]  # eval set -> {"exact_match", "rougeL"}
    per_family: dict[str, dict[str, float]]  # eval set -> family -> exact match
    per_set: dict[str, dict[str, float]]  # eval set -> measure -> value (see `evaluate_run`)
    flops: dict[str, Any]  # eval set -> metrics.json["flops"]


def evaluate_run(run_dir: Path, ctx: Context, out: Path) -> Evaluation:
    """Score a saved run (a Hugging Face model or a HINT run) on the three evaluation sets through
    `lmadapt eval superni`, the same way for every stage.

    Seconds per instance: wall time of the whole evaluation call (loading, prompt encoding, HINT's
    module compilation, generation, scoring) over the set's instances. FLOPs per instance: the analytic
    inference cost of how the run reads its prompts (concatenated instruction + input; HINT: one
    hypernetwork pass per task amortised over its instances, then the input alone).
    """
    evaluation = Evaluation({}, {}, {}, {})
    for set_name in EVAL_SETS:
        start = time.perf_counter()
        metrics = run_superni(
            ctx.suite_dir,
            out / set_name,
            split=str(ctx.suite_dir / "splits" / "default" / f"{set_name}_tasks.txt"),
            encoding=str(ctx.encoding),
            model=str(run_dir),
            max_instances=None,
            batch_size=64,
            max_new_tokens=ctx.settings.max_new_tokens,
        )
        seconds = time.perf_counter() - start
        flops = metrics.get("flops") or {}
        evaluation.scores[set_name] = {k: metrics["overall"][k] for k in ("exact_match", "rougeL")}
        evaluation.per_family[set_name] = {
            fam: m["exact_match"] for fam, m in metrics["per_category"].items()
        }
        evaluation.flops[set_name] = flops
        measures = {"eval seconds per instance": seconds / metrics["overall"]["num_instances"]}
        processing = "hint" if "hint" in flops else "concatenation"
        if processing in flops:
            measures["inference FLOPs per instance"] = float(flops[processing]["per_instance"])
        evaluation.per_set[set_name] = measures
    return evaluation


R = TypeVar("R")


def train_and_score(
    ctx: Context, name: str, description: str, run: Callable[[Any], R], cfg: Any
) -> tuple[R, StageResult]:
    """How every stage trains and is measured: the public recipe's `run(cfg)`, timed (loading and saving
    included), then `evaluate_run` on the three sets. Returns the recipe's result and the stage's row."""
    start = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - start
    evaluation = evaluate_run(result.out_dir, ctx, ctx.out / "eval" / name)
    return result, StageResult(
        name=name,
        description=description,
        scores=evaluation.scores,
        per_family=evaluation.per_family,
        train_seconds=seconds,
        trained_tokens=result.fit.state.trained_tokens,
        run_dir=result.out_dir,
        per_set=evaluation.per_set,
        extra={"flops": evaluation.flops},
    )


def training_budget(ctx: Context, name: str) -> dict[str, Any]:
    """The optimisation every from-scratch stage shares, so stage comparisons are compute-matched."""
    s = ctx.settings
    return {
        "output_dir": str(ctx.out / name),
        "seed": s.seed,
        "max_steps": s.max_steps,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "betas": s.betas,
        "warmup_ratio": s.warmup_steps / s.max_steps,
        "min_lr_ratio": s.min_lr_ratio,
        "num_threads": s.num_threads,
        "progress": s.workers <= 1,  # side-by-side stages log lines; two live bars would interleave
        "schedule": "cosine",
        "weight_decay": 0.0,
        "log_every": 10,
    }


def stage_sft(ctx: Context) -> StageResult:
    """Tk-Instruct-style SFT: the instruction is concatenated with every instance input."""
    s = ctx.settings
    data = write_chat_jsonl(ctx.suite.train, ctx.encoding, ctx.out / "data" / "sft_train.jsonl")
    evals = write_chat_jsonl(
        [t for t in ctx.suite.heldout_instances[:: max(1, len(ctx.suite.heldout_instances) // 8)]],
        ctx.encoding,
        ctx.out / "data" / "sft_eval.jsonl",
    )
    cfg = SFTConfig(
        model=ModelConfig(path=str(ctx.base_model)),
        data=DataConfig(
            sources=[SourceConfig(path=str(data))],
            eval_sources=[SourceConfig(path=str(evals))],
            template="tulu",
            max_length=256,
            cache_dir=str(ctx.out / "cache"),
            seed=s.seed,
        ),
        train=TrainConfig(**training_budget(ctx, "sft"), eval_every=max(1, s.max_steps // 5)),
    )
    description = f"SFT, instruction concatenated with each input ({ctx.encoding})"
    return train_and_score(ctx, "sft", description, sft.run, cfg)[1]


def build_base_model(suite: Suite, settings: DemoSettings, out: Path) -> Path:
    corpus = [
        json.dumps(task_to_json(t)) for tasks in (suite.train, *suite.eval_sets().values()) for t in tasks
    ]
    corpus += ["Definition Positive Example Input Output Now complete the following example - : . ,"]
    tokenizer = word_level_tokenizer(corpus)
    torch.manual_seed(settings.seed)
    model = tiny_llama(
        len(tokenizer),
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        tokenizer=tokenizer,
        tie_word_embeddings=True,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    log.info("base model: %.2fM parameters, vocabulary %d words", params / 1e6, len(tokenizer))
    return out
