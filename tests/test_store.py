"""The on-disk store: damage and crashes are detected, caches rebuild, checkpoints fall back.

Each fault is tried on a cache (the token cache) and on a checkpoint. Crashes are real: a child process
is SIGKILLed in the middle of writing an entry.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmadapt.data.cache import cached_examples
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.store import (
    MANIFEST,
    CorruptEntry,
    load_or_build,
    open_entry,
    write_entry,
)
from lmadapt.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")
EXAMPLES = [TokenizedExample([5, 6, 7, 1], [-100, -100, 7, 1]), TokenizedExample([9, 1], [4, 4, 1])]


def write_text_files(files: dict[str, str]):
    def write(directory: Path) -> dict:
        for name, text in files.items():
            (directory / name).write_text(text)
        return {"names": sorted(files)}

    return write


def test_entry_round_trips_with_every_file_in_its_manifest(tmp_path):
    entry = write_entry(
        tmp_path / "e", "test", 1, write_text_files({"a.json": "1", "b.json": "22"}), replace=False
    )
    manifest = json.loads((tmp_path / "e" / MANIFEST).read_text())
    assert manifest["files"]["b.json"]["size"] == 2 and len(manifest["files"]["a.json"]["sha256"]) == 64
    assert open_entry(tmp_path / "e", "test", 1) == entry
    assert entry.meta == {"names": ["a.json", "b.json"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # nothing staged left behind
    with pytest.raises(CorruptEntry, match="expected other v1"):
        open_entry(tmp_path / "e", "other", 1)
    with pytest.raises(CorruptEntry, match="expected test v2"):
        open_entry(tmp_path / "e", "test", 2)
    (tmp_path / "e").rename(tmp_path / "f")
    with pytest.raises(CorruptEntry, match="for key f"):  # content-addressed: the name is part of it
        open_entry(tmp_path / "f", "test", 1)


def test_replace_swaps_an_entry_and_no_replace_keeps_the_first(tmp_path):
    write_entry(tmp_path / "e", "test", 1, write_text_files({"a": "first"}), replace=False)
    write_entry(tmp_path / "e", "test", 1, write_text_files({"a": "second"}), replace=False)
    assert (tmp_path / "e" / "a").read_text() == "first"
    write_entry(tmp_path / "e", "test", 1, write_text_files({"a": "third"}), replace=True)
    assert (tmp_path / "e" / "a").read_text() == "third"
    open_entry(tmp_path / "e", "test", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


# ---------------------------------------------------------------------------------------------
# Damage to a complete entry


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-3])


def flip_bit(file: Path, at: int = -1) -> None:
    """Silent corruption: by default in the last byte, tensor data that still parses."""
    data = bytearray(file.read_bytes())
    data[at] ^= 0x10
    file.write_bytes(bytes(data))


DAMAGE = {
    "truncated file": lambda entry, data_file: truncate(entry / data_file),
    "flipped bit": lambda entry, data_file: flip_bit(entry / data_file),
    "missing manifest": lambda entry, data_file: (entry / MANIFEST).unlink(),
    "flipped bit in manifest": lambda entry, data_file: flip_bit(entry / MANIFEST, at=40),
    "missing file": lambda entry, data_file: (entry / data_file).unlink(),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_cache_entry_is_rebuilt_with_a_warning(counting_build, tmp_path, damage, caplog):
    cached_examples(tmp_path, "k", counting_build(EXAMPLES))
    damage(tmp_path / "k", "examples.safetensors")
    caplog.set_level("WARNING", logger="lmadapt")
    build = counting_build(EXAMPLES)
    assert cached_examples(tmp_path, "k", build) == (EXAMPLES, False)
    assert build.calls == 1 and "unusable, rebuilding" in caplog.text
    assert cached_examples(tmp_path, "k", build) == (EXAMPLES, True)  # the rebuilt entry verifies


def train_and_checkpoint(root: Path, setup, steps: tuple[int, ...]) -> dict[int, list[torch.Tensor]]:
    """Save checkpoints at `steps` of a tiny training run; returns the weights at each."""
    model, optimizer, scheduler = setup(0)
    weights = {}
    for step in range(1, max(steps) + 1):
        model(torch.randn(3, 4)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        if step in steps:
            save_checkpoint(root, model, optimizer, scheduler, TrainerState(step=step), keep_last=5)
            weights[step] = [p.detach().clone() for p in model.parameters()]
    return weights


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage, optimizer_setup, caplog):
    weights = train_and_checkpoint(tmp_path, optimizer_setup, steps=(2, 4))
    damage(tmp_path / "step-00000004", "optimizer.safetensors")
    caplog.set_level("WARNING", logger="lmadapt")
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint.path.name == "step-00000002" and "skipping checkpoint step-00000004" in caplog.text
    model, optimizer, scheduler = optimizer_setup(1)
    assert load_checkpoint(checkpoint, model, optimizer, scheduler).step == 2
    for expected, got in zip(weights[2], model.parameters(), strict=True):
        assert torch.equal(expected, got)


def test_no_intact_checkpoint_means_none(tmp_path, optimizer_setup):
    train_and_checkpoint(tmp_path, optimizer_setup, steps=(2,))
    flip_bit(tmp_path / "step-00000002" / "trainable.safetensors")
    assert latest_checkpoint(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# A writer killed in the middle (a real SIGKILL in a child process)


def run_killed(code: str, cwd: Path) -> None:
    """Run `code` in a child python that is expected to SIGKILL itself."""
    process = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr


def staged_leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_cache_write_killed_before_its_manifest_is_rebuilt(counting_build, tmp_path):
    # The data file is written and fsynced; the process dies as the manifest is about to be written.
    run_killed(
        """
        import os, signal
        import lmadapt.store as store
        from lmadapt.data.cache import cached_examples
        from lmadapt.data.tokenize import TokenizedExample
        store._write_durably = lambda path, text: os.kill(os.getpid(), signal.SIGKILL)
        cached_examples("cache", "k", lambda: [TokenizedExample([1, 2], [1, 2])])
        """,
        tmp_path,
    )
    cache = tmp_path / "cache"
    assert not (cache / "k").exists() and len(staged_leftovers(cache)) == 1
    build = counting_build(EXAMPLES)
    assert cached_examples(cache, "k", build) == (EXAMPLES, False) and build.calls == 1
    assert staged_leftovers(cache) == []  # the dead writer's staged directory was cleaned


def test_checkpoint_write_killed_between_files_keeps_the_previous_one(tmp_path, optimizer_setup):
    # Step 2 is saved; saving step 4 dies after the weight and optimizer files, before scheduler.json.
    run_killed(
        """
        import os, signal
        import torch
        from pathlib import Path
        import lmadapt.train.checkpoint as checkpoint
        from lmadapt.config import TrainConfig
        from lmadapt.train.schedule import build_optimizer, build_scheduler

        model = torch.nn.Linear(4, 2)
        cfg = TrainConfig(lr=1e-2)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_steps=10)
        state = checkpoint.TrainerState
        checkpoint.save_checkpoint(Path("ckpt"), model, optimizer, scheduler, state(step=2), 5)
        write_json = checkpoint._write_json

        def die_at_scheduler(path, obj):
            if path.name == "scheduler.json":
                os.kill(os.getpid(), signal.SIGKILL)
            write_json(path, obj)

        checkpoint._write_json = die_at_scheduler
        checkpoint.save_checkpoint(Path("ckpt"), model, optimizer, scheduler, state(step=4), 5)
        """,
        tmp_path,
    )
    root = tmp_path / "ckpt"
    [leftover] = staged_leftovers(root)
    assert sorted(p.name for p in (root / leftover).iterdir()) == [
        "optimizer.json",
        "optimizer.safetensors",
        "trainable.safetensors",
    ]
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == ["step-00000002"]
    assert latest_checkpoint(root).path.name == "step-00000002"
    model, optimizer, scheduler = optimizer_setup(0)
    save_checkpoint(root, model, optimizer, scheduler, TrainerState(step=4), keep_last=5)
    assert staged_leftovers(root) == [] and latest_checkpoint(root).path.name == "step-00000004"


def test_stale_cleaning_spares_live_writers(tmp_path, dead_pid):
    host = socket.gethostname()
    live = tmp_path / f".tmp-x+{host}+{os.getpid()}+00"
    dead = tmp_path / f".tmp-x+{host}+{dead_pid}+00"
    elsewhere = tmp_path / f".tmp-x+another-host+{dead_pid}+00"  # its pid means nothing on this host
    discarded = tmp_path / f".old-y+{host}+{dead_pid}+00"
    for directory in (live, dead, elsewhere, discarded):
        directory.mkdir()
    write_entry(tmp_path / "z", "test", 1, write_text_files({"a": "1"}), replace=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, "z"])


# ---------------------------------------------------------------------------------------------
# Two processes building the same entry


BUILD_ONCE = """
import json, sys, time
from pathlib import Path
from lmadapt.store import load_or_build

