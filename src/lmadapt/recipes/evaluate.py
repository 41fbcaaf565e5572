"""Evaluation recipes: `lmadapt eval superni | mc | gsm8k --out DIR ...`.

superni: loads a split of a local natural-instructions clone, gets one prediction per instance (generated
by a model, from a heuristic, or read from a predictions file) and scores it with the leaderboard metric;
with a model, metrics.json also holds the inference FLOPs of concatenated prompts vs instruction-once
processing. mc: multiple-choice questions from a local file, scored by log-likelihood. gsm8k: math word
problems from a local file, answered by greedy generation and graded on the final number.

Each writes DIR/predictions.jsonl, DIR/metrics.json and DIR/report.md (with a chart where scores have
groups). A model whose tokenizer has a chat template (as `lmadapt sft` saves it) gets its prompts as one
user message encoded exactly as training encoded prompts (`chat_template="auto"`; "on" requires the
template, "off" sends plain text).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmadapt import __version__
from lmadapt.config import ModelConfig
from lmadapt.data.superni import TEST_INSTANCES_PER_TASK, eval_instances, load_split_tasks
from lmadapt.data.tasks import PromptEncoding
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval import gsm8k, multiple_choice, report
from lmadapt.eval.flops import superni_flops
from lmadapt.eval.generate import generate
from lmadapt.eval.metrics import score
from lmadapt.eval.predictors import get_predictor, predict
from lmadapt.eval.prompts import CHAT_TEMPLATE_MODES, PromptEncoder, chat_template_for, fit_superni_prompts
from lmadapt.hint.predict import predict as hint_predict
from lmadapt.hint.run import is_hint_run
from lmadapt.models.load import load_model, load_tokenizer

log = logging.getLogger("lmadapt")

OUTPUT_FILES = ("predictions.jsonl", "metrics.json", "report.md", report.CHART_NAME)
MC_OUTPUT_FILES = ("predictions.jsonl", "metrics.json", "report.md", report.SUBJECT_CHART_NAME)
GSM8K_OUTPUT_FILES = ("predictions.jsonl", "metrics.json", "report.md")
TK_INSTRUCT_MAX_SOURCE_TOKENS = 1024


def _check_sources(model: str | None, predictor: str | None, predictions: str | Path | None) -> None:
    if predictor is not None and (model is not None or predictions is not None):
        raise ConfigError("--predictor makes its own predictions: drop --model and --predictions")
    if model is None and predictor is None and predictions is None:
        raise ConfigError(
            "say where predictions come from: --model PATH, --predictor NAME or --predictions FILE"
        )
    if predictor is not None:
        get_predictor(predictor)  # an unknown name fails before any loading


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} {value!r}: expected one of {', '.join(choices)}")


def _prepare_out(out: Path, overwrite: bool, names: Sequence[str]) -> None:
    """Create `out`; refuse to replace results already there unless `overwrite`, which removes them
    (a chart an earlier run drew must not outlive it)."""
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise LmadaptError(
            f"{out} already holds results ({', '.join(existing)}); pass --overwrite to replace them "
            "or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in existing:
        (out / name).unlink()


def _load(model: str, chat_template: str) -> tuple[Any, PromptEncoder]:
    """The model on the best device, and the encoder of its prompts."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model)
    lm, kind = load_model(ModelConfig(path=model), device)
    lm.to(device)
    return lm, PromptEncoder(tokenizer, kind, chat_template_for(tokenizer, chat_template))


