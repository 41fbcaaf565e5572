"""SIGKILL at random points, inside checkpoint writes too: resume ends bit-identical to an uninterrupted run.

One run directory is killed again and again, each time at another named point (lmadapt.faults) drawn
by a seeded generator (LMADAPT_FAULT_SEED picks another draw; the assertion messages name the seed),
resumed by the next process; the last process finishes it without faults.
"""

from __future__ import annotations

import os
import random
import signal

import pytest
from faults.harness import (
    RECIPES,
    SAVE_EVERY,
    STEPS,
    assert_same_weights,
    every_recipe,
    lmadapt,
    logged_steps,
    write_config,
)

from lmadapt.store import MANIFEST
from lmadapt.train.checkpoint import latest_checkpoint

SEED = int(os.environ.get("LMADAPT_FAULT_SEED", "0"))
# Where a checkpoint write can die, in write order: after its weights file, after all of its files,
# after its manifest (before the atomic rename), after the rename (before the directory fsync).
WRITE_POINTS = ("checkpoint/between-files", "checkpoint/staged", "checkpoint/before-rename")
KILL_POINTS = (*WRITE_POINTS, "checkpoint/after-rename", "step")


def _newest_step(root) -> int:
    newest = latest_checkpoint(root)  # verified against its manifest
    return 0 if newest is None else newest.meta["step"]


@every_recipe
def test_sigkill_at_random_points_then_resume_is_bit_identical(recipe, inputs, straight, tmp_path):
    rng = random.Random(f"{SEED}/{recipe.command}")
    reference = straight(recipe)
    run_dir = tmp_path / "run"
    config = write_config(recipe.config(inputs, run_dir), tmp_path / "run.yaml")
    checkpoints = run_dir / "checkpoints"
    points = list(KILL_POINTS)
    rng.shuffle(points)
    for i, point in enumerate(points):
        start = _newest_step(checkpoints)
        if point == "step":  # killed between two checkpoints, before this step's update
            n = start + rng.randint(1, SAVE_EVERY + 1)
            expected = (n - 1) // SAVE_EVERY * SAVE_EVERY
        else:  # the nth checkpoint this process writes
            n = rng.randint(1, 2)
            expected = start + SAVE_EVERY * (n if point.endswith("after-rename") else n - 1)
        fault = f"{point}@{n}=kill"
        why = f"seed {SEED}, kill {i + 1}: {fault} from step {start}"
        proc = lmadapt(recipe.command, config, *(["--resume"] if i else []), faults=fault)
        assert proc.returncode == -signal.SIGKILL, f"{why}: {proc.stderr[-3000:]}"
        assert _newest_step(checkpoints) == expected, why
        # A staged copy may be left behind, but nothing that looks like a checkpoint without verifying.
        for entry in checkpoints.glob("step-*"):
            assert (entry / MANIFEST).is_file(), f"{why}: {entry.name} is in place but incomplete"
        assert not (run_dir / recipe.weights[0]).exists()
    proc = lmadapt(recipe.command, config, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    assert not list(checkpoints.glob(".tmp-*")), "staged directories of killed writers are cleaned up"
    assert_same_weights(recipe, reference, run_dir)
    steps = logged_steps(run_dir)
    assert steps == list(range(1, STEPS + 1)), f"seed {SEED}: every step logged once, in order"


def test_every_training_command_is_in_the_suite():
    """Every case of tests/faults runs for every training command of the CLI: a new one (GRPO, PPO)
    fails here until it has its Recipe in harness.RECIPES."""
    from lmadapt import cli

    assert set(cli.RECIPES) == set(RECIPES)


pytestmark = pytest.mark.slow
