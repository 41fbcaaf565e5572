"""The run skeleton every training recipe shares: directory rules, resume rules, Ctrl-C, progress lines."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import tiny_run_config

from lmadapt.config import SFTConfig, TrainConfig, load_config, save_config
from lmadapt.errors import ConfigError, DataError, LmadaptError
from lmadapt.recipes import sft
from lmadapt.train.checkpoint import latest_checkpoint
from lmadapt.train.monitor import Monitor, format_metrics
from lmadapt.train.preemption import PREEMPTED_EXIT_CODE
from lmadapt.train.run import RunComplete, start_run


def _cfg(tmp_path: Path, model_dir: Path, data: Path, *extra: str) -> SFTConfig:
    overrides = ("train.batch_size=4", "train.lr=1e-3", "train.log_every=10", "data.max_length=1024", *extra)
    return tiny_run_config(SFTConfig, tmp_path, model_dir, data, *overrides)


def test_start_run_writes_nothing_and_create_makes_the_directory(tmp_path):
    cfg = SFTConfig(train=TrainConfig(output_dir=str(tmp_path / "run"), num_threads=1))
    run = start_run(cfg, cfg.train, has_eval_data=False)
    assert not run.out.exists()
    run.create()
    assert load_config(SFTConfig, run.out / "config.yaml") == cfg


def test_existing_directory_is_refused_and_kept_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_text("precious")
    cfg = SFTConfig(train=TrainConfig(output_dir=str(out), num_threads=1))
    with pytest.raises(LmadaptError, match="already exists"):
        start_run(cfg, cfg.train, has_eval_data=False)
    assert (out / "model.safetensors").read_text() == "precious"
    cfg.train.overwrite = True
    run = start_run(cfg, cfg.train, has_eval_data=False)
    assert (out / "model.safetensors").exists()  # nothing is removed before the inputs are known good
    run.create()
    assert not (out / "model.safetensors").exists() and (out / "config.yaml").is_file()


def test_a_failed_run_leaves_nothing_so_the_corrected_rerun_starts(
    tmp_path, tiny_llama_dir, write_reverse_data
):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(DataError, match="role"):
        sft.run(_cfg(tmp_path, tiny_llama_dir, bad, "train.max_steps=1"))
    with pytest.raises(LmadaptError):
        sft.run(_cfg(tmp_path, tmp_path / "no-such-model", bad, "train.max_steps=1"))
    assert not (tmp_path / "run").exists()
    good = write_reverse_data(tmp_path / "good.jsonl", 8)
    assert sft.run(_cfg(tmp_path, tiny_llama_dir, good, "train.max_steps=1")).fit.state.step == 1


def test_resume_rules_changed_config_complete_run_and_final_checkpoint(
    tmp_path, tiny_llama_dir, write_reverse_data
):
    data = write_reverse_data(tmp_path / "train.jsonl", 8)
    result = sft.run(_cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=3", "train.save_every=2"))
    # The last step is checkpointed too, not only multiples of save_every.
    assert latest_checkpoint(result.out_dir / "checkpoints").path.name.endswith("00000003")
    with pytest.raises(RunComplete, match="already complete"):
        sft.run(_cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=3", "train.resume=true"))

    (result.out_dir / "result.json").unlink()  # as if it died after its last checkpoint
    changed = _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=5", "train.lr=1e-2", "train.resume=true")
    with pytest.raises(LmadaptError, match=r"train\.lr: 0\.001 -> 0\.01.*train\.max_steps: 3 -> 5"):
        sft.run(changed)
    # Launch and reporting settings may change freely; --force accepts a real change.
    same = _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=3", "train.resume=true", "train.log_every=1")
    assert sft.run(same).fit.state.step == 3
    (result.out_dir / "result.json").unlink()
    changed.train.force_resume = True
    assert sft.run(changed).fit.state.step == 5


def test_cli_resume_flag_goes_anywhere_and_a_complete_run_exits_0(
    tmp_path, tiny_llama_dir, write_reverse_data, cli
):
    data = write_reverse_data(tmp_path / "train.jsonl", 8)
    save_config(_cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=2"), tmp_path / "cfg.yaml")
    for args in (["train.log_every=1", "--resume"], ["--resume", "train.log_every=1"]):
        proc = cli(
            "sft",
            str(tmp_path / "cfg.yaml"),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert "already complete" in out  # the second invocation found the first one's finished run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_resume_is_exact(
    tmp_path, tiny_llama_dir, write_reverse_data, cli, resume_cli, sig
):
    """Preemption: no work since the last periodic checkpoint is lost, and the resumed run is exact."""
    data = write_reverse_data(tmp_path / "train.jsonl", 16)
    common = ["train.max_steps=1000", "train.save_every=5000", "train.log_every=5"]
    straight = sft.run(_cfg(tmp_path, tiny_llama_dir, data, *common, f"train.output_dir={tmp_path / 'a'}"))
    cfg = _cfg(tmp_path, tiny_llama_dir, data, *common)
    save_config(cfg, tmp_path / "cfg.yaml")
    proc = cli("sft", str(tmp_path / "cfg.yaml"), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists():  # training has started
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)  # mid-run, with no periodic checkpoint before step 1000
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lmadapt: stopped on request at step") and "--resume" in last
    stopped_at = int(last.split("at step ")[1].split()[0])
    assert 0 < stopped_at < 1000
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").path.name.endswith(f"{stopped_at:08d}")
    resume_cli("sft", tmp_path / "cfg.yaml")
    a = load_file(str(straight.out_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_a_terminal_progress_is_plain_lines_at_log_every(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lmadapt"):
        for progress in (True, False):  # pytest's stderr is not a TTY: never a redrawn bar
            monitor = Monitor(tmp_path, total_steps=4, start_step=0, progress=progress)
            for step in range(1, 5):
                monitor.step(step, step * 10, {"loss": 1.0 / step, "lr": 2e-5}, log_now=step % 2 == 0)
            monitor.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4", "2/4", "4/4"]
    assert "lr=2.00e-05" in lines[0] and "loss=0.5000" in lines[0] and "eta" in lines[0]
    assert all("\r" not in line for line in lines)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]  # a fresh start (step 0) begins a new file


def test_format_metrics_prints_learning_rates_in_scientific_notation():
    assert format_metrics({"step": 3, "lr": 0.0001, "loss": 1.23456, "tokens_per_s": 1234.5}) == (
        "lr=1.00e-04 loss=1.2346 tokens_per_s=1234"
    )


def test_an_eval_schedule_without_eval_data_is_refused(tmp_path):
    cfg = SFTConfig(train=TrainConfig(output_dir=str(tmp_path / "run"), eval_every=10))
    with pytest.raises(ConfigError, match="eval_every"):
        start_run(cfg, cfg.train, has_eval_data=False)
    assert start_run(cfg, cfg.train, has_eval_data=True).out == tmp_path / "run"