def run_superni(
    data: str | Path,
    out: str | Path,
    *,
    split: str = "default",
    encoding: str = "def+2pos",
    model: str | None = None,
    predictor: str | None = None,
    predictions: str | Path | None = None,
    max_instances: int | None = TEST_INSTANCES_PER_TASK,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    overwrite: bool = False,
    xlingual_tokenizer: str | None = None,
    chat_template: str = "auto",
    max_source_tokens: int | None = TK_INSTRUCT_MAX_SOURCE_TOKENS,
) -> dict[str, Any]:
    """Evaluate on the test tasks of `split` and write the result files under `out`; returns metrics.json.

    Predictions come from exactly one of: `model` (a local Hugging Face directory, or a HINT run
    directory from `lmadapt hint`, which predicts with compiled modules; greedy generation),
    `predictor` ("copy-input" or "copy-demo"), or `predictions` (a JSONL file of {"id", "prediction"};
    instances it lacks score as empty). `predictions` may be given with `model`: nothing is generated and
    the model is used only for the compute accounting. `split` is "default", "xlingual", another
    directory under `<data>/splits/`, or a task-list file; `max_instances` None or 0 keeps all.

    Generated prompts go through the model's chat template per `chat_template` (see the module
    docstring) and are fitted to `max_source_tokens` token ids as Tk-Instruct fits its sources
    (`eval.prompts`: demonstrations that do not fit are left out, then an encoder-decoder prompt loses
    its end and a decoder-only prompt its start); None or 0 sends prompts whole. metrics.json["prompts"]
    counts the prompts so shortened.
    """
    _check_sources(model, predictor, predictions)
    _check_choice("chat_template", chat_template, CHAT_TEMPLATE_MODES)
    prompt_encoding = PromptEncoding.parse(encoding)

    tasks = load_split_tasks(data, split, "test", max_instances)
    instances = eval_instances(tasks, prompt_encoding, split)
    if not instances:
        raise LmadaptError(f"split {split!r} of {data} has no test instances")
    log.info("%d instances of %d tasks, encoding %s", len(instances), len(tasks), prompt_encoding)
    if xlingual_tokenizer is None and any(instance.track == "xlingual" for instance in instances):
        # Checked before generating: the xlingual track cannot be scored without it.
        raise ConfigError(
            "xlingual tasks are scored over GPT-2 tokens: pass a local GPT-2 tokenizer directory"
        )
    out = Path(out)
    _prepare_out(out, overwrite, OUTPUT_FILES)

    if predictions is not None:
        predicted = report.read_predictions(predictions, instances)
    elif predictor is not None:
        predicted = predict(predictor, tasks, instances)
    lm = encoder = prompts = hint_flops = None
    if model is not None and is_hint_run(model):
        if predictions is not None:
            raise ConfigError("--predictions cannot be combined with a HINT run; HINT predicts for itself")
        # HINT: each task's instruction goes to the hypernetwork once (cached modules), the model
        # reads only the instance input.
        hinted = hint_predict(model, instances, max_new_tokens=max_new_tokens, batch_size=batch_size)
        predicted, hint_flops = hinted.predictions, hinted.flops
    elif model is not None:
        lm, encoder = _load(model, chat_template)
    if encoder is not None and predictions is None:
        by_name = {task.name: task for task in tasks}
        instances, prompt_ids, fitted = fit_superni_prompts(
            instances, by_name, prompt_encoding, encoder, max_source_tokens
        )
        prompts = {
            "chat_template": encoder.template is not None,
            "max_source_tokens": max_source_tokens or None,
            "demonstrations_dropped": fitted.demonstrations_dropped,
            "truncated": fitted.truncated,
        }
        log.info("generating with %s (batch size %d, up to %d new tokens)", model, batch_size, max_new_tokens)
        predicted = generate(
            lm, encoder.tokenizer, prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size
        )

    results = score(
        predicted,
        [instance.references for instance in instances],
        task_names=[instance.task for instance in instances],
        categories=[instance.category for instance in instances],
        tracks=[instance.track for instance in instances],
        xlingual_tokenizer=xlingual_tokenizer,
    )
    missing = sum(prediction is None for prediction in predicted)
    metrics = report.superni_metrics(results, instances, missing)
    metrics["prompts"] = prompts
    metrics["flops"] = hint_flops
    if lm is not None:
        try:
            metrics["flops"] = superni_flops(lm, encoder.tokenizer, instances, predicted, max_new_tokens)
        except LmadaptError as err:  # an architecture the accounting does not know must not cost the scores
            log.warning("no FLOPs accounting: %s", err)
            metrics["flops"] = {"error": str(err)}
    metrics["run"] = {
        "data": str(data),
        "split": split,
        "encoding": str(prompt_encoding),
        "model": model,
        "predictor": predictor,
        "predictions": None if predictions is None else str(predictions),
        "max_instances": max_instances,
        "max_new_tokens": max_new_tokens if model is not None else None,
        "lmadapt_version": __version__,
    }

    report.write_predictions(out / "predictions.jsonl", instances, [p or "" for p in predicted])
    report.write_metrics(out / "metrics.json", metrics)
    report.write_report(out, metrics)
    overall = metrics["overall"]
    log.info("exact match %.2f, ROUGE-L %.2f -> %s", overall["exact_match"], overall["rougeL"], out)
    return metrics


