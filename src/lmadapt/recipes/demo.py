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
from pathlib import Path

from lmadapt.config import save_config, to_dict
from lmadapt.data.synthetic import EVAL_SETS, build_suite, export_superni
from lmadapt.data.tasks import PromptEncoding
from lmadapt.errors import LmadaptError
from lmadapt.recipes.demo_preference import stage_dpo
from lmadapt.recipes.demo_stages import Context, DemoSettings, StageResult, build_base_model, stage_sft
from lmadapt.recipes.hint import stage_hint

log = logging.getLogger("lmadapt")

STAGES: list[Callable[[Context], StageResult]] = [stage_sft, stage_hint, stage_dpo]


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
    results = []
    for stage in STAGES:
        result = stage(ctx)
        ctx.results[result.name] = result
        results.append(result)
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
        lines += [f"Training: {r.train_seconds:.0f} s, {r.trained_tokens:,} trained tokens (or pairs) seen."]
        per_set = {
            k: v
            for k, v in r.extra.items()
            if isinstance(v, dict) and all(isinstance(x, float) for x in v.values())
        }
        if per_set:  # e.g. HINT's FLOPs and wall time per instance, by evaluation set
            lines += ["", "| measure | " + " | ".join(EVAL_SETS) + " |", "|---" * (1 + len(EVAL_SETS)) + "|"]
            for k, v in per_set.items():
                lines.append(
                    f"| {k.replace('_', ' ')} | "
                    + " | ".join(f"{v.get(e, float('nan')):.4g}" for e in EVAL_SETS)
                    + " |"
                )
        scalars = {k: v for k, v in r.extra.items() if isinstance(v, int | float)}
        if scalars:
            shown = (
                f"{k.replace('_', ' ')}: {v:.1f}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
                for k, v in scalars.items()
            )
            lines += ["", ", ".join(shown) + "."]
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
