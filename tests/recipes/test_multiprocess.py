"""Recipes launched as two CPU processes (torchrun, gloo) against the same recipe in one process.

Two ranks with half the batch each must train exactly like one process with the whole batch, a
2-process run killed and resumed must end bit-identical to an uninterrupted one, shared caches must
be built once, evaluation must cover every example exactly once, and launches that would silently
train alone must be refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from lmadapt.config import (
    DPOConfig,
    HintConfig,
    HintDataConfig,
    HintTrainConfig,
    HypernetworkConfig,
    ModelConfig,
    SFTConfig,
    load_config,
    save_config,
)
from lmadapt.demo.suite import FAMILIES, build_suite, export_superni
from lmadapt.recipes import dpo, hint, sft
from lmadapt.store import MANIFEST

pytestmark = pytest.mark.slow

# A rank that tokenises the data logs this once it is stored; a rank that waited for it logs a cache hit.
CACHE_BUILD = "token-cache: stored"


def _env() -> dict[str, str]:
    src = str(Path(sft.__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # On a machine without GPUs, --multi_gpu is what starts CPU processes in one gloo group.
    "accelerate": [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
    ],
}


def _torchrun(*args: str, launcher: str = "torchrun", **kw) -> subprocess.Popen:
    return subprocess.Popen([*LAUNCHERS[launcher], "-m", "lmadapt", *args], env=_env(), **kw)


def _run_2proc(recipe: str, cfg, tmp_path: Path, *extra: str, launcher: str = "torchrun") -> str:
    """Run `recipe` with `cfg` on two ranks to the end; returns both ranks' output."""
    path = tmp_path / f"{Path(cfg.train.output_dir).name}.yaml"
    save_config(cfg, path)
    pipes = {"stderr": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    proc = _torchrun(recipe, str(path), *extra, launcher=launcher, **pipes)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, (out + err)[-4000:]
    return out + err


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a_file: Path, b_file: Path, atol: float) -> None:
    a, b = load_file(str(a_file)), load_file(str(b_file))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=atol, rtol=0, msg=name)


def _assert_same_evals(one: Path, two: Path) -> None:
    """Every eval metric of the 2-process run equals the 1-process run's (sharded, then gathered);
    float32 sums in another order differ in the 6th digit, a lost or doubled example by far more."""
    evals = [[r for r in _records(d) if "eval_loss" in r] for d in (one, two)]
    assert evals[0] and len(evals[0]) == len(evals[1])
    for a, b in zip(*evals, strict=True):
        assert b.keys() == a.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key


COMMON = [
    "train.lr=3e-3",
    "train.adam_eps=1e-3",
    "train.warmup_ratio=0",
    "train.log_every=1",
    "train.progress=false",
    "train.num_threads=1",
    "data.max_length=64",
]


def _sft(tmp_path: Path, model_dir: Path, data: Path, name: str, *extra: str) -> SFTConfig:
    return load_config(
        SFTConfig,
        None,
        [
            f"model.path={model_dir}",
            f"data.sources.0.path={data}",
            f"data.eval_sources.0.path={data}",
            "data.eval_sources.0.count=7",  # odd: the two ranks' eval shards differ in size
            f"data.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / name}",
            *COMMON,
            *extra,
        ],
    )


@pytest.mark.parametrize(
    ("launcher", "packing"), [("torchrun", False), ("accelerate", False), ("torchrun", True)]
)
def test_sft_two_ranks_with_half_batches_equal_one_process(
    tmp_path, tiny_llama_dir, write_reverse_data, launcher, packing
):
    """Padded batches of examples, or (packing) batches of packed rows: ranks take alternate micro-batches."""
    data = write_reverse_data(tmp_path / "train.jsonl", 32)
    pack = f"data.batching={'packed' if packing else 'random'}"
    one = sft.run(
        _sft(tmp_path, tiny_llama_dir, data, "one", pack, "train.batch_size=8", "train.max_steps=4")
    )
    two_cfg = _sft(tmp_path, tiny_llama_dir, data, "two", pack, "train.batch_size=4", "train.max_steps=4")
    two_cfg.data.cache_dir = str(tmp_path / "cache2")  # a cold cache: the two ranks must share one build
    log = _run_2proc("sft", two_cfg, tmp_path, launcher=launcher)
    assert log.count(CACHE_BUILD) == 2  # train and eval sets, each tokenised by one rank only
    delta = load_file(str(one.out_dir / "model.safetensors"))["model.embed_tokens.weight"]
    assert (
        delta - load_file(str(tiny_llama_dir / "model.safetensors"))["model.embed_tokens.weight"]
    ).abs().max() > 1e-3
    _assert_same_weights(one.out_dir / "model.safetensors", tmp_path / "two" / "model.safetensors", atol=1e-6)
    _assert_same_evals(one.out_dir, tmp_path / "two")
    trained = [r["trained_tokens"] for r in _records(tmp_path / "two") if "trained_tokens" in r]
    assert trained[-1] == one.fit.state.trained_tokens


