"""HINT: `lmadapt hint CONFIG [key=value ...]` trains a hypernetwork with its underlying model;
`lmadapt compile` turns an instruction into a module file.

Training:
1. Load the underlying model and wrap it with a hypernetwork (`HintModel`, one module for the engine).
2. Optionally pretrain on plain text (each document cut into A -> hypernetwork, B -> input, C -> target)
   under RUN/pretrain/.
3. Finetune on the train tasks of a SuperNI-layout split: the hypernetwork reads each task's
   instruction (definition + demonstrations), the underlying model only the instance.
4. Save the run (layout in `lmadapt.hint.run`); `lmadapt.hint.load_hint_run(RUN)` loads it back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from lmadapt.config import HintConfig
from lmadapt.data.superni import load_split_tasks
from lmadapt.data.tasks import Demonstration, PromptEncoding, Task, encode_instruction, load_task_json
from lmadapt.errors import ConfigError, DataError
from lmadapt.hint.cache import compile_instruction, instruction_key, load_modules
from lmadapt.hint.data import (
    HintDataset,
    collate_hint,
    instance_template,
    read_documents,
    split_documents,
    task_dataset,
    with_encoder_tokens,
)
from lmadapt.hint.export import export_peft
from lmadapt.hint.model import HintModel
from lmadapt.hint.run import RunSettings, load_hint_run, save_hint_run
from lmadapt.models.load import load_model, model_tokenizer
from lmadapt.models.vocab import fit_model_to_template
from lmadapt.store import CorruptEntry, open_entry, write_entry
from lmadapt.train.checkpoint import trainable_state
from lmadapt.train.distributed import is_sharded
from lmadapt.train.loop import FitResult, fit
from lmadapt.train.objectives import LanguageModelling
from lmadapt.train.run import start_run

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger("lmadapt")

PRETRAINED = "pretrained"  # store entry: trainable weights after pretraining, for resuming into finetuning
PRETRAINED_KIND = "hint-pretrained"
GATES = "generator.prefix_gates"  # the parameter `train.gate_lr` applies to


@dataclass
class HintResult:
    out_dir: Path
    run_id: str
    model: HintModel
    fit: FitResult


def run(cfg: HintConfig) -> HintResult:
    if cfg.model.lora.enabled:
        raise ConfigError("model.lora: HINT generates its own LoRA weights; use hint.modules: [lora] instead")
    if not cfg.data.superni:
        raise ConfigError("data.superni is not set: a natural-instructions clone in the SuperNI layout")
    run = start_run(cfg, cfg.train, has_eval_data=cfg.data.eval_instances_per_task > 0)
    if is_sharded(run.accelerator):  # the hypernetwork export reads whole parameters; not wired for FSDP
        raise ConfigError("HINT trains with data parallelism only; launch it without FSDP/DeepSpeed")
    tokenizer = model_tokenizer(cfg.model)
    underlying, _ = load_model(cfg.model, run.device)
    # chatml's markers become special tokens: the embeddings grow to hold them before HINT wraps the model
    fit_model_to_template(underlying, tokenizer, instance_template(cfg.data.template, tokenizer))
    torch.manual_seed(cfg.train.seed)  # the generator's initial weights
    model = HintModel(underlying, cfg.hint)
    objective = LanguageModelling(model.kind)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "HINT %s: %d slots, %.2fM trainable parameters",
        model.layout.family,
        len(model.layout.slots),
        trainable / 1e6,
    )
    data, n_train = _task_data(cfg, tokenizer, model.kind)
    collate = hint_collator(data, tokenizer, model)
    train = [x for x in data.examples if x.instruction < n_train]
    evals = [x for x in data.examples if x.instruction >= n_train]
    log.info("%d training instances of %d tasks, %d evaluation instances", len(train), n_train, len(evals))
    run.create()
    if cfg.pretrain.max_steps > 0:
        pretrain(model, objective, cfg, tokenizer, run.out, run.accelerator)
    gates = {GATES: cfg.train.gate_lr} if cfg.train.gate_lr > 0 and "prefix" in cfg.hint.modules else None
    result = fit(model, objective, train, collate, cfg.train, run.out, run.accelerator, evals, lr_of=gates)
    settings = RunSettings(
        template=cfg.data.template,
        encoding=cfg.data.encoding,
        max_instruction_length=cfg.hint.max_instruction_length,
        max_input_length=cfg.data.max_input_length,
        instance_format=cfg.data.instance_format,
    )
    run_id = run.finish(result, lambda out: save_hint_run(model, tokenizer, out, settings)) or ""
    return HintResult(run.out, run_id, model, result)


def hint_collator(data: HintDataset, tokenizer: Any, model: HintModel) -> Callable[[list[Any]], Any]:
    """The batch collator of `data` for `model`; a pretrained instruction encoder also gets every
    instruction in its own tokens."""
    collate = partial(collate_hint, instructions=data.instructions, pad_token_id=tokenizer.pad_token_id)
    if model.encoder_tokenizer is None:
        return collate
    with_encoder_tokens(data, model.encoder_tokenizer, model.cfg.max_instruction_length)
    pad = model.encoder_tokenizer.pad_token_id or 0
    return partial(collate, encoder_instructions=data.encoder_instructions, encoder_pad_id=pad)


def _task_data(cfg: HintConfig, tokenizer: Any, kind: str) -> tuple[HintDataset, int]:
    """One instruction table for the train tasks (rows < the returned count) and any eval tasks after them."""
    d = cfg.data
    tasks = load_split_tasks(d.superni, d.split, "train", d.max_instances_per_task, seed=d.seed)
    n_train = len(tasks)
    if d.eval_instances_per_task > 0:
        tasks += load_split_tasks(d.superni, d.split, "test", d.eval_instances_per_task, seed=d.seed)
    data = task_dataset(
        tasks,
        PromptEncoding.parse(d.encoding),
        tokenizer,
        instance_template(d.template, tokenizer),
        kind,
        cfg.hint.max_instruction_length,
        d.max_input_length,
        d.max_target_length,
        d.instance_format,
    )
    return data, n_train


def pretrain(
    model: HintModel,
    objective: LanguageModelling,
    cfg: HintConfig,
    tokenizer: Any,
    out: Path,
    accelerator: Accelerator,
) -> None:
    """A/B/C pretraining under RUN/pretrain/ (resumable; skipped when a resumed run already finished it)."""
    stage = out / "pretrain"
    if (stage / PRETRAINED).exists():
        try:
            done = open_entry(stage / PRETRAINED, PRETRAINED_KIND, 1)
        except CorruptEntry as e:
            log.warning("pretraining result unusable, pretraining again (resuming its checkpoints): %s", e)
        else:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in load_file(str(done.path / "trainable.safetensors")).items():
                    params[name].copy_(value)
            log.info("pretraining already done: loaded %s", done.path)
            return
    documents = read_documents(cfg.pretrain.sources, cfg.pretrain.max_documents)
    data = split_documents(
        documents,
        tokenizer,
        model.kind,
        cfg.data.seed,
        cfg.hint.max_instruction_length,
        cfg.data.max_input_length,
        cfg.data.max_target_length,
    )
    log.info("pretraining on %d A/B/C examples from %d documents", len(data.examples), len(documents))
    stage.mkdir(parents=True, exist_ok=True)
    train_cfg = replace(
        cfg.train, output_dir=str(stage), max_steps=cfg.pretrain.max_steps, lr=cfg.pretrain.lr, eval_every=0
    )
    collate = hint_collator(data, tokenizer, model)
    fit(model, objective, data.examples, collate, train_cfg, stage, accelerator)
    if accelerator.is_main_process:
        weights = trainable_state(accelerator.unwrap_model(model))

        def write_files(directory: Path) -> dict[str, Any]:
            save_file(weights, str(directory / "trainable.safetensors"))
            return {}

        write_entry(stage / PRETRAINED, PRETRAINED_KIND, 1, write_files, replace=True)


# ---------------------------------------------------------------------------------------------
# Compiling instructions


@dataclass
class CompileResult:
    path: Path  # the module entry, <out>/<key>/
    key: str
    instruction: str  # the exact text the hypernetwork read
    peft_dir: Path | None


def run_compile(
    model: str | Path,
    out: str | Path,
    *,
    task: str | Path | None = None,
    instruction: str | None = None,
    examples: str | Path | None = None,
    encoding: str | None = None,
    peft: bool = False,
) -> CompileResult:
    """`lmadapt compile --model RUN (--task TASK.json | --instruction TEXT [--examples FILE]) --out DIR`.

    The instruction is rendered as in training: a task file with `encoding` (default: the run's), or
    TEXT as the definition followed by the demonstrations of FILE (a JSON list or JSONL of
    {"input", "output"}; default encoding "def+<n>pos" for n of them). With `peft`, the modules are also
    exported as a PEFT LoRA adapter under <out>/peft-<key prefix>/.
    """
    if (task is None) == (instruction is None):
        raise ConfigError("give exactly one of --task TASK.json or --instruction TEXT")
    if examples is not None and task is not None:
        raise ConfigError("--examples goes with --instruction; a task file carries its own examples")
    hint_run = load_hint_run(model)
    if task is not None:
        source = load_task_json(task)
        default = hint_run.settings.encoding
    else:
        demos = read_demonstrations(examples) if examples is not None else []
        source = Task("instruction", str(instruction), demos, [], [], [])
        default = "def" + (f"+{len(demos)}pos" if demos else "")
    text = encode_instruction(source, PromptEncoding.parse(encoding or default))
    path = compile_instruction(hint_run, text, out)
    peft_dir = None
    key = instruction_key(hint_run.run_id, text)
    if peft:
        modules, _ = load_modules(path)
        peft_dir = export_peft(hint_run, modules, Path(out) / f"peft-{key[:12]}")
    return CompileResult(path, key, text, peft_dir)


def read_demonstrations(path: str | Path) -> list[Demonstration]:
    """Demonstrations from a JSON list or a JSONL file of {"input": str, "output": str} objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"examples file {path} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        try:
            records = [(n, json.loads(line)) for n, line in lines]
        except json.JSONDecodeError as err:
            raise DataError(path, None, None, f"invalid JSON line: {err.msg}") from None
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, err.lineno, None, f"invalid JSON: {err.msg}") from None
        if not isinstance(loaded, list):
            raise DataError(path, None, None, "expected a JSON list of {input, output} objects")
        records = list(enumerate(loaded, start=1))  # element index + 1 stands for the line
    demos = []
    for number, record in records:
        for field_name in ("input", "output"):
            if not isinstance(record, dict) or not isinstance(record.get(field_name), str):
                raise DataError(path, number, field_name, "expected a string")
        demos.append(Demonstration(record["input"], record["output"]))
    return demos
