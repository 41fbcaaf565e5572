"""Helpers of the fault-injection suite (tests/faults): every test runs real `lmadapt` processes and kills
or starves them.

Faults are armed with LMADAPT_FAULTS (lmadapt.faults: named points in the store, checkpoints and the
training step). Every training recipe runs through the same cases: `RECIPES` holds one `Recipe` per
command, so adding a recipe (GRPO, PPO) to the whole suite is one entry there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from safetensors.torch import load_file

from lmadapt.config import (
    DPOConfig,
    GRPOConfig,
    HintConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    load_config,
    save_config,
)
from lmadapt.recipes import dpo, grpo, hint, ppo, reward, sft

SRC = str(Path(sft.__file__).resolve().parents[2])
TESTS = str(Path(__file__).resolve().parents[1])  # so a run in a subprocess imports `graded_reward`
# Every case trains this long, checkpointing every SAVE_EVERY steps, so a run passes several checkpoints.
STEPS, SAVE_EVERY = 16, 2


@dataclass(frozen=True)
class Inputs:
    """What every recipe's runs read: one tiny model and one data file per data kind."""

    root: Path
    model: Path
    chat: Path
    pairs: Path
    superni: Path
    prompts: Path  # online RL prompts with ground truth
    reward_model: Path


@dataclass(frozen=True)
class Recipe:
    command: str  # `lmadapt COMMAND CONFIG`
    config_cls: type
    # The overrides that point the config at its model and data (caches beside the run directory).
    data: Callable[[Inputs, Path], list[str]]
    run: Callable[[Any], Any]  # the recipe in this process (the uninterrupted reference runs)
    weights: tuple[str, ...]  # output files compared bit for bit
    online: bool = False  # an RL recipe: accumulates over its rollout batch, not train.grad_accum

    def config(self, inputs: Inputs, out: Path, *overrides: str) -> Any:
        train = [o for o in _train(out) if not (self.online and o.startswith("train.grad_accum="))]
        return load_config(self.config_cls, None, [*self.data(inputs, out), *train, *overrides])


def _train(out: Path) -> list[str]:
    return [
        f"train.output_dir={out}",
        f"train.max_steps={STEPS}",
        f"train.save_every={SAVE_EVERY}",
        "train.keep_last=3",
        "train.batch_size=2",
        "train.grad_accum=2",  # the skipped-step guard must not corrupt accumulation
        "train.lr=1e-3",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
    ]


def _chat(inputs: Inputs, out: Path, data: Path | None = None) -> list[str]:
    return [
        f"model.path={inputs.model}",
        f"data.sources.0.path={data or inputs.chat}",
        f"data.cache_dir={out.parent / 'cache'}",
        "data.max_length=48",
    ]


def _pairs(inputs: Inputs, out: Path) -> list[str]:
    return _chat(inputs, out, inputs.pairs)


def _hint(inputs: Inputs, out: Path) -> list[str]:
    return [
        f"model.path={inputs.model}",
        f"data.superni={inputs.superni}",
        "data.encoding=def+1pos",
        "data.max_instances_per_task=3",
        "hint.adapter_size=4",
        "hint.prefix_length=2",
    ]


def graded_reward(completion: str, ground_truth: str) -> float:
    """A reward a random policy earns in varying amounts, so its GRPO groups carry gradients (exact
    match would give every completion 0 and leave the weights untouched)."""
    return sum(ord(c) % 7 for c in completion) / (7 * max(1, len(completion)))


def _rl(inputs: Inputs, out: Path) -> list[str]:
    return [
        f"model.path={inputs.model}",
        f"data.sources.0={inputs.prompts}",
        f"data.cache_dir={out.parent / 'cache'}",
        "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6",
    ]


def _grpo(inputs: Inputs, out: Path) -> list[str]:
    return [
        *_rl(inputs, out),
        "rollout.num_generations=4",
        "reward.kind=verifier",
        "reward.verifier=faults.harness:graded_reward",
    ]


def _ppo(inputs: Inputs, out: Path) -> list[str]:
    return [*_rl(inputs, out), f"ppo.reward_model={inputs.reward_model}"]


HF_MODEL = ("model.safetensors",)
RECIPES = {
    "sft": Recipe("sft", SFTConfig, _chat, sft.run, HF_MODEL),
    "dpo": Recipe("dpo", DPOConfig, _pairs, dpo.run, HF_MODEL),
    "reward": Recipe("reward", RewardConfig, _pairs, reward.run, HF_MODEL),
    "hint": Recipe(
        "hint", HintConfig, _hint, hint.run, ("hypernetwork.safetensors", "model/model.safetensors")
    ),
    "grpo": Recipe("grpo", GRPOConfig, _grpo, grpo.run, HF_MODEL, online=True),
    "ppo": Recipe("ppo", PPOConfig, _ppo, ppo.run, HF_MODEL, online=True),
}
every_recipe = pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))


def fault_env(faults: str = "") -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, TESTS, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LMADAPT_FAULTS", None)
    return {**env, "LMADAPT_FAULTS": faults} if faults else env


def lmadapt(*args: str, faults: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lmadapt ARGS` in a process of its own with LMADAPT_FAULTS=`faults`; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "lmadapt", *map(str, args)],
        env=fault_env(faults),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(cfg: Any, path: Path) -> Path:
    save_config(cfg, path)
    return path


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The process failed as a user error: exit 2, one `lmadapt: error:` line naming `fragments`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmadapt: error:")]
    assert len(errors) == 1 and errors[0] == last_line(proc), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_same_weights(recipe: Recipe, a: Path, b: Path) -> None:
    for name in recipe.weights:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        for key in x:
            assert torch.equal(x[key], y[key]), f"{name}: {key}"


def logged_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


def copy_run(recipe: Recipe, inputs: Inputs, source: Path, out: Path) -> Path:
    """A copy of run `source` at `out` as it was before it finished: checkpoints and metrics only, and
    the config naming `out` (so `--resume` accepts it). Returns the copy's config file."""
    out.mkdir()
    shutil.copytree(source / "checkpoints", out / "checkpoints")
    shutil.copy(source / "metrics.jsonl", out / "metrics.jsonl")
    cfg = recipe.config(inputs, out)
    save_config(cfg, out / "config.yaml")
    return write_config(cfg, out.with_suffix(".yaml"))


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {"flip": flip_a_bit, "truncate": truncate}


def torchrun(*args: str, faults: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """`lmadapt ARGS` as two CPU processes (torchrun, gloo); every rank gets LMADAPT_FAULTS=`faults`."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen(
        [*launcher, "-m", "lmadapt", *map(str, args)],
        env=fault_env(faults),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hung launch must not outlive the test
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
