"""Opening and closing a training run: the part every training recipe shares.

A recipe reads top to bottom:

    run = start_run(cfg, cfg.train, has_eval_data)  # output dir checked, accelerator up; nothing written
    ...load tokenizer, model, template, data...      # a bad input fails here, leaving no trace on disk
    run.create()                   # rank 0 creates the directory and config.yaml; other ranks wait
    result = fit(...)
    run.finish(result, export)     # rank 0 writes the Hugging Face outputs and result.json

`result.json` marks a finished run: resuming one says so and does nothing. Resuming with a config that
differs from the saved one names the differences and refuses unless `train.force_resume` (`--force`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from accelerate import Accelerator

from lmadapt.config import TrainConfig, save_config, to_dict
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.train.distributed import setup_accelerator
from lmadapt.train.loop import FitResult

log = logging.getLogger("lmadapt")

T = TypeVar("T")
RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
# Keys that change how a run is launched or reported, not what it computes: free to differ on resume.
RESUME_FREE_KEYS = frozenset(
    f"train.{k}"
    for k in (
        "resume",
        "overwrite",
        "force_resume",
        "progress",
        "log_every",
        "num_threads",
        "save_every",
        "keep_last",
        "stop_grace_s",
        "max_bad_steps",
    )
)


class RunComplete(Exception):
    """`--resume` of a run that already finished: nothing to do (the CLI exits 0)."""


@dataclass
class TrainingRun:
    cfg: Any  # the recipe's whole config, saved as config.yaml
    train: TrainConfig
    out: Path
    accelerator: Accelerator

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def create(self) -> None:
        """Create the run directory and write config.yaml (rank 0); every rank returns once it exists."""
        if self.is_main:
            if self.train.overwrite and not self.train.resume and self.out.exists():
                shutil.rmtree(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / CONFIG_FILE)
        self.accelerator.wait_for_everyone()

    def finish(self, result: FitResult, export: Callable[[Path], T]) -> T | None:
        """Write the outputs with `export(out_dir)` and result.json on rank 0; log the final line.
        Returns what `export` returned (None on other ranks)."""
        exported = None
        if self.is_main:
            exported = export(self.out)
            state = result.state
            summary = {
                "steps": state.step,
                "total_steps": result.total_steps,
                "state": asdict(state),
                "final_metrics": result.final_metrics,
            }
            (self.out / RESULT_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        self.accelerator.wait_for_everyone()
        final = ", ".join(f"{k}={v:.4g}" for k, v in result.final_metrics.items() if isinstance(v, float))
        log.info(
            "trained %d steps, %d tokens in %.0f s; final %s",
            result.state.step,
            result.state.trained_tokens,
            result.state.elapsed_s,
            final,
        )
        return exported


def start_run(cfg: Any, train: TrainConfig, has_eval_data: bool, generates: bool = False) -> TrainingRun:
    """Check that `train.output_dir` may be used (nothing is written yet) and set up the accelerator.
    `generates`: the recipe trains a model that answers prompts, so `train.eval_suite` applies to it."""
    if not train.output_dir:
        raise LmadaptError("train.output_dir is not set")
    if train.eval_suite and not generates:
        raise ConfigError("train.eval_suite evaluates a generating model: only sft and dpo runs take it")
    if train.eval_every and not (has_eval_data or train.eval_suite):
        raise ConfigError("train.eval_every is set but the recipe has no evaluation data to evaluate on")
    out = Path(train.output_dir)
    exists = out.exists() and any(out.iterdir())
    if exists and not train.resume and not train.overwrite:
        raise LmadaptError(
            f"output directory '{out}' already exists and is not empty; pass --resume to continue "
            "that run or --overwrite (train.overwrite=true) to replace it"
        )
    if exists and train.resume:
        _check_resumable(cfg, train, out)
    return TrainingRun(cfg, train, out, setup_accelerator(train))


def _check_resumable(cfg: Any, train: TrainConfig, out: Path) -> None:
    if (out / RESULT_FILE).is_file():
        done = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
        raise RunComplete(f"run '{out}' is already complete ({done['steps']} steps); nothing to do")
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file() or train.force_resume:
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
    now = _flatten(to_dict(cfg))
    changed = [
        f"{key}: {saved.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
        for key in sorted(set(saved) | set(now))
        if key not in RESUME_FREE_KEYS and saved.get(key) != now.get(key)
    ]
    if changed:
        raise LmadaptError(
            f"the config differs from the one '{out}' was started with ({'; '.join(changed)}); "
            "resume with the same config, or pass --force (train.force_resume=true) to continue anyway"
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