def build():
    with open("builds.log", "a") as log:
        log.write("built\\n")
    time.sleep(1.0)  # long enough for the other process to arrive while this one builds
    return {"value": 42}

def save(value, directory):
    (directory / "value.json").write_text(json.dumps(value))
    return {}

value, hit = load_or_build(
    Path("cache") / "k", "test", 1, build, save, lambda e: json.loads((e.path / "value.json").read_text())
)
print(json.dumps([value, hit]))
"""


def test_concurrent_builders_build_once_and_both_read_a_whole_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_ONCE], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = sorted(json.loads(p.communicate(timeout=120)[0]) for p in processes)
    assert results == [[{"value": 42}, False], [{"value": 42}, True]]
    assert (tmp_path / "builds.log").read_text() == "built\n"
    open_entry(tmp_path / "cache" / "k", "test", 1)


def test_failed_build_stores_nothing_and_releases_the_lock(tmp_path):
    def fail():
        raise RuntimeError("out of memory")

    def save(value: str, directory: Path) -> dict:
        (directory / "v.txt").write_text(value)
        return {}

    def load(entry):
        return (entry.path / "v.txt").read_text()

    with pytest.raises(RuntimeError):
        load_or_build(tmp_path / "k", "test", 1, fail, save, load)
    assert not (tmp_path / "k").exists()
    assert load_or_build(tmp_path / "k", "test", 1, lambda: "v", save, load) == ("v", False)
