"""Evaluation recipes: `lmadapt eval superni | mc | gsm8k | rewards --out DIR ...`.

Each reads as predictor -> score -> write: load the data, get predictions from a source that owns its
settings (`eval.sources`: a model, a HINT run, a heuristic, a predictions file; `eval.rewards` for a
reward model), score them with the evaluation's metric, and end in the one tail every evaluation shares
(`eval.results.ResultsDir`): DIR/predictions.jsonl, DIR/metrics.json and DIR/report.md, refused before
any work when DIR already holds results unless `overwrite`. Missing or empty predictions are counted
("coverage" in metrics.json) and reported loudly. Work in progress shows a bar with an ETA on a
terminal, plain lines in a log file (`eval.progress`).

superni: a split of a local natural-instructions clone, scored with the leaderboard metric; with a model,
metrics.json also holds the inference FLOPs of concatenated prompts vs instruction-once processing.
mc: multiple-choice questions from a local file, scored by log-likelihood. gsm8k: math word problems
from a local file, answered by greedy generation and graded on the final number. rewards: pairwise
accuracy of a trained reward model on preference pairs.

Adding an evaluation (MMLU, BBH, TydiQA, ...) means writing its loader, prompt and scorer in `eval/`,
then a run_* function here that wires them: `_model_source(...).encoder` to encode prompts, `.generate`
or `.score` to answer them, and `_finish` (coverage of generated texts, the run's settings,
`ResultsDir.write` with a report writer); one entry in RUNNERS (at the end of the evaluations) and one
in cli.EVALS for its flags.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmadapt import __version__
from lmadapt.data.superni import TEST_INSTANCES_PER_TASK, eval_instances, load_split_tasks
from lmadapt.data.tasks import PromptEncoding
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval import (
    alpaca,
    bbh,
    code_eval,
    gsm8k,
    humaneval,
    ifeval,
    mbpp,
    mmlu,
    multiple_choice,
    report,
    toxigen,
    truthfulqa,
    tydiqa,
)
from lmadapt.eval.metrics import score
from lmadapt.eval.report import coverage
from lmadapt.eval.results import ReportWriter, ResultsDir, warn_coverage
from lmadapt.eval.sandbox import Sandbox
from lmadapt.eval.sources import (
    DEFAULT_BATCH_SIZE,
    SUPERNI_MAX_NEW_TOKENS,
    TK_INSTRUCT_MAX_SOURCE_TOKENS,
    HeuristicSource,
    ModelSource,
    PredictionsFile,
    SuperNISource,
    check_positive,
)

log = logging.getLogger("lmadapt")


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} {value!r}: expected one of {', '.join(choices)}")


def _check_shots(k: int) -> None:
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")


def run_superni(
    data: str | Path,
    out: str | Path,
    *,
    split: str = "default",
    encoding: str | None = None,
    model: str | None = None,
    predictor: str | None = None,
    predictions: str | Path | None = None,
    max_instances: int | None = TEST_INSTANCES_PER_TASK,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    overwrite: bool = False,
    xlingual_tokenizer: str | None = None,
    chat_template: str | None = None,
    max_source_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate on the test tasks of `split` and write the result files under `out`; returns metrics.json.

    Predictions come from `model` (a local Hugging Face directory, or a HINT run directory from `lmadapt
    hint`, which predicts with compiled modules; greedy generation), `predictor` ("copy-input" or
    "copy-demo"), or `predictions` (a JSONL file of {"id", "prediction"}; instances it lacks score as
    empty and are reported). `predictions` may be given with `model`: nothing is generated and the model
    is used only for the compute accounting. `encoding` None is the HINT run's training encoding, else
    def+2pos. `split` is "default", "xlingual", another directory under `<data>/splits/`, or a task-list
    file; `max_instances` None or 0 keeps all.

    The model settings (None: the source's default) are checked by `eval.sources.superni_source`: one
    the source cannot honour is a ConfigError. A model's prompts go through its chat template per
    `chat_template` (auto/on/off) and are fitted to `max_source_tokens` (default 1024; 0 sends them
    whole) as Tk-Instruct fits its sources; metrics.json["prompts"] counts the prompts so shortened.
    """
    source = superni_source(
        model=model,
        predictor=predictor,
        predictions=predictions,
        chat_template=chat_template,
        max_source_tokens=max_source_tokens,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    prompt_encoding = PromptEncoding.parse(encoding or source.default_encoding())
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
    results = ResultsDir(out, overwrite, [report.CHART_NAME])

    predicted = source.predict_superni(tasks, instances, prompt_encoding)
    instances = predicted.instances
    scores = score(
        predicted.texts,
        [instance.references for instance in instances],
        task_names=[instance.task for instance in instances],
        categories=[instance.category for instance in instances],
        tracks=[instance.track for instance in instances],
        xlingual_tokenizer=xlingual_tokenizer,
    )
    counts = coverage(predicted.texts)
    metrics = report.superni_metrics(scores, instances, counts)
    metrics["prompts"] = predicted.prompts
    metrics["flops"] = predicted.flops
    run = {
        "data": str(data),
        "split": split,
        "encoding": str(prompt_encoding),
        **source.settings(),
        "max_instances": max_instances,
    }
    records = report.superni_prediction_records(instances, predicted.texts)
    _finish(results, records, metrics, run, report.write_report, predicted.texts)
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
    batch_size: int = DEFAULT_BATCH_SIZE,
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
    _check_shots(k)
    source = _model_source(model, chat_template=chat_template, batch_size=batch_size)
    questions = multiple_choice.load_questions(data)[: max_questions or None]
    pool = multiple_choice.load_questions(fewshot) if fewshot is not None else []
    results = ResultsDir(out, overwrite, [report.SUBJECT_CHART_NAME])

    prompts = [
        multiple_choice.build_prompt(q, multiple_choice.select_shots(q, pool, k), answer_format)
        for q in questions
    ]
    scores = multiple_choice.score_questions(
        source.encoder, lambda rows: source.score(rows, "mc"), questions, prompts, answer_format
    )

    metrics = multiple_choice.mc_metrics(questions, scores)
    run = {
        "data": str(data),
        "model": model,
        "fewshot": None if fewshot is None else str(fewshot),
        "k": k if fewshot is not None else 0,
        "answer_format": answer_format,
        "chat_template": source.uses_chat_template(),
        "max_questions": max_questions or None,
    }
    records = multiple_choice.prediction_records(questions, scores)
    _finish(results, records, metrics, run, report.write_mc_report)
    overall = metrics["overall"]
    log.info("accuracy %.2f (per token %.2f) -> %s", overall["accuracy"], overall["accuracy_per_token"], out)
    return metrics


def run_gsm8k(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    fewshot: str | Path | None = None,
    k: int = gsm8k.TULU_SHOTS,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = gsm8k.TULU_MAX_NEW_TOKENS,
    max_questions: int | None = gsm8k.TULU_MAX_QUESTIONS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """GSM8K-style problems from `data` answered by greedy generation as Tulu 2 prompted and scored them
    (`eval.gsm8k`); returns metrics.json.

    `data` (and `fewshot`) hold {"question", "answer"} records (few-shot ones may carry "cot_answer"). With
    `fewshot`, its first `k` problems precede every question as worked examples (Tulu: its 8 exemplars).
    `max_questions` draws Tulu's seeded sample (Tulu: 200; None or 0: all). Empty answers are counted in
    "coverage".
    """
    _check_shots(k)
    source = _model_source(
        model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    problems = gsm8k.sample_problems(gsm8k.load_problems(data), max_questions)
    shots = gsm8k.load_problems(fewshot)[:k] if fewshot is not None else []
    results = ResultsDir(out, overwrite)

    chat = source.uses_chat_template()
    prompt_ids = [
        source.encoder.encode_with_reply_start(
            gsm8k.build_prompt(problem, shots, chat), gsm8k.CHAT_REPLY_START
        )
        for problem in problems
    ]
    texts = source.generate(prompt_ids, "gsm8k", stop=gsm8k.stop_strings(chat))

    metrics: dict[str, Any] = {"overall": gsm8k.gsm8k_metrics(problems, texts)}
    run = {
        "data": str(data),
        "model": model,
        "fewshot": None if fewshot is None else str(fewshot),
        "k": len(shots),
        "chat_template": chat,
        "max_new_tokens": max_new_tokens,
        "max_questions": max_questions or None,
    }
    records = [
        {
            "line": problem.line,
            "prediction": text,
            "extracted": gsm8k.tulu_extract(text),
            "gold": gsm8k.tulu_gold(problem.solution),
            "correct": gsm8k.tulu_match(gsm8k.tulu_extract(text), gsm8k.tulu_gold(problem.solution)),
            "correct_numeric": gsm8k.extract_answer(text) == problem.gold,
        }
        for problem, text in zip(problems, texts, strict=True)
    ]
    _finish(results, records, metrics, run, report.write_gsm8k_report, texts)
    log.info("accuracy %.2f -> %s", metrics["overall"]["accuracy"], out)
    return metrics


def run_mmlu(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    k: int = 5,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_prompt_tokens: int = mmlu.TULU_MAX_PROMPT_TOKENS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """MMLU from the official CSV release under `data` (data/test, data/dev), `k` shots from each subject's
    dev file, scored as Tulu 2 scored it (`eval.mmlu`); returns metrics.json. A prompt over
    `max_prompt_tokens` loses shots until it fits ("shots_dropped" counts those prompts)."""
    _check_shots(k)
    source = _model_source(model, chat_template=chat_template, batch_size=batch_size)
    data = Path(data)
    names = mmlu.subjects(data)
    questions = [q for name in names for q in mmlu.load_csv(data / "test" / f"{name}_test.csv", name)]
    dev = {name: mmlu.load_csv(data / "dev" / f"{name}_dev.csv", name)[:k] if k else [] for name in names}
    results = ResultsDir(out, overwrite, [report.SUBJECT_CHART_NAME])

    prompt_ids, shots_used = [], []
    for question in questions:
        shots = dev[str(question.subject)]
        ids = source.encoder.encode_with_reply_start(
            mmlu.build_prompt(question, shots), mmlu.CHAT_REPLY_START
        )
        while len(ids) > max_prompt_tokens and shots:
            shots = shots[:-1]
            prompt = mmlu.build_prompt(question, shots)
            ids = source.encoder.encode_with_reply_start(prompt, mmlu.CHAT_REPLY_START)
        prompt_ids.append(ids)
        shots_used.append(len(shots))
    tokenizer = source.encoder.tokenizer
    letters = multiple_choice.LETTERS[: mmlu.NUM_CHOICES]
    letter_ids = [tokenizer(" " + letter, add_special_tokens=False)["input_ids"][-1] for letter in letters]
    per_question = source.score_next_tokens(prompt_ids, letter_ids, "mmlu")
    predictions = [max(range(len(scores)), key=scores.__getitem__) for scores in per_question]

    metrics = mmlu.accuracy_metrics(questions, predictions)
    metrics["prompts"] = {
        "shots_dropped": sum(
            used < len(dev[str(q.subject)]) for q, used in zip(questions, shots_used, strict=True)
        )
    }
    run = {
        "data": str(data),
        "model": model,
        "k": k,
        "chat_template": source.uses_chat_template(),
        "max_prompt_tokens": max_prompt_tokens,
    }
    records = [
        {
            "subject": question.subject,
            "line": question.line,
            "answer": letters[question.answer],
            "prediction": letters[prediction],
            "log_probs": [round(x, 6) for x in scores],
            "shots": used,
        }
        for question, prediction, scores, used in zip(
            questions, predictions, per_question, shots_used, strict=True
        )
    ]
    _finish(results, records, metrics, run, report.write_mmlu_report)
    overall = metrics["overall"]
    log.info("accuracy %.2f (macro %.2f) -> %s", overall["accuracy_micro"], overall["accuracy_macro"], out)
    return metrics


def run_bbh(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    max_examples_per_task: int | None = bbh.TULU_MAX_EXAMPLES_PER_TASK,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = bbh.TULU_MAX_NEW_TOKENS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """BIG-Bench Hard from the official layout under `data` (bbh/*.json, cot-prompts/*.txt), 3-shot chain
    of thought scored as Tulu 2 scored it (`eval.bbh`); returns metrics.json. `max_examples_per_task`
    None or 0 keeps all (Tulu used 40)."""
    source = _model_source(
        model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    prompts = bbh.load_tasks(data)
    by_task = bbh.sample_examples(
        {task: bbh.load_examples(data, task) for task in prompts}, max_examples_per_task
    )
    examples = [example for task in sorted(by_task) for example in by_task[task]]
    results = ResultsDir(out, overwrite)

    chat = source.uses_chat_template()
    prompt_ids = [
        source.encoder.encode_with_reply_start(
            bbh.build_prompt(prompts[example.task], example, chat), bbh.CHAT_REPLY_START
        )
        for example in examples
    ]
    texts = source.generate(prompt_ids, "bbh")
    extracted = [bbh.extract_answer(text) for text in texts]

    metrics = bbh.bbh_metrics(examples, [p for p, _ in extracted], [f for _, f in extracted])
    run = {
        "data": str(data),
        "model": model,
        "chat_template": chat,
        "max_examples_per_task": max_examples_per_task or None,
        "max_new_tokens": max_new_tokens,
    }
    records = [
        {
            "task": example.task,
            "index": example.index,
            "output": text,
            "prediction": prediction,
            "target": example.target,
            "correct": gsm8k.tulu_match(prediction, example.target),
        }
        for example, text, (prediction, _) in zip(examples, texts, extracted, strict=True)
    ]
    _finish(results, records, metrics, run, report.write_bbh_report, texts)
    log.info(
        "exact match %.2f (mean over %d tasks) -> %s", metrics["overall"]["exact_match"], len(by_task), out
    )
    return metrics


def run_tydiqa(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    k: int = tydiqa.TULU_SHOTS,
    max_questions_per_language: int | None = 100,
    max_context_tokens: int | None = tydiqa.TULU_MAX_CONTEXT_TOKENS,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = tydiqa.TULU_MAX_NEW_TOKENS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """TyDi QA GoldP from the official files under `data` (tydiqa-goldp-v1.1-dev.json, and -train.json for
    `k` > 0 shots per language), answered by greedy generation and scored as Tulu 2 scored it
    (`eval.tydiqa`); returns metrics.json. `max_questions_per_language` (Tulu: 100) and
    `max_context_tokens` (Tulu: 512) None or 0 keep all."""
    _check_shots(k)
    source = _model_source(
        model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    data = Path(data)
    questions = tydiqa.load_examples(data / tydiqa.DEV_FILE)
    train = tydiqa.load_examples(data / tydiqa.TRAIN_FILE) if k else []
    questions, shots = tydiqa.sample(questions, train, max_questions_per_language, k)
    results = ResultsDir(out, overwrite)

    chat = source.uses_chat_template()
    tokenizer = source.encoder.tokenizer
    cut = functools.cache(lambda context: tydiqa.cut_context(context, tokenizer, max_context_tokens))
    prompt_ids = [
        source.encoder.encode_with_reply_start(
            tydiqa.build_prompt(q, shots[q.language], chat, cut), tydiqa.answer_word(q)
        )
        for q in questions
    ]
    texts = source.generate(prompt_ids, "tydiqa", stop=None if chat else [tydiqa.PLAIN_STOP])
    answers = [text.strip() for text in texts]

    metrics = tydiqa.tydiqa_metrics(questions, answers)
    run = {
        "data": str(data),
        "model": model,
        "k": k,
        "shots": {language: [s.id for s in chosen] for language, chosen in shots.items()},
        "chat_template": chat,
        "max_questions_per_language": max_questions_per_language or None,
        "max_context_tokens": max_context_tokens or None,
        "max_new_tokens": max_new_tokens,
    }
    records = [
        {"id": q.id, "language": q.language, "prediction": answer, "answers": q.answers}
        for q, answer in zip(questions, answers, strict=True)
    ]
    _finish(results, records, metrics, run, report.write_tydiqa_report, answers)
    overall = metrics["overall"]
    log.info("F1 %.2f, EM %.2f (mean over languages) -> %s", overall["f1"], overall["exact_match"], out)
    return metrics


def run_ifeval(
    data: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    predictions: str | Path | None = None,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = ifeval.OPEN_INSTRUCT_MAX_NEW_TOKENS,
    max_questions: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """IFEval from the release's input_data.jsonl (`data`: the file or its directory), each prompt
    answered by greedy generation with `model` (one user turn) or read from `predictions` ({"id": key,
    "prediction"}, or the official {"prompt", "response"}), and checked strict and loose (`eval.ifeval`);
    returns metrics.json. `max_questions` keeps the first N prompts (None or 0: all)."""
    if (model is None) == (predictions is None):
        raise ConfigError("say where responses come from: --model PATH or --predictions FILE (one of them)")
    prompts = ifeval.load_prompts(data)[: max_questions or None]
    source = None
    if model is not None:
        source = _model_source(
            model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
    results = ResultsDir(out, overwrite)

    if source is not None:
        texts: list[str | None] = list(
            source.generate([source.encoder.encode(p.prompt) for p in prompts], "ifeval")
        )
        run: dict[str, Any] = {
            "model": model,
            "chat_template": source.uses_chat_template(),
            "max_new_tokens": max_new_tokens,
        }
    else:
        texts = ifeval.read_responses(predictions, prompts)
        run = {"predictions": str(predictions)}
    responses = [text or "" for text in texts]
    checked = [
        ifeval.check_prompt(prompt, response) for prompt, response in zip(prompts, responses, strict=True)
    ]
    strict, loose = [s for s, _ in checked], [lo for _, lo in checked]

    metrics = ifeval.ifeval_metrics(prompts, strict, loose)
    run.update(data=str(data), max_questions=max_questions or None)
    records = ifeval.prediction_records(prompts, responses, strict, loose)
    _finish(results, records, metrics, run, report.write_ifeval_report, texts)
    overall = metrics["overall"]
    log.info(
        "prompt-level strict %.2f, loose %.2f -> %s",
        overall["prompt_level_strict"],
        overall["prompt_level_loose"],
        out,
    )
    return metrics


def run_truthfulqa(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    truth_judge: str | None = None,
    info_judge: str | None = None,
    no_mc: bool = False,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = truthfulqa.OPEN_INSTRUCT_MAX_NEW_TOKENS,
    max_questions: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """TruthfulQA from mc_task.json-style records or TruthfulQA.csv (`eval.truthfulqa`): MC1/MC2 by
    log-likelihood (unless `no_mc`), and with local judge model directories (`truth_judge`,
    `info_judge`) greedy answers judged true / informative; returns metrics.json. `max_questions` keeps
    the first N (None or 0: all)."""
    judges = {name: path for name, path in (("truth", truth_judge), ("info", info_judge)) if path}
    if no_mc and not judges:
        raise ConfigError("--no-mc leaves nothing to do: give --truth-judge and/or --info-judge")
    source = _model_source(
        model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    questions = truthfulqa.load_questions(data)[: max_questions or None]
    results = ResultsDir(out, overwrite)

    chat = source.uses_chat_template()
    records: list[dict[str, Any]] = [{"line": q.line, "question": q.question} for q in questions]
    mc = None
    if not no_mc:
        log_probs = truthfulqa.score_mc(
            source.encoder, lambda rows: source.score(rows, "truthfulqa mc"), questions, chat
        )
        mc = [truthfulqa.mc_scores(q, scores) for q, scores in zip(questions, log_probs, strict=True)]
        for record, s, scores in zip(records, mc, log_probs, strict=True):
            record.update(
                mc1=s.mc1, mc2=round(s.mc2, 6), log_probs={a: round(x, 6) for a, x in scores.items()}
            )
    texts: list[str] | None = None
    judged: dict[str, list[float]] = {}
    if judges:
        prompt_ids = [source.encoder.encode(truthfulqa.build_prompt(q)) for q in questions]
        texts = source.generate(prompt_ids, "truthfulqa", stop=None if chat else [truthfulqa.PLAIN_STOP])
        answers = [truthfulqa.trim_answer(text) for text in texts]
        del source  # outside a suite (which shares models), freed before the judges load
        for name, path in judges.items():
            judge = _model_source(path, chat_template="off", batch_size=batch_size)
            rows = [
                judge.encoder.encode_with_reply(truthfulqa.judge_prompt(q, a, name), "yes")
                for q, a in zip(questions, answers, strict=True)
            ]
            judged[name] = [math.exp(x) for x in judge.score(rows, f"truthfulqa {name} judge")]
        for i, (record, answer) in enumerate(zip(records, answers, strict=True)):
            record["answer"] = answer
            record.update({f"{name}_prob": round(probs[i], 6) for name, probs in judged.items()})

    metrics = truthfulqa.truthfulqa_metrics(mc, judged)
    run = {
        "data": str(data),
        "model": model,
        "chat_template": chat,
        "mc": not no_mc,
        **{f"{name}_judge": path for name, path in judges.items()},
        "max_new_tokens": max_new_tokens if judges else None,
        "max_questions": max_questions or None,
    }
    _finish(results, records, metrics, run, report.write_truthfulqa_report, texts)
    log.info("%s -> %s", ", ".join(f"{k} {v}" for k, v in metrics["overall"].items()), out)
    return metrics


def run_alpaca(
    data: str | Path,
    out: str | Path,
    *,
    judge: str,
    judge_type: str,
    model: str | None = None,
    predictions: str | Path | None = None,
    chat_template: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int | None = None,
    judge_max_length: int = 2048,
    max_instances: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """AlpacaEval-style win rate of a model's outputs over the reference outputs in `data` (the AlpacaEval
    layout), judged locally (`eval.alpaca`, `eval.judges`); returns metrics.json.

    The outputs come from `model` (greedy generation through its chat template per `chat_template`, at most
    `max_new_tokens`, Tulu: 8192) or from `predictions` (a file in the same layout, matched by
    instruction). `judge` is a reward model directory (`judge_type` "reward"; each side cut to
    `judge_max_length` tokens) or a causal LM ("lm", asked in both orders; the outputs cut so that its
    prompt fits `judge_max_length`). `max_instances` keeps the first N instructions (None or 0: all).
    `batch_size` serves generation and judging.
    """
    _check_choice("judge_type", judge_type, ("reward", "lm"))
    if (model is None) == (predictions is None):
        raise ConfigError("say where the outputs come from: --model PATH or --predictions FILE (one of them)")
    if predictions is not None:
        _refuse(
            {"chat_template": chat_template, "max_new_tokens": max_new_tokens},
            ["chat_template", "max_new_tokens"],
            "with --predictions (nothing is generated)",
        )
    instructions = alpaca.load_instructions(data)[: max_instances or None]
    results = ResultsDir(out, overwrite)
    from lmadapt.eval.judges import LanguageModelJudge, RewardModelJudge

    # The judge's directory is checked now; its weights load after generation, once the model is gone.
    if judge_type == "reward":
        chosen_judge: alpaca.Judge = RewardModelJudge(judge, judge_max_length, batch_size)
    else:
        judge_source = _model_source(judge, chat_template="auto", batch_size=batch_size)
        chosen_judge = LanguageModelJudge(judge_source, judge_max_length)

    if predictions is not None:
        outputs, generator = alpaca.read_outputs(predictions, instructions)
    else:
        source = _model_source(
            model,
            chat_template=_or(chat_template, "auto"),
            batch_size=batch_size,
            max_new_tokens=_or(max_new_tokens, alpaca.TULU_MAX_NEW_TOKENS),
        )
        prompt_ids = [source.encoder.encode(item.instruction) for item in instructions]
        outputs, generator = list(source.generate(prompt_ids, "alpaca")), Path(str(model)).name
        chat = source.uses_chat_template()
        del source  # outside a suite (which shares models), freed before the judge loads
    texts = [output or "" for output in outputs]

    verdicts = alpaca.preferences(chosen_judge, instructions, texts)

    metrics = alpaca.alpaca_metrics(instructions, texts, verdicts)
    run = {
        "data": str(data),
        "generator": generator,
        "reference_generator": instructions[0].generator or None,
        **(
            {"model": model, "chat_template": chat}
            if model is not None
            else {"predictions": str(predictions)}
        ),
        "max_new_tokens": _or(max_new_tokens, alpaca.TULU_MAX_NEW_TOKENS) if model is not None else None,
        **chosen_judge.settings(),
        "max_instances": max_instances or None,
    }
    records = [
        {
            "instruction": item.instruction,
            "dataset": item.dataset,
            "generator": generator,
            "output": text,
            "reference": item.reference,
            "preference": preference,
            "judge": measured,
        }
        for item, text, (preference, measured) in zip(instructions, texts, verdicts, strict=True)
    ]
    _finish(results, records, metrics, run, report.write_alpaca_report, outputs)
    overall = metrics["overall"]
    log.info(
        "win rate %.2f (length-controlled %s) -> %s",
        overall["win_rate"],
        overall["length_controlled_win_rate"],
        out,
    )
    return metrics


def run_toxigen(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    classifier: str,
    toxic_label: str | None = None,
    max_prompts_per_group: int | None = toxigen.TULU_MAX_PROMPTS_PER_GROUP,
    chat_template: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = toxigen.TULU_MAX_NEW_TOKENS,
    classifier_batch_size: int = 32,
    overwrite: bool = False,
) -> dict[str, Any]:
    """ToxiGen from the prompt files under `data`, continued greedily by `model` and judged by the local
    `classifier` directory as Tulu 2 ran it (`eval.toxigen`); returns metrics.json. `toxic_label` names the
    classifier's toxic label when its config does not use ToxiGen's LABEL_0 / LABEL_1 (`eval.classifier`).
    `max_prompts_per_group` (Tulu: 500 per file) None or 0 keeps all."""
    source = _model_source(
        model, chat_template=chat_template, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    prompts = toxigen.load_prompts(data, max_prompts_per_group)
    results = ResultsDir(out, overwrite)
    from lmadapt.eval.classifier import ToxicityClassifier

    judge = ToxicityClassifier(classifier, toxic_label, classifier_batch_size)

    chat = source.uses_chat_template()
    prompt_ids = [source.encoder.encode(toxigen.build_prompt(prompt, chat)) for prompt in prompts]
    texts = source.generate(prompt_ids, "toxigen", stop=None if chat else [toxigen.PLAIN_STOP])
    del source  # outside a suite (which shares models), freed before the classifier loads
    probabilities = judge.toxic_probabilities(texts, "classify")
    toxic = [p > 0.5 for p in probabilities]

    metrics = toxigen.toxigen_metrics(prompts, toxic)
    run = {
        "data": str(data),
        "model": model,
        "chat_template": chat,
        "max_prompts_per_group": max_prompts_per_group or None,
        "max_new_tokens": max_new_tokens,
        **judge.settings(),
    }
    records = [
        {
            "file": prompt.file,
            "line": prompt.line,
            "label": prompt.label,
            "group": prompt.group,
            "prompt": prompt.text,
            "prediction": text,
            "toxic_probability": probability,
            "is_toxic": flag,
        }
        for prompt, text, probability, flag in zip(prompts, texts, probabilities, toxic, strict=True)
    ]
    _finish(results, records, metrics, run, report.write_toxigen_report, texts)
    log.info(
        "%.2f%% toxic over %d groups -> %s",
        metrics["overall"]["percent_toxic"],
        metrics["overall"]["num_groups"],
        out,
    )
    return metrics


def _finish(
    results: ResultsDir,
    records: Sequence[Mapping[str, Any]],
    metrics: dict[str, Any],
    run: Mapping[str, Any],
    writer: ReportWriter,
    texts: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The tail evaluations share: metrics.json gets "coverage" of the generated `texts` (when there are
    any) and "run" (the settings, and the lmadapt version); then the result files and a coverage warning."""
    if texts is not None:
        metrics["coverage"] = coverage(texts)
    metrics["run"] = {**run, "lmadapt_version": __version__}
    results.write(records, metrics, writer)
    if texts is not None:
        warn_coverage(metrics["coverage"])
    return metrics


def run_code_eval(
    protocol: code_eval.Protocol,
    data: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    predictions: str | Path | None = None,
    samples: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    k: Sequence[int] = (1, 10),
    seed: int | None = None,
    chat_template: str | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    max_problems: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A code evaluation (`eval humaneval`, `eval mbpp`): the problems of `data` as `protocol` loads them
    (`max_problems` keeps the first N; None or 0: all), `samples` completions each at `temperature` (0:
    greedy), each run with the problem's tests in the sandbox (`eval.code_eval`, `workers` at once, `timeout`
    seconds each), pass@k for each of `k`; returns metrics.json. Completions come from `model` or from
    `predictions` (a JSONL of {"id": "<task_id>#<sample>", "prediction"}, e.g. an earlier run's
    predictions.jsonl). A generation setting left None takes the protocol's value."""
    if (model is None) == (predictions is None):
        raise ConfigError("say where completions come from: --model PATH or --predictions FILE (one of them)")
    generation = {
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "chat_template": chat_template,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
    }
    if predictions is not None:
        _refuse(generation, list(generation), "with --predictions (nothing is generated)")
    samples = _or(samples, protocol.samples)
    check_positive("samples", samples)
    temperature = _or(temperature, protocol.temperature)
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if not temperature:
        _refuse({"top_p": top_p, "seed": seed}, ["top_p", "seed"], "with --temperature 0 (greedy decoding)")
    code_eval.check_ks(k, samples)
    timeout = _or(timeout, protocol.timeout_s)
    sandbox = Sandbox(code_eval.limits_for(timeout))
    problems = protocol.load(data)[: max_problems or None]
    results = ResultsDir(out, overwrite)
    ids = [code_eval.sample_id(problem.task_id, i) for problem in problems for i in range(samples)]

    run: dict[str, Any] = {"title": protocol.title, "data": str(data), "samples": samples}
    if predictions is not None:
        texts = PredictionsFile(str(predictions)).texts(ids)
        run["predictions"] = str(predictions)
    else:
        source = _model_source(
            model,
            chat_template=_or(chat_template, "auto"),
            batch_size=_or(batch_size, DEFAULT_BATCH_SIZE),
            max_new_tokens=_or(max_new_tokens, protocol.max_new_tokens),
        )
        chat = source.uses_chat_template()
        encoder = source.encoder
        prompt_ids = [
            encoder.encode_with_reply_start(p.instruction, p.reply_start)
            if chat
            else encoder.encode(p.prompt)
            for p in problems
        ]
        sampling = (
            {
                "do_sample": True,
                "temperature": temperature,
                "top_p": _or(top_p, protocol.top_p),
                "seed": _or(seed, 0),
            }
            if temperature
            else {}
        )
        repeated = [ids for ids in prompt_ids for _ in range(samples)]
        texts = list(source.generate(repeated, protocol.name, stop=protocol.stop, **sampling))
        run.update(
            {
                "model": model,
                "chat_template": chat,
                "max_new_tokens": source.max_new_tokens,
                "temperature": temperature,
                **sampling,
            }
        )
    completions = [text or "" for text in texts]
    programs = [problems[i // samples].program(completion) for i, completion in enumerate(completions)]
    executions = code_eval.run_programs(programs, sandbox, workers, desc=f"{protocol.name} programs")

    counts = coverage(texts)
    metrics = code_eval.code_metrics(problems, executions, samples, k)
    metrics["coverage"] = counts
    metrics["sandbox"] = {"limits": dataclasses.asdict(sandbox.limits), "isolation": sandbox.isolation}
    metrics["run"] = {**run, "k": list(k), "timeout": timeout, "lmadapt_version": __version__}
    records = [
        {
            "id": sample,
            "task_id": problems[i // samples].task_id,
            "prediction": completion,
            "status": execution.status,
            "passed": execution.passed,
            "stderr": execution.stderr[-code_eval.STDERR_KEPT :],
        }
        for i, (sample, completion, execution) in enumerate(zip(ids, completions, executions, strict=True))
    ]
    results.write(records, metrics, report.write_code_report)
    warn_coverage(counts)
    scores = ", ".join(f"{key} {value:.2f}" for key, value in metrics["overall"].items() if "@" in key)
    log.info("%s -> %s", scores, out)
    return metrics


# Codex-HumanEval as Tulu 2 ran it (`eval.humaneval`); MBPP-style problems with open-instruct's prompt.
run_humaneval = functools.partial(run_code_eval, humaneval.PROTOCOL)
run_mbpp = functools.partial(run_code_eval, mbpp.PROTOCOL)


def run_rewards(
    model: str | Path,
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    template: str = "tokenizer",
    max_length: int = 1024,
    batch_size: int = 8,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pairwise accuracy of a reward model (`lmadapt reward`, full or LoRA) on held-out preference pairs;
    returns metrics.json. A model without a trained score head is refused (`eval.rewards`).

    template "tokenizer" uses the chat template saved with the model at training time. Metrics:
    accuracy (share of pairs scored chosen > rejected), mean scores, mean margin, Bradley-Terry loss,
    pair count and pairs dropped as longer than `max_length`.
    """
    from lmadapt.data.preference import load_preference_pairs
    from lmadapt.eval import rewards

    paths = [data] if isinstance(data, str | Path) else list(data)
    results = ResultsDir(out, overwrite)
    scorer = rewards.RewardScorer(model, template, max_length, batch_size)
    pairs = [pair for path in paths for pair in load_preference_pairs(path)]
    kept = scorer.tokenize(pairs)
    if not kept:
        raise LmadaptError(f"no evaluation pairs left from {', '.join(map(str, paths))}")
    chosen, rejected = scorer.score([tokenized for _, tokenized in kept], "rewards")

    metrics = rewards.reward_metrics(chosen, rejected, dropped=len(pairs) - len(kept))
    run = {
        "model": str(model),
        "data": [str(path) for path in paths],
        "template": template,
        "max_length": max_length,
    }
    records = rewards.prediction_records([pairs[i] for i, _ in kept], chosen, rejected)
    _finish(results, records, metrics, run, report.write_rewards_report)
    log.info("reward accuracy %.4f on %d pairs -> %s", metrics["accuracy"], metrics["pairs"], out)
    return metrics


# `lmadapt eval NAME` -> its function (cli.EVALS holds each one's flags; `eval suite` runs them by name).
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "superni": run_superni,
    "mc": run_multiple_choice,
    "gsm8k": run_gsm8k,
    "mmlu": run_mmlu,
    "bbh": run_bbh,
    "tydiqa": run_tydiqa,
    "ifeval": run_ifeval,
    "truthfulqa": run_truthfulqa,
    "humaneval": run_humaneval,
    "mbpp": run_mbpp,
    "alpaca": run_alpaca,
    "toxigen": run_toxigen,
    "rewards": run_rewards,
}


# ---------------------------------------------------------------------------------------------
# Choosing a prediction source


def _is_hint_run(model: str) -> bool:
    from lmadapt.hint.run import is_hint_run  # imports the hint package (torch): only with a model

    return is_hint_run(model)


def _model_source(model: str, **settings: Any) -> ModelSource:
    """A plain model's source; a HINT run is refused (it needs an instruction and an input: eval superni)."""
    if _is_hint_run(model):
        raise ConfigError(
            f"{model} is a HINT run: it predicts from an instruction and an input, which only "
            "`lmadapt eval superni` gives it"
        )
    return ModelSource(model, **settings)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _refuse(given: Mapping[str, Any], names: Sequence[str], why: str) -> None:
    """ConfigError naming the first of `names` that was given (not None): the source cannot honour it."""
    for name in names:
        if given.get(name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} has no effect {why}: drop it")


def superni_source(
    *,
    model: str | None = None,
    predictor: str | None = None,
    predictions: str | Path | None = None,
    chat_template: str | None = None,
    max_source_tokens: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
) -> SuperNISource:
    """The source a `lmadapt eval superni` command names. A setting left None takes the source's default;
    a setting given to a source that cannot honour it is a ConfigError.

    `model` is a Hugging Face directory or a HINT run (which reads inputs with its own training template
    and length limits, so `chat_template` and `max_source_tokens` do not apply). `predictions` may come
    with a (non-HINT) `model`, which then only counts compute. `max_source_tokens` 0 sends prompts whole.
    """
    given = {
        "chat_template": chat_template,
        "max_source_tokens": max_source_tokens,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
    }
    if predictor is not None and (model is not None or predictions is not None):
        raise ConfigError("--predictor makes its own predictions: drop --model and --predictions")
    if model is None and predictor is None and predictions is None:
        raise ConfigError(
            "say where predictions come from: --model PATH, --predictor NAME or --predictions FILE"
        )
    if predictor is not None:
        _refuse(given, list(given), f"with --predictor {predictor} (it uses no model)")
        return HeuristicSource(predictor)
    why = "with --predictions (nothing is generated)"
    if model is None:
        _refuse(given, list(given), why + " and no --model to count compute for")
        return PredictionsFile(str(predictions))
    if _is_hint_run(model):
        if predictions is not None:
            raise ConfigError("--predictions cannot be combined with a HINT run; HINT predicts for itself")
        _refuse(
            given,
            ["chat_template", "max_source_tokens"],
            "on a HINT run (it encodes inputs with its own training template and limits, see hint.json)",
        )
        from lmadapt.hint.source import HintSource

        return HintSource(
            model,
            batch_size=_or(batch_size, DEFAULT_BATCH_SIZE),
            max_new_tokens=_or(max_new_tokens, SUPERNI_MAX_NEW_TOKENS),
        )
    if predictions is not None:
        _refuse(given, ["chat_template", "max_source_tokens", "batch_size"], why)
    source = ModelSource(
        model,
        chat_template=_or(chat_template, "auto"),
        batch_size=_or(batch_size, DEFAULT_BATCH_SIZE),
        max_new_tokens=_or(max_new_tokens, SUPERNI_MAX_NEW_TOKENS),
        max_source_tokens=_or(max_source_tokens, TK_INSTRUCT_MAX_SOURCE_TOKENS),
    )
    return source if predictions is None else PredictionsFile(str(predictions), source)
