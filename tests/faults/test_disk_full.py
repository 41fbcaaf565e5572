"""A full disk while writing a checkpoint, the token cache, reference log-probs or HINT modules.

The disk fills at a named point of the real write (lmadapt.faults `enospc`, the OSError a full disk
raises), and once for real on a size-limited tmpfs where the machine allows one without root: the run
stops with one error line (exit 2), the previous checkpoint is intact, and nothing half-written is left
where it could be read back.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults.harness import (
    RECIPES,
    SAVE_EVERY,
    assert_one_line_error,
    every_recipe,
    fault_env,
    lmadapt,
    write_config,
)

from lmadapt.store import MANIFEST
from lmadapt.train.checkpoint import latest_checkpoint, open_checkpoint

FULL = "No space left on device"


def _entries(root: Path) -> list[Path]:
    """Every directory under `root` that sits where an entry would be read from (not staged or discarded)."""
    return [p for p in root.rglob("*") if p.is_dir() and not p.name.startswith((".tmp-", ".old-"))]


@every_recipe
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(recipe, inputs, tmp_path):
    point = random.Random(recipe.command).choice(["between-files", "staged", "before-rename"])
    run_dir = tmp_path / "run"
    config = write_config(recipe.config(inputs, run_dir), tmp_path / "run.yaml")
    proc = lmadapt(recipe.command, config, faults=f"checkpoint/{point}@2=enospc")
    assert_one_line_error(proc, f"checkpoint {run_dir / 'checkpoints' / 'step-00000004'}", FULL, "--resume")
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-00000002"], "no staged or partial entry is left"
    assert latest_checkpoint(run_dir / "checkpoints").meta["step"] == SAVE_EVERY
    assert not (run_dir / recipe.weights[0]).exists()


CACHES = [
    pytest.param(RECIPES["sft"], "token-cache", "staged", id="sft-token-cache"),
    pytest.param(RECIPES["dpo"], "reference-logps", "before-rename", id="dpo-reference-logps"),
]


@pytest.mark.parametrize(("recipe", "kind", "point"), CACHES)
def test_disk_full_while_building_a_cache_stores_nothing(recipe, kind, point, inputs, tmp_path):
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    cfg = recipe.config(inputs, run_dir, f"data.cache_dir={cache}")
    proc = lmadapt(
        recipe.command, write_config(cfg, tmp_path / "run.yaml"), faults=f"{kind}/{point}@1=enospc"
    )
    assert_one_line_error(proc, kind, FULL)
    stored = [json.loads((p / MANIFEST).read_text()) for p in _entries(cache) if (p / MANIFEST).is_file()]
    assert kind not in [manifest["kind"] for manifest in stored]  # DPO's token cache was built before it
    assert not run_dir.exists(), "a run that failed before training leaves no run directory"


def test_disk_full_while_compiling_hint_modules_stores_nothing(inputs, straight, tmp_path):
    run = straight(RECIPES["hint"])
    task = sorted((inputs.superni / "tasks").glob("*.json"))[0]
    out = tmp_path / "modules"
    args = ("compile", "--model", run, "--task", task, "--out", out)
    proc = lmadapt(*args, faults="hint-modules/staged@1=enospc")
    assert_one_line_error(proc, "hint-modules", FULL)
    assert _entries(out) == []
    again = lmadapt(*args)  # space freed: the same command stores it
    assert again.returncode == 0, again.stderr[-3000:]
    assert len([p for p in _entries(out) if (p / MANIFEST).is_file()]) == 1


def _unprivileged_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _unprivileged_tmpfs(), reason="no unprivileged user namespaces to mount a tmpfs in")
def test_a_really_full_filesystem(inputs, straight, tmp_path):
    """SFT on a tmpfs that holds one checkpoint and a half: the second checkpoint runs out of space."""
    recipe = RECIPES["sft"]
    size = sum(f.stat().st_size for f in (straight(recipe) / "checkpoints" / "step-00000016").iterdir())
    mount, saved = tmp_path / "small", tmp_path / "saved"
    mount.mkdir()
    cfg = recipe.config(inputs, mount / "run", f"data.cache_dir={tmp_path / 'cache'}", "train.keep_last=1")
    config = write_config(cfg, tmp_path / "run.yaml")
    # The tmpfs lives as long as the namespace: the run is copied out before the shell exits.
    script = (
        f"mount -t tmpfs -o size={size * 3 // 2} tmpfs {mount} && "
        f"{sys.executable} -m lmadapt sft {config}; rc=$?; cp -a {mount}/run {saved}; exit $rc"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=fault_env(), capture_output=True, text=True, timeout=300
    )
    assert_one_line_error(proc, "checkpoint", FULL)
    assert [p.name for p in (saved / "checkpoints").iterdir()] == ["step-00000002"]
    assert open_checkpoint(saved / "checkpoints" / "step-00000002").meta["step"] == 2
