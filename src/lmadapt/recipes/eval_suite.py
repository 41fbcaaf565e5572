"""`lmadapt eval suite CONFIG`: a list of evaluations on one or several models, summarised side by side.

Every (model, evaluation) runs as `lmadapt eval NAME` would and writes its own directory,
`out/<model>/<evaluation>/`, with a `suite_eval.json` recording its settings. A suite run again (after a
crash, or with an evaluation added) keeps every finished result whose settings are unchanged and runs
only the rest; a result of other settings is refused unless `overwrite`. A model is loaded once for all
its evaluations. An evaluation that fails is reported (report.md, metrics.json, exit status) and the
others still run. The summary (`eval.suite`): `out/metrics.json`, `out/report.md` and `out/suite.png`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmadapt.config import TrainConfig, load_config
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval.sources import models_shared
from lmadapt.eval.suite import HEADLINES, SuiteConfig, headline, suite_metrics, write_suite_report
from lmadapt.recipes.evaluate import RUNNERS
from lmadapt.train.distributed import is_sharded

log = logging.getLogger("lmadapt")

SETTINGS_FILE = "suite_eval.json"
_SUITE_SUPPLIED = ("out", "model", "overwrite")  # what the suite gives every evaluation itself


def _check_name(what: str, name: str) -> None:
    """Labels become directory names: one plain path component each."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"{what} {name!r} must be a plain directory name (no '/', not starting with '.')")


def check_suite(cfg: SuiteConfig, runners: Mapping[str, Callable[..., dict[str, Any]]]) -> None:
    """Every mistake a suite can hold, found before anything runs: labels, evaluation names, arguments."""
    if not cfg.out:
        raise ConfigError("out: say where the suite writes its results")
    if not cfg.models:
        raise ConfigError("models: name at least one model (label: local directory)")
    if not cfg.evals:
        raise ConfigError("evals: list at least one evaluation")
    for label in cfg.models:
        _check_name("models label", label)
    seen: set[str] = set()
    for i, item in enumerate(cfg.evals):
        where = f"evals.{i}"
        if item.eval not in runners or item.eval not in HEADLINES:
            known = sorted(set(runners) & set(HEADLINES))
            close = difflib.get_close_matches(item.eval, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{where}.eval: unknown evaluation {item.eval!r}{hint}")
        _check_name(f"{where}.name", item.label)
        if item.label in seen:
            raise ConfigError(f"{where}: a second evaluation labelled {item.label!r}; give it a `name`")
        seen.add(item.label)
        parameters = inspect.signature(runners[item.eval]).parameters
        accepted = [name for name in parameters if name not in _SUITE_SUPPLIED]
        for key in item.args:
            if key in _SUITE_SUPPLIED:
                raise ConfigError(f"{where}.args.{key}: the suite sets it (models:, out:, --overwrite)")
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(accepted)}"
                raise ConfigError(f"{where}.args.{key}: not a setting of `eval {item.eval}`{hint}")
        missing = [
            name
            for name in accepted
            if parameters[name].default is inspect.Parameter.empty and name not in item.args
        ]
        if missing:
            raise ConfigError(f"{where}.args: `eval {item.eval}` needs {', '.join(missing)}")


def check_inputs(cfg: SuiteConfig, runners: Mapping[str, Callable[..., dict[str, Any]]]) -> None:
    """Every model directory and every path argument exists, before anything runs (a suite's first
    evaluation may take hours; a typo in its last one should not wait for them)."""
    for label, path in cfg.models.items():
        if path != IN_TRAINING and not Path(path).is_dir():
            raise ConfigError(f"models.{label}: no such model directory: {path}")
    for i, item in enumerate(cfg.evals):
        parameters = inspect.signature(runners[item.eval]).parameters
        for key, value in item.args.items():
            takes_path = "Path" in str(parameters[key].annotation)
            if takes_path and isinstance(value, str) and not Path(value).exists():
                raise ConfigError(f"evals.{i}.args.{key}: no such file or directory: {value}")


def _settings(model: str, item: Any) -> dict[str, Any]:
    return {"eval": item.eval, "model": model, "args": item.args}


