"""`lmadapt demo`: the embedded default, end to end on two CPU cores with no downloads.

1. Generate the built-in synthetic instruction suite and export it in the SuperNI layout.
2. Train a word-level tokenizer on it and build a tiny Llama from a config; save both as a local
   Hugging Face model, so the SFT stage loads them the way it loads any real model.
3. Run the stages (SFT on the concatenated prompt first; later stages plug in as more functions in
   `STAGES`), each evaluated on (a) held-out instances of training tasks, (b) held-out phrasings
   of training families, (c) held-out families.
4. Write `report.md`, `results.json` and plots under `runs/demo-<time>/`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import DataConfig, ModelConfig, SFTConfig, SourceConfig, TrainConfig, save_config, to_dict
from lmadapt.data.synthetic import EVAL_SETS, Suite, build_suite, export_superni
from lmadapt.data.tasks import PromptEncoding, Task, encode_prompt
from lmadapt.errors import LmadaptError
from lmadapt.models.tiny import tiny_llama, word_level_tokenizer
from lmadapt.recipes import sft
from lmadapt.recipes.evaluate import run_superni

log = logging.getLogger("lmadapt")


@dataclass
class DemoSettings:
    """Everything the demo decides, in one place (saved to the run directory)."""

    seed: int = 0
    encoding: str = "def+2pos"
    train_instances: int = 400  # per training task
    eval_instances: int = 20  # per evaluation task
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    lr: float = 2e-3
    batch_size: int = 32
    max_steps: int = 1500
    warmup_ratio: float = 0.03
    max_new_tokens: int = 16


@dataclass
class Context:
    """What the stages share: the run directory, the suite, and the base model."""

    out: Path
    settings: DemoSettings
    suite: Suite
    suite_dir: Path
    base_model: Path
    encoding: PromptEncoding


@dataclass
class StageResult:
    name: str
    description: str
    scores: dict[str, dict[str, float]]  # eval set -> {"exact_match", "rougeL"}
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)  # eval set -> family -> EM
    train_seconds: float = 0.0
    trained_tokens: int = 0
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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


def evaluate_run(model_dir: Path, ctx: Context, out: Path) -> tuple[dict, dict, dict]:
    """Score a saved model on the three evaluation sets through `lmadapt eval superni`.

    Returns (set -> {"exact_match", "rougeL"}, set -> family -> exact match, set -> FLOPs record).
    """
    scores, per_family, flops = {}, {}, {}
    for set_name in EVAL_SETS:
        metrics = run_superni(
            ctx.suite_dir,
            out / set_name,
            split=str(ctx.suite_dir / "splits" / "default" / f"{set_name}_tasks.txt"),
            encoding=str(ctx.encoding),
            model=str(model_dir),
            max_instances=None,
            batch_size=64,
            max_new_tokens=ctx.settings.max_new_tokens,
        )
        scores[set_name] = {k: metrics["overall"][k] for k in ("exact_match", "rougeL")}
        per_family[set_name] = {
            k.removeprefix("exact_match_for_"): v
            for k, v in metrics["per_category"].items()
            if k.startswith("exact_match_for_")
        }
        flops[set_name] = metrics.get("flops")
    return scores, per_family, flops


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
        train=TrainConfig(
            output_dir=str(ctx.out / "sft"),
            seed=s.seed,
            max_steps=s.max_steps,
            batch_size=s.batch_size,
            lr=s.lr,
            warmup_ratio=s.warmup_ratio,
            schedule="cosine",
            weight_decay=0.0,
            eval_every=max(1, s.max_steps // 5),
            log_every=10,
        ),
    )
    start = time.perf_counter()
    result = sft.run(cfg)
    seconds = time.perf_counter() - start
    scores, per_family, flops = evaluate_run(result.out_dir, ctx, ctx.out / "eval" / "sft")
    return StageResult(
        name="sft",
        description=f"SFT, instruction concatenated with each input ({ctx.encoding})",
        scores=scores,
        per_family=per_family,
        train_seconds=seconds,
        trained_tokens=result.fit.state.trained_tokens,
        run_dir=result.out_dir,
        extra={"flops": flops},
    )


STAGES: list[Callable[[Context], StageResult]] = [stage_sft]


def build_base_model(suite: Suite, settings: DemoSettings, out: Path) -> Path:
    from lmadapt.data.tasks import task_to_json

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
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    log.info("base model: %.2fM parameters, vocabulary %d words", params / 1e6, len(tokenizer))
    return out


def run(out_root: str | Path = "runs", settings: DemoSettings | None = None) -> Path:
    settings = settings or DemoSettings()
    out = Path(out_root) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists():
        raise LmadaptError(f"{out} already exists")
    out.mkdir(parents=True)
    start = time.perf_counter()
    suite = build_suite(
        seed=settings.seed, train_instances=settings.train_instances, eval_instances=settings.eval_instances
    )
    suite_dir = export_superni(suite, out / "suite")
    ctx = Context(
        out=out,
        settings=settings,
        suite=suite,
        suite_dir=suite_dir,
        base_model=build_base_model(suite, settings, out / "base-model"),
        encoding=PromptEncoding.parse(settings.encoding),
    )
    results = [stage(ctx) for stage in STAGES]
    report = write_report(ctx, results, time.perf_counter() - start)
    print(results_table(results))
    return report


def results_table(results: list[StageResult]) -> str:
    header = "| stage | " + " | ".join(f"{s} EM | {s} ROUGE-L" for s in EVAL_SETS) + " |"
    rule = "|---" * (1 + 2 * len(EVAL_SETS)) + "|"
    rows = [header, rule]
    for r in results:
        cells = " | ".join(
            f"{r.scores[s]['exact_match']:.1f} | {r.scores[s]['rougeL']:.1f}" for s in EVAL_SETS
        )
        rows.append(f"| {r.name} | {cells} |")
    return "\n".join(rows)


def write_report(ctx: Context, results: list[StageResult], seconds: float) -> Path:
    suite = ctx.suite
    lines = [
        "# lmadapt demo report",
        "",
        f"Wall time {seconds / 60:.1f} min. Suite: {len(suite.train)} training tasks "
        f"({len({t.categories[0] for t in suite.train})} families), evaluation sets "
        + ", ".join(
            f"{k}: {len(v)} tasks x {ctx.settings.eval_instances}" for k, v in suite.eval_sets().items()
        )
        + f". Prompt encoding `{ctx.encoding}`; greedy decoding; SuperNI exact match and ROUGE-L (x100).",
        "",
        results_table(results),
        "",
        "![exact match per evaluation set](scores.png)",
        "",
    ]
    for r in results:
        lines += [f"## {r.name}: {r.description}", ""]
        lines += [
            f"Training: {r.train_seconds:.0f} s, {r.trained_tokens:,} trained tokens "
            f"({r.trained_tokens / max(r.train_seconds, 1e-9):.0f}/s incl. data prep)."
        ]
        if r.run_dir is not None and (r.run_dir / "loss.png").exists():
            lines += ["", f"![loss]({r.run_dir.relative_to(ctx.out)}/loss.png)"]
        lines += [
            "",
            "Exact match per family:",
            "",
            "| family | " + " | ".join(EVAL_SETS) + " |",
            "|---" * (1 + len(EVAL_SETS)) + "|",
        ]
        families = sorted({f for s in r.per_family.values() for f in s})
        for fam in families:
            cells = " | ".join(
                f"{r.per_family[s][fam]:.0f}" if fam in r.per_family.get(s, {}) else "" for s in EVAL_SETS
            )
            lines.append(f"| {fam} | {cells} |")
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(to_dict(ctx.settings), indent=2), "```", ""]
    report = ctx.out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    payload = [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.__dict__.items()} for r in results]
    (ctx.out / "results.json").write_text(json.dumps(payload, indent=2))
    save_config(ctx.settings, ctx.out / "settings.yaml")
    plot_scores(results, ctx.out / "scores.png")
    return report


def plot_scores(results: list[StageResult], path: Path) -> Path:
    """Grouped bars: exact match per evaluation set, one group per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    width = 0.8 / len(EVAL_SETS)
    for j, set_name in enumerate(EVAL_SETS):
        xs = [i + j * width for i in range(len(results))]
        ax.bar(
            xs, [r.scores[set_name]["exact_match"] for r in results], width, label=set_name.replace("_", " ")
        )
    ax.set_xticks([i + width * (len(EVAL_SETS) - 1) / 2 for i in range(len(results))])
    ax.set_xticklabels([r.name for r in results])
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
