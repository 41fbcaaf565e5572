"""Every YAML recipe in configs/ names its command on line 1 and loads into that command's config."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lmadapt import config as config_module
from lmadapt.cli import RECIPES as COMMANDS
from lmadapt.cli import main
from lmadapt.eval.suite import SuiteConfig
from lmadapt.recipes.eval_suite import check_suite
from lmadapt.recipes.evaluate import RUNNERS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_first_line_is_its_command_and_it_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# lmadapt "), first
    argv = shlex.split(first[2:])
    command = argv[1]
    assert f"configs/{path.name}" in argv
    overrides = [a for a in argv[2:] if "=" in a]
    if command == "eval":
        assert argv[2] == "suite"
        check_suite(config_module.load_config(SuiteConfig, path, overrides), RUNNERS)
        return
    # Training commands name their config class in cli.RECIPES; `select` is the one other config command.
    cls = getattr(config_module, "SelectConfig" if command == "select" else COMMANDS[command][0])
    config_module.load_config(cls, path, overrides)


def test_there_are_recipes():
    assert len(RECIPES) >= 2


TRAINING = [p for p in RECIPES if p.read_text().split()[2] in COMMANDS]


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_a_shipped_recipe_without_its_model_names_model_path_and_writes_nothing(
    path, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the recipes write under runs/, relative to here
    command = path.read_text().split()[2]
    assert main([command, str(path), f"model.path={tmp_path / 'no-model'}", "model.tokenizer="]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"lmadapt: error: model.path '{tmp_path / 'no-model'}' is not a local"), err
    assert list(tmp_path.iterdir()) == []
