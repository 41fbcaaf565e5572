"""An evaluation suite's summary: one headline number per evaluation and model, beside the Tulu 2 paper's.

`recipes.eval_suite` runs the evaluations (each writes its own directory as `lmadapt eval NAME` would);
this module knows which number of each evaluation's metrics.json is its headline, what the Tulu 2 paper
reported for the same evaluation, and writes the suite's metrics.json, report.md and chart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmadapt.eval.report import _table, plot_bars, write_metrics

CHART_NAME = "suite.png"


@dataclass
class SuiteEvalConfig:
    """One evaluation of the suite: `eval` names it (as `lmadapt eval NAME`), `args` are its settings (its
    command-line flags, with underscores), `name` labels it in the report and names its directory."""

    eval: str = ""
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.eval


PaperModel = Literal["Tulu 2 7B", "Tulu 2+DPO 7B", "Tulu 2 70B", "Tulu 2+DPO 70B"]


@dataclass
class SuiteConfig:
    """`lmadapt eval suite CONFIG`: every evaluation of `evals` on every model of `models` (label: local
    directory), results under `out`/<model>/<evaluation>/ and the summary in `out`."""

    out: str = ""
    models: dict[str, str] = field(default_factory=dict)
    evals: list[SuiteEvalConfig] = field(default_factory=list)
    paper: list[PaperModel] = field(default_factory=lambda: ["Tulu 2 7B", "Tulu 2+DPO 7B"])


@dataclass(frozen=True)
class Headline:
    """The number a suite reports for an evaluation: `metric` names it, `value` reads it from metrics.json."""

    metric: str
    value: Callable[[Mapping[str, Any]], float]
    higher_is_better: bool = True


def _overall(key: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda metrics: metrics["overall"][key]


HEADLINES: dict[str, Headline] = {
    "superni": Headline("ROUGE-L", _overall("rougeL")),
    "mc": Headline("accuracy", _overall("accuracy")),
    "gsm8k": Headline("accuracy", _overall("accuracy")),
    "mmlu": Headline("accuracy", _overall("accuracy_micro")),
    "bbh": Headline("exact match", _overall("exact_match")),
    "tydiqa": Headline("F1", _overall("f1")),
    "ifeval": Headline("prompt-level loose", _overall("prompt_level_loose")),
    "truthfulqa": Headline("MC2", _overall("mc2")),
    "humaneval": Headline("pass@10", _overall("pass@10")),  # Tulu 2's figure (the default k includes 10)
    "mbpp": Headline("pass@1", _overall("pass@1")),
    "alpaca": Headline("win rate", _overall("win_rate")),
    "toxigen": Headline("% toxic", _overall("percent_toxic"), higher_is_better=False),
    "rewards": Headline("pair accuracy", lambda metrics: 100 * metrics["accuracy"]),
}


@dataclass(frozen=True)
class PaperResult:
    """A row of Tulu 2's Table 1 (Ivison et al. 2023): its setting and the four models' scores."""

    setting: str
    scores: Mapping[str, float]


def _paper(setting: str, *scores: float) -> PaperResult:
    models = ("Tulu 2 7B", "Tulu 2+DPO 7B", "Tulu 2 70B", "Tulu 2+DPO 70B")
    return PaperResult(setting, dict(zip(models, scores, strict=True)))


PAPER: dict[str, PaperResult] = {
    "mmlu": _paper("0-shot accuracy", 50.4, 50.7, 67.3, 67.8),
    "gsm8k": _paper("8-shot chain of thought", 34.0, 34.5, 73.0, 71.5),
    "bbh": _paper("3-shot chain of thought", 48.5, 45.5, 68.4, 66.0),
    "tydiqa": _paper("GoldP 1-shot F1", 46.4, 44.5, 53.6, 35.8),
    "humaneval": _paper("Codex-Eval pass@10", 36.9, 40.0, 68.5, 68.9),
    # AlpacaEval 1 with a GPT-4 judge (the models' cards give the same numbers): a local judge differs.
    "alpaca": _paper("% win vs text-davinci-003, GPT-4 judge", 73.9, 85.1, 86.6, 95.1),
    "toxigen": _paper("% toxic (lower is better)", 7.0, 0.5, 0.5, 0.2),
}


def headline(eval_name: str, metrics: Mapping[str, Any]) -> float:
    return float(HEADLINES[eval_name].value(metrics))


def suite_metrics(
    cfg: SuiteConfig,
    scores: Mapping[str, Mapping[str, float]],
    errors: Mapping[str, Mapping[str, str]],
    dirs: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The suite's metrics.json: per evaluation label, its metric, each model's headline score (or the
    error that stopped it) and result directory, and the paper's numbers for the chosen `cfg.paper` models."""
    evaluations = {}
    for item in cfg.evals:
        head, paper = HEADLINES[item.eval], PAPER.get(item.eval)
        evaluations[item.label] = {
            "eval": item.eval,
            "metric": head.metric,
            "higher_is_better": head.higher_is_better,
            "scores": dict(scores.get(item.label, {})),
            "errors": dict(errors.get(item.label, {})),
            "dirs": dict(dirs.get(item.label, {})),
            "paper": None
            if paper is None
            else {"setting": paper.setting, **{m: paper.scores[m] for m in cfg.paper}},
        }
    return {"models": dict(cfg.models), "evaluations": evaluations}


def write_suite_report(out_dir: str | Path, metrics: Mapping[str, Any], paper_models: Sequence[str]) -> Path:
    """report.md: a row per evaluation, a column per model, then the paper's columns; and the chart."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models, evaluations = list(metrics["models"]), metrics["evaluations"]

    def cell(entry: Mapping[str, Any], model: str) -> str:
        if model in entry["scores"]:
            return f"{entry['scores'][model]:.2f}"
        return "failed" if model in entry["errors"] else "-"

    rows = []
    for label, entry in evaluations.items():
        paper = entry["paper"] or {}
        arrow = "↑" if entry["higher_is_better"] else "↓"
        rows.append(
            [
                label,
                f"{entry['metric']} {arrow}",
                *(cell(entry, model) for model in models),
                *(f"{paper[m]:.1f}" if m in paper else "-" for m in paper_models),
                paper.get("setting", "-"),
            ]
        )
    lines = [
        "# Evaluation suite",
        "",
        "Models: " + ", ".join(f"**{label}** `{path}`" for label, path in metrics["models"].items()),
        "",
        "Each evaluation's own report (per task, per subject, predictions) is in its directory, "
        "`<model>/<evaluation>/`. The paper's columns are Tulu 2's Table 1 (Ivison et al. 2023) in the "
        "setting named there, for orientation only: they are 7B/70B models on the full test sets.",
        "",
        _table(
            ["evaluation", "metric", *models, *(f"{m} (paper)" for m in paper_models), "paper setting"],
            rows,
        ),
        "",
    ]
    failures = [
        f"- {label} on {model}: {error}"
        for label, entry in evaluations.items()
        for model, error in entry["errors"].items()
    ]
    if failures:
        lines += ["## Failed", "", *failures, ""]
    groups = {label: entry["scores"] for label, entry in evaluations.items() if entry["scores"]}
    if groups and all(len(g) == len(models) for g in groups.values()):
        plot_bars(out_dir / CHART_NAME, groups, [(m, m) for m in models], "Evaluation suite")
        lines += [f"![suite]({CHART_NAME})", ""]
    path = out_dir / "report.md"
    write_metrics(out_dir / "metrics.json", metrics)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
