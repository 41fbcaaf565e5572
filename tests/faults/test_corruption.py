"""A bit flipped or a file truncated in a checkpoint, a cache entry or a compiled HINT module.

Every damage is caught by the store's checksums on the real recipe paths: a checkpoint falls back to
the previous complete one with a warning (and the resumed run still ends bit-identical), a cache
entry is rebuilt, a module entry is recompiled; nothing damaged is ever loaded.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from faults.harness import (
    DAMAGES,
    RECIPES,
    STEPS,
    assert_same_weights,
    copy_run,
    every_recipe,
    lmadapt,
    write_config,
)
from safetensors.torch import load_file

from lmadapt.hint.cache import MODULES_FILE, load_modules
from lmadapt.store import MANIFEST, CorruptEntry

# Which file of the newest checkpoint each recipe's case damages, and how: together they cover the
# weights, the optimizer state, the RNG state and the trainer state, flipped and truncated.
CHECKPOINT_DAMAGE = {
    "sft": ("trainable.safetensors", "flip"),
    "dpo": ("optimizer.safetensors", "truncate"),
    "reward": ("rng-rank0.json", "flip"),
    "hint": ("trainer_state.json", "truncate"),
}


@every_recipe
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(recipe, inputs, straight, tmp_path):
    name, damage = CHECKPOINT_DAMAGE.get(recipe.command, ("trainable.safetensors", "flip"))
    run_dir = tmp_path / "run"
    config = copy_run(recipe, inputs, straight(recipe), run_dir)
    newest = run_dir / "checkpoints" / f"step-{STEPS:08d}"
    DAMAGES[damage](newest / name)
    proc = lmadapt(recipe.command, config, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = next(line for line in proc.stderr.splitlines() if line.startswith("skipping checkpoint"))
    assert f"step-{STEPS:08d}" in warning and name in warning
    assert f"resumed from {run_dir / 'checkpoints' / f'step-{STEPS - 2:08d}'}" in proc.stderr
    assert_same_weights(recipe, straight(recipe), run_dir)


CACHES = [
    pytest.param(RECIPES["sft"], "token-cache", "examples.safetensors", "flip", id="sft-token-cache"),
    pytest.param(RECIPES["dpo"], "reference-logps", None, "truncate", id="dpo-reference-logps"),
]


@pytest.mark.parametrize(("recipe", "kind", "name", "damage"), CACHES)
def test_damaged_cache_entry_is_rebuilt(recipe, kind, name, damage, inputs, straight, tmp_path):
    reference = straight(recipe)
    cache = tmp_path / "cache"
    shutil.copytree(reference.parent / "cache", cache)
    entries = [m.parent for m in cache.rglob(MANIFEST) if json.loads(m.read_text())["kind"] == kind]
    assert entries
    for entry in entries:
        target = entry / name if name else next(p for p in entry.iterdir() if p.name != MANIFEST)
        DAMAGES[damage](target)
    run_dir = tmp_path / "run"
    cfg = recipe.config(inputs, run_dir, f"data.cache_dir={cache}")
    proc = lmadapt(recipe.command, write_config(cfg, tmp_path / "run.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(f"{kind}: cache entry unusable, rebuilding") == len(entries)
    assert_same_weights(recipe, reference, run_dir)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_module_entry_is_recompiled(damage, inputs, straight, tmp_path):
    run = straight(RECIPES["hint"])
    task = sorted((inputs.superni / "tasks").glob("*.json"))[0]
    out = tmp_path / "modules"
    args = ("compile", "--model", run, "--task", task, "--out", out)
    first = lmadapt(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    (entry,) = [m.parent for m in out.rglob(MANIFEST)]
    # Copies: the loaded tensors may map the file that is damaged next.
    intact = {name: t.clone() for name, t in load_file(str(entry / MODULES_FILE)).items()}
    DAMAGES[damage](entry / MODULES_FILE)
    with pytest.raises(CorruptEntry, match=MODULES_FILE):
        load_modules(entry)
    again = lmadapt(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "hint-modules: cache entry unusable, rebuilding" in again.stderr
    modules, _ = load_modules(entry)
    assert modules.keys() == intact.keys() and all(torch.equal(modules[k], intact[k]) for k in intact)