def run_multiple_choice(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    fewshot: str | Path | None = None,
    k: int = 5,
    answer_format: str = "text",
    chat_template: str = "auto",
    batch_size: int = 16,
    max_questions: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every choice of every question in `data` by log-likelihood; returns metrics.json.

    `data` (and `fewshot`) hold {"question", "choices", "answer" (index or letter), "subject"?} records
    (`eval.multiple_choice`). With `fewshot`, each question is preceded by `k` answered examples from it
    (of the question's subject when it has one there). `answer_format` "text" scores each choice's text,
    "letter" lists the choices and scores their letters. `max_questions` keeps the first N (None or 0:
    all). Accuracy by summed and by per-token log-probability, overall and per subject.
    """
    _check_choice("answer_format", answer_format, multiple_choice.ANSWER_FORMATS)
    _check_choice("chat_template", chat_template, CHAT_TEMPLATE_MODES)
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    questions = multiple_choice.load_questions(data)[: max_questions or None]
    pool = multiple_choice.load_questions(fewshot) if fewshot is not None else []
    out = Path(out)
    _prepare_out(out, overwrite, MC_OUTPUT_FILES)

    lm, encoder = _load(model, chat_template)
    prompts = [
        multiple_choice.build_prompt(q, multiple_choice.select_shots(q, pool, k), answer_format)
        for q in questions
    ]
    choices = sum(len(q.choices) for q in questions)
    log.info("scoring %d choices of %d questions with %s", choices, len(questions), model)
    scores = multiple_choice.score_questions(lm, encoder, questions, prompts, answer_format, batch_size)

    metrics = multiple_choice.mc_metrics(questions, scores)
    metrics["run"] = {
        "data": str(data),
        "model": model,
        "fewshot": None if fewshot is None else str(fewshot),
        "k": k if fewshot is not None else 0,
        "answer_format": answer_format,
        "chat_template": encoder.template is not None,
        "max_questions": max_questions or None,
        "lmadapt_version": __version__,
    }
    report.write_jsonl(out / "predictions.jsonl", multiple_choice.prediction_records(questions, scores))
    report.write_metrics(out / "metrics.json", metrics)
    report.write_mc_report(out, metrics)
    overall = metrics["overall"]
    log.info("accuracy %.2f (per token %.2f) -> %s", overall["accuracy"], overall["accuracy_per_token"], out)
    return metrics


def run_gsm8k(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    fewshot: str | Path | None = None,
    k: int = 8,
    chat_template: str = "auto",
    batch_size: int = 16,
    max_new_tokens: int = 256,
    max_questions: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Answer every problem in `data` by greedy generation and grade the final number; returns metrics.json.

    `data` (and `fewshot`) hold {"question", "answer"} records, GSM8K-style (`eval.gsm8k`). With `fewshot`,
    its first `k` problems precede every question as worked examples. `max_questions` keeps the first N
    (None or 0: all).
    """
    _check_choice("chat_template", chat_template, CHAT_TEMPLATE_MODES)
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    problems = gsm8k.load_problems(data)[: max_questions or None]
    shots = gsm8k.load_problems(fewshot)[:k] if fewshot is not None else []
    out = Path(out)
    _prepare_out(out, overwrite, GSM8K_OUTPUT_FILES)

    lm, encoder = _load(model, chat_template)
    prompt_ids = [encoder.encode(gsm8k.build_prompt(problem, shots)) for problem in problems]
    log.info("generating answers to %d problems with %s", len(problems), model)
    texts = generate(
        lm,
        encoder.tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=gsm8k.stop_strings(encoder.template is not None),
    )
    extracted = [gsm8k.extract_answer(text) for text in texts]

    metrics: dict[str, Any] = {"overall": gsm8k.gsm8k_metrics(problems, extracted)}
    metrics["run"] = {
        "data": str(data),
        "model": model,
        "fewshot": None if fewshot is None else str(fewshot),
        "k": len(shots),
        "chat_template": encoder.template is not None,
        "max_new_tokens": max_new_tokens,
        "max_questions": max_questions or None,
        "lmadapt_version": __version__,
    }
    records = [
        {
            "line": problem.line,
            "prediction": text,
            "extracted": answer,
            "gold": problem.gold,
            "correct": answer == problem.gold,
        }
        for problem, text, answer in zip(problems, texts, extracted, strict=True)
    ]
    report.write_jsonl(out / "predictions.jsonl", records)
    report.write_metrics(out / "metrics.json", metrics)
    report.write_gsm8k_report(out, metrics)
    log.info("accuracy %.2f -> %s", metrics["overall"]["accuracy"], out)
    return metrics
