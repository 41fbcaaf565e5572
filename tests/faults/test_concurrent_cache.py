"""Two processes building the same cache entry at once: one builds it, the other waits and reads it.

Two separate SFT runs share a cache directory and start together; each holds still for a while
between writing the entry's files and storing it (lmadapt.faults `sleep`), so whichever builds first
holds the lock while the other arrives.
"""

from __future__ import annotations

import subprocess
import sys

from faults.harness import RECIPES, assert_same_weights, fault_env, write_config

from lmadapt.data.cache import FORMAT_VERSION, KIND
from lmadapt.store import MANIFEST, open_entry


def test_two_runs_building_the_same_token_cache_get_one_correct_entry(inputs, straight, tmp_path):
    recipe = RECIPES["sft"]
    cache = tmp_path / "cache"
    procs = []
    for name in ("a", "b"):
        cfg = recipe.config(inputs, tmp_path / name, f"data.cache_dir={cache}")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lmadapt", "sft", str(write_config(cfg, tmp_path / f"{name}.yaml"))],
                env=fault_env(f"{KIND}/staged@1=sleep-4"),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [log[-2000:] for log in logs]
    assert sum(log.count(f"{KIND}: stored") for log in logs) == 1
    assert sum(log.count(f"{KIND}: cache hit") for log in logs) == 1
    (entry,) = [m.parent for m in cache.rglob(MANIFEST)]
    open_entry(entry, KIND, FORMAT_VERSION)  # whole and verified
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    for name in ("a", "b"):
        assert_same_weights(recipe, straight(recipe), tmp_path / name)
