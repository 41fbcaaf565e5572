from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmadapt.cli import main
from lmadapt.config import HintConfig, HintDataConfig, HintTrainConfig, ModelConfig
from lmadapt.data.superni import load_split_tasks
from lmadapt.demo.builtin import builtin_dir, resolve_builtin
from lmadapt.errors import ConfigError
from lmadapt.hint import is_hint_run
from lmadapt.models.load import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, model: str = "builtin", data: str = "builtin") -> HintConfig:
    return HintConfig(
        model=ModelConfig(path=model),
        data=HintDataConfig(superni=data, max_instances_per_task=3, eval_instances_per_task=1),
        train=HintTrainConfig(output_dir=str(tmp_path / "run")),
    )


def test_builtin_data_and_model_become_paths_beside_the_run(tmp_path):
    cfg = resolve_builtin(_cfg(tmp_path))
    root = tmp_path / "run.builtin"
    assert builtin_dir(cfg) == root
    assert cfg.data.superni == str(root / "suite") and cfg.model.path == str(root / "base-model")
    tasks = load_split_tasks(cfg.data.superni, "default", "train", 3)
    assert tasks and all(len(t.instances) == 3 for t in tasks)
    # The model's vocabulary covers the suite: a definition has no unknown words.
    tokenizer = load_tokenizer(cfg.model.path)
    assert tokenizer.unk_token_id not in tokenizer(tasks[0].definition)["input_ids"]
    assert not (tmp_path / "run").exists()  # the recipe creates the run directory itself


def test_configs_without_builtin_are_unchanged_and_a_builtin_model_needs_the_builtin_suite(tmp_path):
    cfg = _cfg(tmp_path, model="some/model", data="some/clone")
    assert resolve_builtin(cfg) == cfg
    with pytest.raises(ConfigError, match=r"needs data\.superni: builtin"):
        resolve_builtin(_cfg(tmp_path, data="some/clone"))


def test_hint_demo_config_runs_from_the_command_line(tmp_path):
    out = tmp_path / "hint-demo"
    overrides = [
        f"train.output_dir={out}",
        "train.max_steps=1",
        "train.eval_every=0",
        "train.progress=false",
        "train.num_threads=1",
        "data.max_instances_per_task=2",
        "data.eval_instances_per_task=1",
    ]
    assert main(["hint", str(ROOT / "configs" / "hint_demo.yaml"), *overrides]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["superni"] == str(tmp_path / "hint-demo.builtin" / "suite")
    assert is_hint_run(out)
