"""`builtin` in a HINT config: the demo's synthetic suite and tiny Llama, so a config runs with nothing
on disk (configs/hint_demo.yaml).

Resolved at the command-line edge, before the recipe runs: `data.superni: builtin` writes the suite in
the SuperNI layout and `model.path: builtin` writes the demo's base model (a word-level tokenizer over the
suite's vocabulary and a tiny Llama from `DemoSettings`) under `<train.output_dir>.builtin/`, and the
config gets those paths. The recipe then reads them as it reads any clone and model. The files depend
only on the config's seeds and sizes, so a rerun or `--resume` writes the same ones again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from lmadapt.config import HintConfig
from lmadapt.demo.stages import DemoSettings, build_base_model
from lmadapt.demo.suite import build_suite, export_superni
from lmadapt.errors import ConfigError
from lmadapt.models.load import local_dir

log = logging.getLogger("lmadapt")

BUILTIN = "builtin"


def builtin_dir(cfg: HintConfig) -> Path:
    """Where the built-in suite and model go: beside the run directory, which must start empty."""
    out = Path(cfg.train.output_dir)
    return out.with_name(out.name + ".builtin")


def resolve_builtin(cfg: HintConfig) -> HintConfig:
    """`cfg` with `builtin` data and model replaced by the paths of freshly written ones; unchanged
    when it names neither."""
    if BUILTIN not in (cfg.data.superni, cfg.model.path):
        return cfg
    if cfg.data.superni != BUILTIN:
        raise ConfigError(
            "model.path: builtin needs data.superni: builtin (its vocabulary comes from the suite)"
        )
    if not cfg.train.output_dir:
        raise ConfigError("train.output_dir is not set (the built-in suite is written beside it)")
    if cfg.model.path != BUILTIN:  # a model of one's own: checked before the suite is written beside the run
        local_dir(cfg.model.path, "model.path")
    root = builtin_dir(cfg)
    d = cfg.data
    suite = build_suite(
        seed=d.seed,
        train_instances=d.max_instances_per_task,
        eval_instances=max(d.eval_instances_per_task, 1),
    )
    data = replace(d, superni=str(export_superni(suite, root / "suite")))
    model = cfg.model
    if model.path == BUILTIN:
        path = build_base_model(suite, DemoSettings(seed=cfg.train.seed), root / "base-model")
        model = replace(model, path=str(path), tokenizer="")
    log.info("built-in suite and model written to %s", root)
    return replace(cfg, data=data, model=model)
