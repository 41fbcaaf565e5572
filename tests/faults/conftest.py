"""Fixtures of the fault-injection suite (helpers and the recipe table: harness.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faults.harness import Inputs, Recipe
from support import (
    byte_llama,
    save_byte_reward_model,
    save_with_byte_tokenizer,
    write_pairs_file,
    write_prompts_file,
    write_reverse_file,
)

from lmadapt.demo.suite import FAMILIES, build_suite, export_superni


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("fault-inputs")
    suite = build_suite(train_instances=6, eval_instances=2, families=(FAMILIES[0], FAMILIES[1]))
    return Inputs(
        root=root,
        model=save_with_byte_tokenizer(byte_llama(), root / "tiny-llama"),
        chat=write_reverse_file(root / "chat.jsonl", 24),
        pairs=write_pairs_file(root / "pairs.jsonl", 24),
        superni=export_superni(suite, root / "suite"),
        prompts=write_prompts_file(root / "prompts.jsonl", 24),
        reward_model=save_byte_reward_model(root / "reward-model"),
    )


@pytest.fixture(scope="session")
def straight(inputs) -> Callable[[Recipe], Path]:
    """straight(recipe) -> the run directory of the recipe run uninterrupted in this process (once)."""
    done: dict[str, Path] = {}

    def run(recipe: Recipe) -> Path:
        if recipe.command not in done:
            # Each recipe's caches beside its run: inputs.root/<command>/cache.
            cfg = recipe.config(inputs, inputs.root / recipe.command / "straight")
            done[recipe.command] = recipe.run(cfg).out_dir
        return done[recipe.command]

    return run