def test_dpo_two_ranks_with_half_batches_equal_one_process(tmp_path, tiny_llama_dir, write_pairs):
    data = write_pairs(tmp_path / "pairs.jsonl", 16)

    def cfg(name: str, batch: int) -> DPOConfig:
        return load_config(
            DPOConfig,
            None,
            [
                f"model.path={tiny_llama_dir}",
                f"data.sources.0.path={data}",
                f"data.eval_sources.0.path={data}",
                "data.eval_sources.0.count=5",
                f"data.cache_dir={tmp_path / name / 'cache'}",
                f"train.output_dir={tmp_path / name}",
                f"train.batch_size={batch}",
                "train.max_steps=3",
                "data.batching=random",  # grouped micro-batches depend on the per-rank batch size
                "dpo.beta=0.5",
                *COMMON,
            ],
        )

    one = dpo.run(cfg("one", 4))
    _run_2proc("dpo", cfg("two", 2), tmp_path)
    _assert_same_weights(one.out_dir / "model.safetensors", tmp_path / "two" / "model.safetensors", atol=1e-6)
    _assert_same_evals(one.out_dir, tmp_path / "two")
    # Pair statistics are gathered over ranks. Step 1 is left out: the policy still equals its
    # reference there, so every margin is rounding noise and its sign (the accuracy) arbitrary.
    train = [[r for r in _records(d) if "loss" in r][1:] for d in (one.out_dir, tmp_path / "two")]
    for key in ("rewards/margins", "rewards/accuracies"):
        assert [r[key] for r in train[1]] == pytest.approx([r[key] for r in train[0]], rel=1e-5, abs=1e-5)


def test_hint_two_ranks_with_half_batches_equal_one_process(tmp_path, tiny_llama_dir):
    suite = build_suite(
        train_instances=6, eval_instances=2, families=(FAMILIES[0], FAMILIES[1], FAMILIES[-1])
    )
    suite_dir = export_superni(suite, tmp_path / "suite")

    def cfg(name: str, batch: int) -> HintConfig:
        return HintConfig(
            model=ModelConfig(path=str(tiny_llama_dir)),
            hint=HypernetworkConfig(adapter_size=4, prefix_length=2),
            data=HintDataConfig(
                superni=str(suite_dir),
                encoding="def+1pos",
                max_instances_per_task=4,
                eval_instances_per_task=1,
            ),
            train=HintTrainConfig(
                output_dir=str(tmp_path / name),
                max_steps=3,
                batch_size=batch,
                lr=1e-3,
                log_every=1,
                progress=False,
                num_threads=1,
            ),
        )

    one = hint.run(cfg("one", 4))
    _run_2proc("hint", cfg("two", 2), tmp_path)
    for weights in ("hypernetwork.safetensors", "model/model.safetensors"):
        _assert_same_weights(one.out_dir / weights, tmp_path / "two" / weights, atol=1e-6)
    _assert_same_evals(one.out_dir, tmp_path / "two")


def test_killed_two_process_run_resumes_bit_identical(tmp_path, tiny_llama_dir, write_reverse_data):
    """SIGKILL both ranks after a checkpoint, resume on two ranks, end equal to an uninterrupted run.

    Attention dropout is on, so each rank's own RNG stream must be saved and restored too.
    """
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    (tiny_llama_dir / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.2}))
    data = write_reverse_data(tmp_path / "train.jsonl", 40)
    common = ["train.batch_size=2", "train.max_steps=60", "train.save_every=8", "train.keep_last=2"]
    _run_2proc("sft", _sft(tmp_path, tiny_llama_dir, data, "straight", *common), tmp_path)

    resumed = tmp_path / "resumed"
    cfg_path = tmp_path / "resumed.yaml"
    save_config(_sft(tmp_path, tiny_llama_dir, data, "resumed", *common), cfg_path)
    proc = _torchrun("sft", str(cfg_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    # 40 examples / (2 ranks x 2) = 10 steps per epoch: step 16 is mid-epoch.
    while not (resumed / "checkpoints" / "step-00000016" / MANIFEST).exists():  # written last
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    # torchrun starts each rank in a session of its own: kill the ranks and the launcher at once.
    for process in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        process.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "model.safetensors").exists()

    log = _run_2proc("sft", _sft(tmp_path, tiny_llama_dir, data, "resumed", *common), tmp_path, "--resume")
    assert "resumed from" in log, log[-3000:]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [r["step"] for r in _records(resumed) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_accelerate_launch_that_would_train_alone_is_refused(tmp_path, tiny_llama_dir, write_reverse_data):
    data = write_reverse_data(tmp_path / "train.jsonl", 8)
    cfg_path = tmp_path / "cfg.yaml"
    save_config(_sft(tmp_path, tiny_llama_dir, data, "run", "train.max_steps=1"), cfg_path)
    accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch", "--cpu", "--num_processes", "2"]
    proc = subprocess.run(
        [*accelerate, "-m", "lmadapt", "sft", str(cfg_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    # lmadapt exits with 2; accelerate reports that as its own failure (exit 1, its traceback).
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmadapt: error:")]
    assert len(errors) == 1 and "started one plain process" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "model.safetensors").exists()