def _finished(directory: Path, settings: Mapping[str, Any]) -> bool:
    """True when `directory` holds a finished result of these settings; a result of others is refused."""
    if not (directory / "metrics.json").is_file():
        return False
    recorded = directory / SETTINGS_FILE
    saved = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else None
    if saved != json.loads(json.dumps(settings)):
        raise LmadaptError(
            f"{directory} holds results of other settings than this suite's; pass --overwrite to "
            "replace them or choose another out"
        )
    return True


def run_suite(
    cfg: SuiteConfig, runners: Mapping[str, Callable[..., dict[str, Any]]], overwrite: bool = False
) -> dict[str, Any]:
    """Run every evaluation of `cfg` on every model (`runners`: evaluation name -> its run_* function);
    returns the suite's metrics.json. Finished results of the same settings are kept (see module doc)."""
    check_suite(cfg, runners)
    check_inputs(cfg, runners)
    out = Path(cfg.out)
    plan = [
        (model_label, path, item, out / model_label / item.label)
        for model_label, path in cfg.models.items()
        for item in cfg.evals
    ]
    done = {
        (m, item.label)
        for m, path, item, directory in plan
        if not overwrite and _finished(directory, _settings(path, item))
    }
    scores: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, str]] = {}
    dirs: dict[str, dict[str, str]] = {}
    with models_shared():
        for model_label, path, item, directory in plan:
            dirs.setdefault(item.label, {})[model_label] = str(directory.relative_to(out))
            if (model_label, item.label) in done:
                log.info("%s on %s: kept the finished result in %s", item.label, model_label, directory)
                metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
            else:
                log.info("%s on %s -> %s", item.label, model_label, directory)
                try:
                    metrics = runners[item.eval](out=directory, model=path, overwrite=True, **item.args)
                except (LmadaptError, FileNotFoundError) as e:  # the suite goes on with the others
                    log.error("%s on %s failed: %s", item.label, model_label, e)
                    errors.setdefault(item.label, {})[model_label] = str(e)
                    continue
                settings = json.dumps(_settings(path, item), indent=2)
                (directory / SETTINGS_FILE).write_text(settings + "\n", encoding="utf-8")
            scores.setdefault(item.label, {})[model_label] = headline(item.eval, metrics)
    metrics = suite_metrics(cfg, scores, errors, dirs)
    write_suite_report(out, metrics, cfg.paper)
    return metrics


IN_TRAINING = "(the model in training)"  # the suite's model "path": resolved to the live model


def training_suite(
    train: TrainConfig, tokenizer: Any, kind: str, chat_template: str | None, out_dir: Path, accelerator: Any
) -> Callable[[Any, int], dict[str, float]] | None:
    """`train.eval_suite` as a `fit` callback: `(model, step)` runs the suite on the model in memory, as
    it would be saved now (the run's tokenizer with `chat_template`), writes out_dir/eval_suite/step-N/
    and returns {"suite/<evaluation>": headline}. None without a suite; its mistakes are found here,
    before training starts."""
    if not train.eval_suite:
        return None
    if is_sharded(accelerator):
        raise ConfigError("train.eval_suite runs on the main process alone, which sharded engines forbid")
    suite = load_config(SuiteConfig, train.eval_suite)
    if suite.models or suite.out:
        log.info("train.eval_suite: evaluating the model in training (the suite's models/out are not used)")
    suite = dataclasses.replace(suite, models={"model": IN_TRAINING}, out=str(out_dir / "eval_suite"))
    check_suite(suite, RUNNERS)
    check_inputs(suite, RUNNERS)
    tokenizer = copy.copy(tokenizer)  # the saved model's template, without touching the training tokenizer
    tokenizer.chat_template = chat_template

    def evaluate(model: Any, step: int) -> dict[str, float]:
        at_step = dataclasses.replace(suite, out=str(out_dir / "eval_suite" / f"step-{step}"))
        with models_shared({IN_TRAINING: (model, tokenizer, kind)}):
            metrics = run_suite(at_step, RUNNERS, overwrite=True)
        return {
            f"suite/{label}": entry["scores"]["model"]
            for label, entry in metrics["evaluations"].items()
            if "model" in entry["scores"]
        }

    return evaluate
