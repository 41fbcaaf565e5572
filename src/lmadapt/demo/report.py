"""The demo's report: report.md (scores, training cost, per-set inference cost, per-family scores),
results.json, settings.yaml and a bar chart of exact match per evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

from lmadapt.config import save_config, to_dict
from lmadapt.demo.stages import Context, StageResult
from lmadapt.demo.suite import EVAL_SETS


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def results_table(results: list[StageResult]) -> str:
    header = ["stage"] + [f"{s} {m}" for s in EVAL_SETS for m in ("EM", "ROUGE-L")]
    rows = [
        [r.name] + [f"{r.scores[s][k]:.1f}" for s in EVAL_SETS for k in ("exact_match", "rougeL")]
        for r in results
    ]
    return "\n".join(_table(header, rows))


def training_line(r: StageResult) -> str:
    """Training wall time, the tokens the loss was computed on, and their ratio."""
    per_token = f" ({1e3 * r.train_seconds / r.trained_tokens:.3f} ms each)" if r.trained_tokens else ""
    return (
        f"Training: {r.train_seconds:.0f} s, {r.trained_tokens:,} trained tokens{per_token}; timed around "
        "the recipe's run(cfg), loading and saving included."
    )


def stage_section(r: StageResult, out: Path) -> list[str]:
    lines = [f"## {r.name}: {r.description}", "", training_line(r)]
    measures = sorted({m for per in r.per_set.values() for m in per})
    if measures:
        rows = [
            [m] + [f"{r.per_set[s][m]:.4g}" if m in r.per_set.get(s, {}) else "-" for s in EVAL_SETS]
            for m in measures
        ]
        lines += ["", *_table(["per instance", *EVAL_SETS], rows)]
    if r.notes:
        lines += ["", *r.notes]
    if r.run_dir is not None and (r.run_dir / "loss.png").exists():
        lines += ["", f"![loss]({r.run_dir.relative_to(out)}/loss.png)"]
    families = sorted({f for per in r.per_family.values() for f in per})
    rows = [
        [fam] + [f"{r.per_family[s][fam]:.0f}" if fam in r.per_family.get(s, {}) else "" for s in EVAL_SETS]
        for fam in families
    ]
    lines += ["", "Exact match per family:", "", *_table(["family", *EVAL_SETS], rows), ""]
    return lines


def write_report(ctx: Context, results: list[StageResult], seconds: float) -> Path:
    suite, s = ctx.suite, ctx.settings
    sets = ", ".join(f"{k}: {len(v)} tasks x {s.eval_instances}" for k, v in suite.eval_sets().items())
    lines = [
        "# lmadapt demo report",
        "",
        f"Wall time {seconds / 60:.1f} min (seed {s.seed}; stages ran in {s.workers} process(es), "
        f"{s.num_threads} thread(s) each). Suite: {len(suite.train)} training tasks "
        f"({len({t.categories[0] for t in suite.train})} families), evaluation sets {sets}. "
        f"Prompt encoding `{ctx.encoding}`; greedy decoding; SuperNI exact match and ROUGE-L (x100), "
        "every stage scored by `lmadapt eval superni` (results under eval/<stage>/<set>/).",
        "",
        results_table(results),
        "",
        "![exact match per evaluation set](scores.png)",
        "",
    ]
    for r in results:
        lines += stage_section(r, ctx.out)
    lines += ["## Settings", "", "```json", json.dumps(to_dict(s), indent=2), "```", ""]
    report = ctx.out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    payload = [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.__dict__.items()} for r in results]
    (ctx.out / "results.json").write_text(json.dumps(payload, indent=2))
    save_config(s, ctx.out / "settings.yaml")
    plot_scores(results, ctx.out / "scores.png")
    return report


def plot_scores(results: list[StageResult], path: Path) -> Path:
    """Grouped bars: exact match per evaluation set, one group per stage."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    width = 0.8 / len(EVAL_SETS)
    for j, set_name in enumerate(EVAL_SETS):
        xs = [i + j * width for i in range(len(results))]
        ems = [r.scores[set_name]["exact_match"] for r in results]
        ax.bar(xs, ems, width, label=set_name.replace("_", " "))
    ax.set_xticks([i + width * (len(EVAL_SETS) - 1) / 2 for i in range(len(results))])
    ax.set_xticklabels([r.name for r in results])
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
