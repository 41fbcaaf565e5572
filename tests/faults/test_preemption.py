"""SIGTERM mid-run, for every recipe: a checkpoint at the step boundary, exit 75, and `--resume` ends
bit-identical to an uninterrupted run; a second signal stops at once and corrupts nothing."""

from __future__ import annotations

from faults.harness import (
    RECIPES,
    SAVE_EVERY,
    STEPS,
    assert_same_weights,
    every_recipe,
    last_line,
    lmadapt,
    logged_steps,
    write_config,
)

from lmadapt.train.checkpoint import latest_checkpoint
from lmadapt.train.preemption import PREEMPTED_EXIT_CODE

STOP_AT = 5  # between two periodic checkpoints (SAVE_EVERY = 2), so only the requested one holds step 5


def _resume_and_compare(recipe, inputs, straight, run_dir, config) -> None:
    proc = lmadapt(recipe.command, config, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(recipe, straight(recipe), run_dir)
    assert logged_steps(run_dir) == list(range(1, STEPS + 1))


def _assert_stopped_at_once(proc, interrupted_at: int, run_dir) -> None:
    """Exit 130 without a traceback, the last line naming the step, and step STOP_AT - 1's checkpoint
    (the one before the signal) the newest."""
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc).startswith(f"lmadapt: interrupted at step {interrupted_at} of {STEPS}")
    assert latest_checkpoint(run_dir / "checkpoints").meta["step"] == STOP_AT - 1


@every_recipe
def test_sigterm_checkpoints_at_the_step_boundary_and_resume_is_bit_identical(
    recipe, inputs, straight, tmp_path
):
    assert STOP_AT % SAVE_EVERY
    run_dir = tmp_path / "run"
    config = write_config(recipe.config(inputs, run_dir), tmp_path / "run.yaml")
    proc = lmadapt(recipe.command, config, faults=f"step@{STOP_AT}=term")
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc).startswith(f"lmadapt: stopped on request at step {STOP_AT} of {STEPS}")
    assert latest_checkpoint(run_dir / "checkpoints").meta["step"] == STOP_AT
    _resume_and_compare(recipe, inputs, straight, run_dir, config)


@every_recipe
def test_a_second_signal_stops_at_once_and_the_previous_checkpoint_resumes(
    recipe, inputs, straight, tmp_path
):
    run_dir = tmp_path / "run"
    config = write_config(recipe.config(inputs, run_dir), tmp_path / "run.yaml")
    proc = lmadapt(recipe.command, config, faults=f"step@{STOP_AT}=term-twice")
    _assert_stopped_at_once(proc, STOP_AT - 1, run_dir)
    _resume_and_compare(recipe, inputs, straight, run_dir, config)


def test_a_grace_period_that_runs_out_in_the_requested_checkpoint_stops_and_the_previous_one_resumes(
    inputs, straight, tmp_path
):
    # SIGTERM in step 5; the checkpoint it asks for (the run's third) stalls between its files for longer
    # than train.stop_grace_s, so the run is stopped there: the half-written checkpoint is never exposed.
    recipe = RECIPES["sft"]
    run_dir = tmp_path / "run"
    cfg = recipe.config(inputs, run_dir, "train.stop_grace_s=1")
    config = write_config(cfg, tmp_path / "run.yaml")
    proc = lmadapt(recipe.command, config, faults=f"step@{STOP_AT}=term,checkpoint/between-files@3=sleep-4")
    _assert_stopped_at_once(proc, STOP_AT, run_dir)
    _resume_and_compare(recipe, inputs, straight, run_dir, config)
