from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from support import (
    byte_llama,
    byte_t5,
    save_with_byte_tokenizer,
    write_pairs_file,
    write_pool_file,
    write_prompts_file,
    write_reverse_file,
)

from lmadapt.config import SelectConfig, load_config
from lmadapt.train.checkpoint import latest_checkpoint

# Tiny models run faster on one thread, and tests run two at a time (pytest -n 2) on two cores.
torch.set_num_threads(1)


def lmadapt_cli(*args: str, **kw: Any) -> subprocess.Popen:
    """`python -m lmadapt ARGS` in a real process (unbuffered, so its output arrives as written)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmadapt", *args], env=env, **kw)


@pytest.fixture
def kill_after_checkpoint():
    """kill(command, config, run_dir, step): start `lmadapt COMMAND CONFIG` and SIGKILL it as soon as a
    complete checkpoint of `step` (or later) exists, asserting it was still running."""

    def kill(command: str, config: Path, run_dir: Path, step: int, timeout: float = 180) -> None:
        proc = lmadapt_cli(command, str(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while (newest := latest_checkpoint(run_dir / "checkpoints")) is None or int(
            newest.path.name.split("-")[-1]
        ) < step:
            assert proc.poll() is None, f"`lmadapt {command}` ended before it could be killed"
            assert time.time() < deadline, f"no checkpoint of step {step} after {timeout} s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    return kill


@pytest.fixture
def cli():
    """cli(*args, **popen_kwargs) -> a running `python -m lmadapt ARGS` process."""
    return lmadapt_cli


@pytest.fixture
def resume_cli():
    """resume(command, config) -> stderr of `lmadapt COMMAND CONFIG --resume`, asserting it succeeded."""

    def resume(command: str, config: Path, timeout: float = 300) -> str:
        proc = lmadapt_cli(command, str(config), "--resume", stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        assert "resumed from" in err
        return err

    return resume


@pytest.fixture(scope="session")
def write_pairs():
    """write_pairs(path, n, seed=0) -> path of a JSONL of preference pairs with a learnable rule."""
    return write_pairs_file


@pytest.fixture
def write_prompts():
    """write_prompts(path, n, seed=0) -> path of a JSONL of RL prompts with ground truth."""
    return write_prompts_file


@pytest.fixture
def graded_verifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """'grpo_test_verifier:reward', importable from the (temporary) working directory: graded rewards on
    a random model's output, where exact match would give every completion 0 and no learning signal."""
    source = (
        "def reward(completion, ground_truth):\n"
        "    return sum(ord(c) % 7 for c in completion) / (7 * max(1, len(completion)))\n"
    )
    (tmp_path / "grpo_test_verifier.py").write_text(source, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "grpo_test_verifier:reward"


@pytest.fixture
def write_reverse_data():
    return write_reverse_file


@pytest.fixture
def tiny_llama_dir(tmp_path: Path) -> Path:
    return save_with_byte_tokenizer(byte_llama(), tmp_path / "tiny-llama")


@pytest.fixture
def tiny_t5_dir(tmp_path: Path) -> Path:
    return save_with_byte_tokenizer(byte_t5(), tmp_path / "tiny-t5")


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (what a killed writer leaves behind)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def optimizer_setup():
    """setup(seed) -> (model, AdamW optimizer, warmup scheduler) of a tiny MLP: what checkpoints hold."""
    from lmadapt.config import TrainConfig
    from lmadapt.train.schedule import build_optimizer, build_scheduler

    def setup(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
        cfg = TrainConfig(lr=1e-2, warmup_ratio=0.5, weight_decay=0.1)
        optimizer = build_optimizer(model, cfg)
        return model, optimizer, build_scheduler(optimizer, cfg, total_steps=20)

    return setup


class CountingBuild:
    """A cache's build function: returns `value` and counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


@pytest.fixture
def counting_build() -> type[CountingBuild]:
    return CountingBuild


# Data selection (tests/selection, tests/recipes/test_select.py)
@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    return write_pool_file(tmp_path / "pool.jsonl", 120)


@pytest.fixture
def select_config(tmp_path: Path, tiny_llama_dir: Path, pool_file: Path):
    """select_config(*overrides) -> a SelectConfig over the tiny Llama, `pool_file` and a query file of
    two tasks (reverse: 2 prompts, count: 1)."""
    queries = tmp_path / "targets.jsonl"
    rows = [
        {"input": "reverse abcd", "task": "rev"},
        {"input": "reverse fedc", "task": "rev"},
        {"input": "count bead", "task": "cnt"},
    ]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def make(*overrides: str) -> SelectConfig:
        base = [
            f"model.path={tiny_llama_dir}",
            f"pool.0.path={pool_file}",
            f"queries.0.path={queries}",
            "selection.count=20",
            "selection.chunk_size=32",
            "selection.batch_size=8",
            f"selection.cache_dir={tmp_path / 'cache'}",
            "selection.num_threads=1",
            f"output={tmp_path / 'selected.jsonl'}",
        ]
        return load_config(SelectConfig, None, [*base, *overrides])

    return make
