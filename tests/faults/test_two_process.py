"""Faults in a two-process run (torchrun, gloo on CPU): SFT in full, DPO/reward/HINT killed mid-write;
the online RL recipes (one process only, for now) refuse a two-process launch.

Rank 0 writes the checkpoint entries, so a kill inside a write takes rank 0 down mid-write and the
launcher the other rank; a full disk fails rank 0 with one line and the launch ends instead of
leaving rank 1 waiting; bad steps are skipped on both ranks alike.
"""

from __future__ import annotations

import random

import pytest
from faults.harness import RECIPES, SAVE_EVERY, assert_same_weights, torchrun, write_config

from lmadapt.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow

SFT = RECIPES["sft"]
OTHERS = [r for name, r in RECIPES.items() if name != "sft" and not r.online]
ONLINE = [r for r in RECIPES.values() if r.online]
SKIPPED = "step@3=nan-loss,step@5=inf-grad"
WRITE_POINTS = ["between-files", "staged", "before-rename", "after-rename"]


def _config(inputs, tmp_path, name):
    # Two ranks with batch 1 each, random batching: the data order of one process with batch 2.
    cfg = SFT.config(
        inputs, tmp_path / name, "train.batch_size=1", "data.batching=random", "train.max_steps=8"
    )
    return write_config(cfg, tmp_path / f"{name}.yaml")


def _kill_inside_a_write_then_resume(recipe, straight_config, config, tmp_path, point, faults=""):
    """Two-process runs of `recipe`: one straight, one killed inside its second checkpoint write at `point`
    and resumed; the resumed one must end bit-identical. `faults` are armed in every launch. Returns the
    straight launch."""
    straight = torchrun(recipe.command, straight_config, faults=faults)
    assert straight.returncode == 0, straight.stderr[-3000:]
    kill = f"checkpoint/{point}@2=kill"
    killed = torchrun(recipe.command, config, faults=f"{faults},{kill}" if faults else kill)
    assert killed.returncode != 0
    expected = 2 * SAVE_EVERY if point == "after-rename" else SAVE_EVERY
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").meta["step"] == expected, point
    resumed = torchrun(recipe.command, config, "--resume", faults=faults)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]
    assert_same_weights(recipe, tmp_path / "straight", tmp_path / "run")
    return straight


def test_two_processes_killed_inside_a_checkpoint_write_resume_bit_identical(inputs, tmp_path):
    point = random.Random("two-process").choice(WRITE_POINTS)
    straight_config, config = _config(inputs, tmp_path, "straight"), _config(inputs, tmp_path, "run")
    straight = _kill_inside_a_write_then_resume(SFT, straight_config, config, tmp_path, point, SKIPPED)
    assert straight.stderr.count("step 3: non-finite loss, update skipped") == 2  # each rank skips it


@pytest.mark.parametrize("recipe", OTHERS, ids=[r.command for r in OTHERS])
def test_every_recipe_killed_inside_a_checkpoint_write_in_two_processes_resumes_bit_identical(
    recipe, inputs, tmp_path
):
    configs = [
        write_config(recipe.config(inputs, tmp_path / name, "train.max_steps=6"), tmp_path / f"{name}.yaml")
        for name in ("straight", "run")
    ]
    point = random.Random(recipe.command).choice(WRITE_POINTS)
    _kill_inside_a_write_then_resume(recipe, *configs, tmp_path, point)


@pytest.mark.parametrize("recipe", ONLINE, ids=[r.command for r in ONLINE])
def test_online_recipes_refuse_two_processes_and_write_nothing(recipe, inputs, tmp_path):
    config = write_config(recipe.config(inputs, tmp_path / "run"), tmp_path / "run.yaml")
    proc = torchrun(recipe.command, config)
    assert proc.returncode != 0
    errors = {line for line in proc.stderr.splitlines() if line.startswith("lmadapt: error:")}
    assert len(errors) == 1 and "run in one process" in errors.pop(), proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_a_full_disk_on_rank_0_ends_the_whole_launch(inputs, tmp_path):
    proc = torchrun("sft", _config(inputs, tmp_path, "run"), faults="checkpoint/staged@2=enospc")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmadapt: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000002"]
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").meta["step"] == 2
