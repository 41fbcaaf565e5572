"""Predictions of a HINT run for SuperNI-style instances, with compiled modules and FLOPs per instance.

Instances are grouped by instruction text: each group looks its modules up in the run's module cache
(one hypernetwork pass the first time an instruction is seen, none afterwards) and is then generated
in batches from the instance inputs alone, with those modules active.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.data.superni import EvalInstance, eval_instances
from lmadapt.data.tasks import PromptEncoding, Task
from lmadapt.data.tokenize import encode_text
from lmadapt.eval.flops import InstanceTokens
from lmadapt.eval.generate import generate
from lmadapt.eval.progress import Progress
from lmadapt.hint.cache import ModuleCache
from lmadapt.hint.data import instance_prompt, tokenize_for_encoder, tokenize_instruction
from lmadapt.hint.flops import evaluation_report
from lmadapt.hint.run import HintRun, load_hint_run


@dataclass
class HintPredictions:
    predictions: list[str]  # in the order of the instances
    flops: dict[str, Any]  # `hint.flops.evaluation_report`
    seconds: float  # wall time of module lookup/compilation and generation
    compiled: int  # hypernetwork passes made (instructions not found in the cache)


def predict(
    run: HintRun | str | Path,
    instances: Sequence[EvalInstance],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    persist_cache: bool = True,
    progress: Progress | None = None,
) -> HintPredictions:
    """Greedy predictions for `instances` (each carries its instruction text and instance input).

    `run` is a run directory or a loaded run. Compiled modules are read from and written to `cache_dir`
    (default RUN/modules/); `persist_cache=False` keeps them in memory only. `progress` counts instances.
    """
    if not isinstance(run, HintRun):
        run = load_hint_run(run)
    cache = ModuleCache(run, cache_dir, persist_cache)
    tokenizer, template, kind = run.tokenizer, run.template, run.model.kind
    groups: dict[str, list[int]] = {}
    for i, instance in enumerate(instances):
        groups.setdefault(instance.instruction_text, []).append(i)
    fmt, encoding = run.settings.instance_format, PromptEncoding.parse(run.settings.encoding)
    prompts = [instance_prompt(x.instance_input, tokenizer, template, kind, fmt, encoding) for x in instances]

    predictions = [""] * len(instances)
    start = time.perf_counter()
    for instruction, rows in groups.items():
        modules = cache.get(instruction)
        with run.model.injection.active(modules):
            texts = generate(
                run.model.underlying,
                tokenizer,
                [prompts[i] for i in rows],
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                progress=progress,
            )
        for i, text in zip(rows, texts, strict=True):
            predictions[i] = text
    seconds = time.perf_counter() - start
    flops = flops_of(run, instances, prompts, predictions, max_new_tokens)
    return HintPredictions(predictions, flops, seconds, cache.compiled)


def predict_tasks(
    run: HintRun | str | Path, tasks: Sequence[Task], encoding: str, **kwargs: Any
) -> HintPredictions:
    """`predict` over every instance of `tasks`, with their instructions rendered by `encoding`."""
    return predict(run, eval_instances(list(tasks), PromptEncoding.parse(encoding)), **kwargs)


def flops_of(
    run: HintRun,
    instances: Sequence[EvalInstance],
    prompts: Sequence[list[int]],
    predictions: Sequence[str],
    max_new_tokens: int,
) -> dict[str, Any]:
    """`evaluation_report` from real token counts: the hypernetwork input, the instance prompt and the
    generated tokens (prediction + the EOS that ended it, at most `max_new_tokens`); concatenation reads
    the instruction text followed by the same instance prompt."""
    tokenizer, kind, limit = run.tokenizer, run.model.kind, run.settings.max_instruction_length
    encoder_tokenizer = run.model.encoder_tokenizer
    instruction_of: dict[str, tuple[int, int]] = {}
    encoder_tokens: dict[str, int] = {}
    hint_tokens, concatenated = [], []
    for instance, prompt, prediction in zip(instances, prompts, predictions, strict=True):
        text = instance.instruction_text
        if text not in instruction_of:
            hyper = tokenize_instruction(text, tokenizer, kind, limit)
            instruction_of[text] = (len(hyper), len(encode_text(text, tokenizer)))
            if encoder_tokenizer is not None:
                encoder_tokens[text] = len(tokenize_for_encoder(text, encoder_tokenizer, limit))
        hyper_tokens, text_tokens = instruction_of[text]
        output = min(len(encode_text(prediction, tokenizer)) + 1, max_new_tokens)
        hint_tokens.append(InstanceTokens(text, hyper_tokens, len(prompt), output))
        concatenated.append(InstanceTokens(text, text_tokens, len(prompt), output))
    return evaluation_report(run.model, hint_tokens, concatenated, encoder_tokens)
