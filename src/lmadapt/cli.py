"""`lmadapt` command line: parse a command and its config, run one recipe, say where results went."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lmadapt import __version__
from lmadapt.errors import Interrupted, LmadaptError, Preempted

log = logging.getLogger("lmadapt")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML recipe (its first line is the command that runs it)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--force", action="store_true", help="with --resume: continue even if the config changed")


# command -> (config class in lmadapt.config, recipe module in lmadapt.recipes, help)
RECIPES = {
    "sft": ("SFTConfig", "sft", "supervised instruction tuning (full or LoRA)"),
    "dpo": ("DPOConfig", "dpo", "preference tuning: DPO, dpo_norm, IPO, SimPO (cached reference log-probs)"),
    "reward": ("RewardConfig", "reward", "train a scalar reward model on preference pairs (Bradley-Terry)"),
    "hint": ("HintConfig", "hint", "HINT: hypernetwork instruction tuning (instruction read once per task)"),
    "grpo": ("GRPOConfig", "grpo", "online RL with verifiable rewards (GRPO, DAPO, Dr. GRPO losses)"),
    "ppo": ("PPOConfig", "ppo", "online RL with a reward model: PPO with a value model and GAE (Tulu 2.5)"),
}


def cmd_recipe(args: argparse.Namespace) -> None:
    """`lmadapt sft|dpo|reward|hint|grpo|ppo CONFIG [overrides]`: load the typed config, run the recipe."""
    from lmadapt import config

    class_name, module_name, _ = RECIPES[args.command]
    # The config is checked before the recipe (and torch with it) is imported: config errors are instant.
    cfg = config.load_config(getattr(config, class_name), args.config, _recipe_overrides(args))
    if args.command == "hint":  # `builtin` data and model: the demo's suite and tiny Llama (hint_demo.yaml)
        from lmadapt.demo.builtin import resolve_builtin

        cfg = resolve_builtin(cfg)
    recipe = importlib.import_module(f"lmadapt.recipes.{module_name}")
    from lmadapt.train.run import RunComplete

    try:
        print(f"{args.command} run saved to {recipe.run(cfg).out_dir}")
    except RunComplete as done:
        print(done)


def _recipe_overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if args.resume:
        extra.append("train.resume=true")
    if args.overwrite:
        extra.append("train.overwrite=true")
    if args.force:
        extra.append("train.force_resume=true")
    return [*args.overrides, *extra]


def cmd_select(args: argparse.Namespace) -> None:
    """`lmadapt select CONFIG [overrides] [--overwrite]`: choose pool examples for the target tasks."""
    from lmadapt import config

    cfg = config.load_config(
        config.SelectConfig, args.config, [*args.overrides, *(["overwrite=true"] if args.overwrite else [])]
    )
    from lmadapt.recipes.select import run

    result = run(cfg)
    print(
        f"selected {len(result.picks)} of {result.pool_size} examples: {result.output} "
        f"(manifest {result.manifest})"
    )


def cmd_compile(args: argparse.Namespace) -> None:
    from lmadapt.recipes.hint import run_compile

    result = run_compile(
        args.model,
        args.out,
        task=args.task,
        instruction=args.instruction,
        examples=args.examples,
        encoding=args.encoding,
        peft=args.peft,
    )
    print(f"modules: {result.path}" + (f"; PEFT adapter: {result.peft_dir}" if result.peft_dir else ""))


def cmd_demo(args: argparse.Namespace) -> None:
    from lmadapt import demo
    from lmadapt.config import load_config

    settings = load_config(demo.DemoSettings, None, args.overrides)
    report = demo.run(out_root=args.out, settings=settings)
    print(f"report: {report}")


def cmd_data_render(args: argparse.Namespace) -> None:
    from lmadapt.data.render import format_marked, is_preference_data, render_examples, render_pairs
    from lmadapt.models.load import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    if is_preference_data(args.data):
        pairs = render_pairs(args.data, args.template, tokenizer, max_length=args.max_length)
        for i, pair in enumerate(pairs[: args.limit] if args.limit else pairs):
            if args.json:
                print(json.dumps(pair))
                continue
            sides = {name: pair[name] for name in ("chosen", "rejected")}
            counts = ", ".join(f"{n} {sum(x != -100 for x in s['labels'])}" for n, s in sides.items())
            print(f"===== {args.data}:{pair['line']} (pair {i + 1}; trained tokens: {counts}) =====")
            for name, side in sides.items():
                print(f"--- {name}:\n{format_marked(tokenizer, side['input_ids'], side['labels'])}")
        return
    rows = render_examples(
        args.data, args.template, tokenizer, max_length=args.max_length, format=args.format, kind=args.kind
    )
    for i, row in enumerate(rows[: args.limit] if args.limit else rows):
        if args.json:
            print(json.dumps({k: row[k] for k in ("line", "text", "input_ids", "labels")}))
        else:
            trained = sum(x != -100 for x in row["labels"])
            print(f"===== {args.data}:{row['line']} (example {i + 1}, {trained} trained tokens) =====")
            print(format_marked(tokenizer, row["input_ids"], row["labels"]))


def cmd_merge(args: argparse.Namespace) -> None:
    from lmadapt.models.merge import merge_adapter

    print(f"merged model saved to {merge_adapter(args.model, args.out, args.overwrite, args.dtype)}")


# The evaluation commands. Each runs one function of lmadapt.recipes.evaluate with the values of its
# arguments (named as the function's parameters) and prints its result line, a coverage warning when
# predictions are missing or empty, and where the report is. Arguments: (flags, argparse options).
Argument = tuple[tuple[str, ...], dict[str, Any]]
_OUT: list[Argument] = [
    (("--out",), {"required": True, "help": "directory for predictions.jsonl, metrics.json, report.md"}),
    (("--overwrite",), {"action": "store_true", "help": "replace existing result files in --out"}),
]
_CHAT_TEMPLATE = (
    "send prompts as a user turn of the tokenizer's chat template: auto (when it has one), on, off"
)
_LM: list[Argument] = [
    (("--model",), {"required": True, "help": "local model directory"}),
    (("--chat-template",), {"default": "auto", "choices": ["auto", "on", "off"], "help": _CHAT_TEMPLATE}),
    (("--batch-size",), {"type": int, "default": 16}),
]
_QUESTIONS: list[Argument] = [
    (("--max-questions",), {"type": int, "default": 0, "help": "first N questions (0 = all)"}),
]


def _superni_line(metrics: dict[str, Any]) -> str:
    overall = metrics["overall"]
    return f"exact match {overall['exact_match']:.2f}, ROUGE-L {overall['rougeL']:.2f}"


def _mc_line(metrics: dict[str, Any]) -> str:
    overall = metrics["overall"]
    return f"accuracy {overall['accuracy']:.2f} (per token {overall['accuracy_per_token']:.2f})"


def _or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rewards_line(metrics: dict[str, Any]) -> str:
    return f"pairwise accuracy {metrics['accuracy']:.4f} on {metrics['pairs']} pairs"


def _code_arguments(what: str, defaults: str, timeout: str) -> list[Argument]:
    """The arguments of a code evaluation (HumanEval, MBPP): generation settings default to `defaults`."""
    return [
        (("--data",), {"required": True, "help": what}),
        *_OUT,
        (("--model",), {"help": "local model directory (sampled generation)"}),
        (("--predictions",), {"help": "score a JSONL of {id: '<task_id>#<sample>', prediction} instead"}),
        (("--samples",), {"type": int, "help": f"completions per problem ({defaults})"}),
        (("--temperature",), {"type": float, "help": "sampling temperature, 0 = greedy"}),
        (("--top-p",), {"type": float}),
        (
            ("--k",),
            {"type": int, "nargs": "+", "default": [1, 10], "help": "pass@k for each k (default 1 10)"},
        ),
        (("--seed",), {"type": int, "help": "sampling seed (default 0)"}),
        (
            ("--chat-template",),
            {"choices": ["auto", "on", "off"], "help": _CHAT_TEMPLATE + " (default auto)"},
        ),
        (("--batch-size",), {"type": int, "help": "prompts per generation batch (default 16)"}),
        (("--max-new-tokens",), {"type": int, "help": "default 512"}),
        (("--max-problems",), {"type": int, "default": 0, "help": "first N problems (0 = all)"}),
        (
            ("--timeout",),
            {"type": float, "help": f"seconds per program (default {timeout}, as the reference)"},
        ),
        (("--workers",), {"type": int, "help": "programs run at once (default: CPU count)"}),
    ]


def _pass_at_k_line(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in metrics["overall"].items() if "@" in name)


# eval command -> (help, arguments, result line); its function is lmadapt.recipes.evaluate.RUNNERS[command]
EVALS: dict[str, tuple[str, list[Argument], Callable[[dict[str, Any]], str]]] = {
    "superni": (
        "Super-NaturalInstructions protocol and official metrics",
        [
            (("--data",), {"required": True, "help": "local natural-instructions clone (or same layout)"}),
            *_OUT,
            (("--model",), {"help": "local model or HINT run directory (greedy generation)"}),
            (("--predictor",), {"choices": ["copy-input", "copy-demo"], "help": "heuristic baseline"}),
            (
                ("--predictions",),
                {"help": "score a JSONL of {id, prediction} (with --model: it only counts compute)"},
            ),
            (
                ("--split",),
                {"default": "default", "help": "default, xlingual, splits/<name>, or a task list"},
            ),
            (
                ("--encoding",),
                {"help": "def, def+2pos, def+2pos+2neg, ... (default: a HINT run's own, else def+2pos)"},
            ),
            (("--max-instances",), {"type": int, "default": 100, "help": "first N per test task (0 = all)"}),
            (
                ("--chat-template",),
                {"choices": ["auto", "on", "off"], "help": _CHAT_TEMPLATE + " (default auto)"},
            ),
            (("--batch-size",), {"type": int, "help": "prompts per generation batch (default 16)"}),
            (("--max-new-tokens",), {"type": int, "help": "default 128"}),
            (("--max-source-tokens",), {"type": int, "help": "prompt length limit (default 1024; 0 = none)"}),
            (("--xlingual-tokenizer",), {"help": "local GPT-2 tokenizer directory for the xlingual track"}),
        ],
        _superni_line,
    ),
    "mc": (
        "multiple choice by log-likelihood (MMLU-style JSONL)",
        [
            (("--data",), {"required": True, "help": "JSONL of {question, choices, answer, subject?}"}),
            *_OUT,
            *_LM,
            (("--fewshot",), {"help": "JSONL of answered examples shown before each question"}),
            (("--k",), {"type": int, "default": 5, "help": "number of few-shot examples"}),
            (("--answer-format",), {"default": "text", "choices": ["text", "letter"]}),
            *_QUESTIONS,
        ],
        _mc_line,
    ),
    "gsm8k": (
        "GSM8K chain of thought as Tulu 2 prompted and scored it (GSM8K-style JSONL)",
        [
            (("--data",), {"required": True, "help": "JSONL of {question, answer}; gold answer after ####"}),
            *_OUT,
            *_LM,
            (
                ("--fewshot",),
                {"help": "JSONL of worked examples shown before each question (cot_answer: used as is)"},
            ),
            (("--k",), {"type": int, "default": 8, "help": "number of few-shot examples"}),
            (("--max-new-tokens",), {"type": int, "default": 512}),
            (
                ("--max-questions",),
                {"type": int, "default": 200, "help": "seeded sample, as Tulu drew it (Tulu: 200; 0 = all)"},
            ),
        ],
        lambda metrics: (
            f"accuracy {metrics['overall']['accuracy']:.2f} "
            f"(by numeric value {metrics['overall']['accuracy_numeric']:.2f})"
        ),
    ),
    "mmlu": (
        "MMLU as Tulu 2 scored it (official CSV layout; next-token letter)",
        [
            (("--data",), {"required": True, "help": "MMLU data/ directory (test/ and dev/ CSV files)"}),
            *_OUT,
            *_LM,
            (
                ("--k",),
                {"type": int, "default": 5, "help": "shots from each subject's dev file (Tulu: 0, 5)"},
            ),
            (("--max-prompt-tokens",), {"type": int, "default": 2048, "help": "longer prompts lose shots"}),
        ],
        lambda metrics: (
            f"accuracy {metrics['overall']['accuracy_micro']:.2f} "
            f"(macro over subjects {metrics['overall']['accuracy_macro']:.2f})"
        ),
    ),
    "bbh": (
        "BIG-Bench Hard 3-shot chain of thought as Tulu 2 scored it (official layout)",
        [
            (
                ("--data",),
                {"required": True, "help": "directory with bbh/<task>.json and cot-prompts/<task>.txt"},
            ),
            *_OUT,
            *_LM,
            (
                ("--max-examples-per-task",),
                {"type": int, "default": 40, "help": "seeded sample per task (Tulu: 40; 0 = all)"},
            ),
            (("--max-new-tokens",), {"type": int, "default": 512}),
        ],
        lambda metrics: f"exact match {metrics['overall']['exact_match']:.2f} (mean over tasks)",
    ),
    "tydiqa": (
        "TyDi QA GoldP 1-shot as Tulu 2 scored it (official SQuAD-layout files; SQuAD F1/EM per language)",
        [
            (("--data",), {"required": True, "help": "directory with tydiqa-goldp-v1.1-{dev,train}.json"}),
            *_OUT,
            *_LM,
            (("--k",), {"type": int, "default": 1, "help": "shots per language from the train file"}),
            (
                ("--max-questions-per-language",),
                {"type": int, "default": 100, "help": "seeded sample per language (Tulu: 100; 0 = all)"},
            ),
            (("--max-context-tokens",), {"type": int, "default": 512, "help": "cut passages (0 = none)"}),
            (("--max-new-tokens",), {"type": int, "default": 50}),
        ],
        lambda metrics: (
            f"F1 {metrics['overall']['f1']:.2f}, EM {metrics['overall']['exact_match']:.2f} "
            "(mean over languages)"
        ),
    ),
    "ifeval": (
        "IFEval verifiable instructions: strict and loose, prompt and instruction level",
        [
            (("--data",), {"required": True, "help": "input_data.jsonl of the release (or its directory)"}),
            *_OUT,
            (("--model",), {"help": "local model directory (greedy generation)"}),
            (
                ("--predictions",),
                {"help": "JSONL of responses: {id: key, prediction} or the official {prompt, response}"},
            ),
            *_LM[1:],
            (("--max-new-tokens",), {"type": int, "default": 2048}),
            *_QUESTIONS,
        ],
        lambda metrics: (
            f"prompt-level strict {metrics['overall']['prompt_level_strict']:.2f}, "
            f"loose {metrics['overall']['prompt_level_loose']:.2f}"
        ),
    ),
    "truthfulqa": (
        "TruthfulQA MC1/MC2 and judged % true and informative, as Tulu 2 ran it",
        [
            (("--data",), {"required": True, "help": "mc_task.json (or HF JSONL/Parquet) or TruthfulQA.csv"}),
            *_OUT,
            *_LM,
            (("--truth-judge",), {"help": "local truth judge model: generate answers and judge them"}),
            (("--info-judge",), {"help": "local informativeness judge model"}),
            (("--no-mc",), {"action": "store_true", "help": "skip MC1/MC2 (only judged generation)"}),
            (("--max-new-tokens",), {"type": int, "default": 50}),
            *_QUESTIONS,
        ],
        lambda metrics: ", ".join(
            f"{k} {v:.2f}" for k, v in metrics["overall"].items() if k != "num_questions"
        ),
    ),
    "humaneval": (
        "Codex-HumanEval pass@k as Tulu 2 ran it (official JSONL; programs run in the sandbox)",
        _code_arguments("HumanEval.jsonl(.gz)", "Tulu 2: 20 at temperature 0.8, top-p 0.95", "3"),
        _pass_at_k_line,
    ),
    "mbpp": (
        "MBPP-style problems, pass@k with open-instruct's prompt (programs run in the sandbox)",
        _code_arguments("MBPP JSONL(.gz)", "open-instruct: 20 at temperature 0.1", "10"),
        _pass_at_k_line,
    ),
    "alpaca": (
        "AlpacaEval-style win rate over reference outputs, judged by a local reward model or LM",
        [
            (
                ("--data",),
                {"required": True, "help": "reference outputs in the AlpacaEval layout (.json/.jsonl)"},
            ),
            *_OUT,
            (("--judge",), {"required": True, "help": "judge directory: a reward model or a causal LM"}),
            (("--judge-type",), {"required": True, "choices": ["reward", "lm"]}),
            (("--model",), {"help": "local model directory whose outputs are judged (greedy generation)"}),
            (("--predictions",), {"help": "judge these outputs instead (AlpacaEval layout, by instruction)"}),
            (
                ("--chat-template",),
                {"choices": ["auto", "on", "off"], "help": _CHAT_TEMPLATE + " (default auto)"},
            ),
            (("--batch-size",), {"type": int, "default": 16, "help": "generation and judge batch size"}),
            (("--max-new-tokens",), {"type": int, "help": "default 8192 (Tulu's)"}),
            (
                ("--judge-max-length",),
                {"type": int, "default": 2048, "help": "judge's token limit (reward: per side)"},
            ),
            (("--max-instances",), {"type": int, "default": 0, "help": "first N instructions (0 = all)"}),
        ],
        lambda metrics: (
            f"win rate {metrics['overall']['win_rate']:.2f} "
            f"(length-controlled {_or_na(metrics['overall']['length_controlled_win_rate'])})"
        ),
    ),
    "toxigen": (
        "ToxiGen % toxic continuations as Tulu 2 ran it, judged by a local classifier",
        [
            (
                ("--data",),
                {"required": True, "help": "directory of <label>_<group>.txt ToxiGen prompt files"},
            ),
            *_OUT,
            *_LM,
            (
                ("--classifier",),
                {"required": True, "help": "local sequence classifier (e.g. toxigen_roberta)"},
            ),
            (("--toxic-label",), {"help": "the classifier's toxic label, name or index (default LABEL_1)"}),
            (
                ("--max-prompts-per-group",),
                {"type": int, "default": 500, "help": "seeded sample per file (Tulu: 500; 0 = all)"},
            ),
            (("--max-new-tokens",), {"type": int, "default": 512}),
            (("--classifier-batch-size",), {"type": int, "default": 32}),
        ],
        lambda metrics: f"{metrics['overall']['percent_toxic']:.2f}% toxic",
    ),
    "rewards": (
        "pairwise accuracy of a reward model on held-out preference pairs",
        [
            (("--model",), {"required": True, "help": "reward model directory (from `lmadapt reward`)"}),
            (("--data",), {"required": True, "nargs": "+", "help": "preference pair files"}),
            *_OUT,
            (("--template",), {"default": "tokenizer", "help": "chat template (default: the model's own)"}),
            (("--max-length",), {"type": int, "default": 1024}),
            (("--batch-size",), {"type": int, "default": 8}),
        ],
        _rewards_line,
    ),
}


def _dest(flags: tuple[str, ...]) -> str:
    return flags[0].lstrip("-").replace("-", "_")


def cmd_eval(args: argparse.Namespace) -> None:
    """`lmadapt eval NAME ...`: run the evaluation with its arguments, print its result line."""
    from lmadapt.eval.report import coverage_warning
    from lmadapt.recipes import evaluate

    _, arguments, line = EVALS[args.eval_command]
    metrics = evaluate.RUNNERS[args.eval_command](
        **{_dest(flags): getattr(args, _dest(flags)) for flags, _ in arguments}
    )
    warning = coverage_warning(metrics.get("coverage"))
    print(f"{line(metrics)}{f'; WARNING: {warning}' if warning else ''}; report: {args.out}/report.md")


def cmd_eval_suite(args: argparse.Namespace) -> None:
    """`lmadapt eval suite CONFIG [overrides]`: the suite's evaluations on each of its models."""
    from lmadapt.config import load_config
    from lmadapt.eval.suite import SuiteConfig

    cfg = load_config(SuiteConfig, args.config, args.overrides)
    from lmadapt.recipes import evaluate
    from lmadapt.recipes.eval_suite import run_suite

    metrics = run_suite(cfg, evaluate.RUNNERS, args.overwrite)
    failed = [
        f"{label} on {model}" for label, entry in metrics["evaluations"].items() for model in entry["errors"]
    ]
    print(f"suite report: {cfg.out}/report.md")
    if failed:
        raise LmadaptError(f"{len(failed)} evaluation(s) failed ({', '.join(failed)}); see the report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmadapt", description="Adapt pretrained language models to instructions and preferences."
    )
    parser.add_argument("--version", action="version", version=f"lmadapt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for command, (_, _, help_text) in RECIPES.items():
        p = sub.add_parser(command, help=help_text)
        _add_recipe_args(p)
        p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("select", help="choose the pool examples that serve target tasks (rds, deft, random)")
    p.add_argument("config", help="YAML recipe (its first line is the command that runs it)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. selection.count=5000")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output and manifest")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("compile", help="turn an instruction into cached modules with a trained HINT run")
    p.add_argument("--model", required=True, help="HINT run directory (from `lmadapt hint`)")
    p.add_argument("--out", required=True, help="module cache directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="a task JSON file in the SuperNI layout")
    what.add_argument("--instruction", help="the instruction text (definition)")
    p.add_argument(
        "--examples", help="JSON list or JSONL of {input, output} demonstrations (with --instruction)"
    )
    p.add_argument("--encoding", help="def, def+2pos, ... (default: the run's training encoding)")
    p.add_argument("--peft", action="store_true", help="also export LoRA-type modules as a PEFT adapter")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("demo", help="built-in end-to-end demo on a synthetic suite (no downloads, CPU)")
    p.add_argument("--out", default="runs", help="directory under which runs/demo-<time>/ is created")
    p.add_argument("overrides", nargs="*", help="demo settings to change, e.g. seed=1 max_steps=200")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("merge", help="merge a LoRA adapter into its base (a full model)")
    p.add_argument("--model", required=True, help="adapter directory (from a LoRA run)")
    p.add_argument("--out", required=True, help="directory for the merged model and tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("eval", help="evaluate a model or predictions")
    eval_sub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    for name, (help_text, arguments, _) in EVALS.items():
        e = eval_sub.add_parser(name, help=help_text)
        for flags, options in arguments:
            e.add_argument(*flags, **options)
        e.set_defaults(func=cmd_eval)
    e = eval_sub.add_parser("suite", help="several evaluations on one or more models, side by side (YAML)")
    e.add_argument("config", help="YAML suite: out, models (label: directory), evals (eval, name?, args)")
    e.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. models.mine=runs/sft")
    e.add_argument("--overwrite", action="store_true", help="rerun evaluations that already have results")
    e.set_defaults(func=cmd_eval_suite)

    p = sub.add_parser("data", help="inspect data as the model will see it")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    r = data_sub.add_parser("render", help="show rendered examples with trained spans marked ⟦like this⟧")
    r.add_argument(
        "--data",
        required=True,
        help="JSONL/JSON/Parquet file or saved datasets directory (conversations or preference pairs)",
    )
    r.add_argument("--template", default="tulu", help="tulu, chatml, or tokenizer (its own chat_template)")
    r.add_argument("--tokenizer", required=True, help="local tokenizer directory")
    r.add_argument("--format", default="auto", help="auto, messages, prompt_completion, alpaca, sharegpt")
    r.add_argument("--kind", default="causal", choices=["causal", "seq2seq"])
    r.add_argument("--max-length", type=int, default=4096)
    r.add_argument("--limit", type=int, default=0, help="show at most this many examples (0 = all)")
    r.add_argument("--json", action="store_true", help="one JSON object per example: text, input_ids, labels")
    r.set_defaults(func=cmd_data_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after flags too: `lmadapt sft CONFIG --resume key=value`.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not sys.stderr.isatty():
        # transformers' loading/saving bars would write carriage returns into log files. It reads this
        # switch when it is imported (lazily, once a model is loaded).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported (main() called in-process)
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except KeyboardInterrupt:
        print("lmadapt: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print(f"lmadapt: {e}", file=sys.stderr)
        return 130
    except Preempted as e:
        from lmadapt.train.preemption import PREEMPTED_EXIT_CODE

        print(f"lmadapt: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (LmadaptError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"lmadapt: error: {user_message(e)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


def user_message(e: Exception) -> str:
    """One line for a user error. A missing file is a user error wherever it surfaces (data, templates)."""
    if isinstance(e, FileNotFoundError):
        return f"file not found: {e.filename}" if e.filename else f"file not found: {e}"
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
