"""NaN/inf injected into the loss or the gradients of a step (lmadapt.faults `step@N=nan-loss|inf-grad`).

The step is skipped and logged: weights, optimizer state and learning-rate schedule stay as they were,
the data moves on. `train.max_bad_steps` bad steps in a row stop the run with one line naming them and
the newest checkpoint, which holds the last good weights and resumes exactly.
"""

from __future__ import annotations

import json

from faults.harness import (
    RECIPES,
    assert_one_line_error,
    assert_same_weights,
    every_recipe,
    lmadapt,
    write_config,
)

from lmadapt import faults
from lmadapt.train.checkpoint import open_checkpoint

# Step 3's loss is NaN; steps 5, 6 (and 7, for the run that must abort) have an infinite gradient.
SKIPPED = "step@3=nan-loss,step@5-6=inf-grad"
ABORTS = "step@3=nan-loss,step@5-7=inf-grad"


def _same_files(a, b, names) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


@every_recipe
def test_bad_steps_are_skipped_and_a_run_of_them_stops_with_a_usable_checkpoint(recipe, inputs, tmp_path):
    run_dir = tmp_path / "run"
    cfg = recipe.config(inputs, run_dir, "train.max_bad_steps=3", "train.keep_last=4")
    proc = lmadapt(recipe.command, write_config(cfg, tmp_path / "run.yaml"), faults=ABORTS)
    assert "step 3: non-finite loss, update skipped (1 in a row" in proc.stderr
    assert "step 5: non-finite gradient norm, update skipped (1 in a row" in proc.stderr
    assert "step 6: non-finite gradient norm, update skipped (2 in a row" in proc.stderr
    ckpt = run_dir / "checkpoints"
    assert_one_line_error(
        proc,
        "steps 5-7: 3 consecutive non-finite",
        "max_bad_steps=3",
        f"newest checkpoint {ckpt / 'step-00000006'}",
    )
    step = {n: open_checkpoint(ckpt / f"step-{n:08d}").path for n in (2, 4, 6)}  # all verify
    # Steps 5 and 6 changed nothing: weights, Adam's moments and step count, the schedule.
    state_files = ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json")
    assert _same_files(step[4], step[6], state_files)
    assert not _same_files(step[2], step[4], ("trainable.safetensors",))  # step 4 was applied
    # Step 3 was skipped: the schedule moved once between checkpoints 2 and 4, not twice.
    schedule = [json.loads((step[n] / "scheduler.json").read_text())["last_epoch"] for n in (2, 4)]
    assert schedule == [2, 3]
    trainer = json.loads((step[6] / "trainer_state.json").read_text())
    assert (trainer["skipped_steps"], trainer["bad_steps_in_row"]) == (3, 2)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in metrics if r["step"] in (3, 6)] == [1, 3]


def test_a_run_resumed_after_skipped_steps_ends_like_an_uninterrupted_one(inputs, tmp_path, monkeypatch):
    """Killed after checkpoint 6 (steps 3, 5, 6 skipped, two of them in a row), resumed: bit-identical
    to the run that never stopped."""
    recipe = RECIPES["sft"]
    monkeypatch.setattr(faults, "_PLAN", faults.parse(SKIPPED))
    reference = recipe.run(recipe.config(inputs, tmp_path / "straight")).out_dir
    assert json.loads((reference / "result.json").read_text())["state"]["skipped_steps"] == 3
    config = write_config(recipe.config(inputs, tmp_path / "run"), tmp_path / "run.yaml")
    killed = lmadapt(recipe.command, config, faults=f"{SKIPPED},checkpoint/after-rename@3=kill")
    assert killed.returncode < 0 and "update skipped (2 in a row" in killed.stderr
    resumed = lmadapt(recipe.command, config, "--resume", faults=SKIPPED)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]
    assert_same_weights(recipe, reference, tmp_path / "run")
