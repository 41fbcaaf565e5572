from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch

from lmadapt.errors import LmadaptError
from lmadapt.store import MANIFEST
from lmadapt.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    sharded_state_dir,
)


def _step(model, opt, sched):
    loss = model(torch.randn(5, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path, optimizer_setup):
    model, opt, sched = optimizer_setup(0)
    for _ in range(3):
        _step(model, opt, sched)
    random.seed(7)
    np.random.seed(7)
    entry = save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=3, trained_tokens=99), keep_last=2)
    # What an uninterrupted run does next (its step draws from torch's RNG too):
    _step(model, opt, sched)
    expected = [p.detach().clone() for p in model.parameters()]
    expected_rand = (random.random(), float(np.random.rand()), torch.rand(1).item())

    model2, opt2, sched2 = optimizer_setup(1)  # different init: everything must come from the checkpoint
    state = load_checkpoint(entry, model2, opt2, sched2)
    assert state.step == 3 and state.trained_tokens == 99
    _step(model2, opt2, sched2)
    for a, b in zip(expected, model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected_rand


def test_incomplete_checkpoints_are_ignored_and_old_ones_pruned(tmp_path, dead_pid, optimizer_setup):
    model, opt, sched = optimizer_setup(0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=step), keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000006"]
    # A crash mid-write leaves a staged dir (a dead writer's) and no final-named entry; a final-named dir
    # without a manifest (an older layout, or a copy cut short) is no checkpoint either.
    staged = tmp_path / f".tmp-step-00000008+{socket.gethostname()}+{dead_pid}+0"
    staged.mkdir()
    crashed = tmp_path / "step-00000010"
    crashed.mkdir()
    (crashed / "trainable.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).path == tmp_path / "step-00000006"
    assert (tmp_path / "step-00000006" / MANIFEST).is_file()
    save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=8), keep_last=2)
    assert not staged.exists()
    assert latest_checkpoint(tmp_path).path == tmp_path / "step-00000008"


def test_each_rank_resumes_its_own_rng_stream(tmp_path, optimizer_setup):
    """Ranks draw different dropout masks: rank 1 must get rank 1's state back, not rank 0's."""
    model, opt, sched = optimizer_setup(0)
    states = []
    for seed in (10, 11):  # what two ranks would hand rank 0
        torch.manual_seed(seed)
        states.append(rng_state())
    entry = save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=1), 2, rng_states=states)
    expected = {}
    for rank, seed in ((0, 10), (1, 11)):
        torch.manual_seed(seed)
        expected[rank] = torch.rand(3)
    for rank in (1, 0):
        torch.manual_seed(99)
        load_checkpoint(entry, model, opt, sched, rank=rank)
        assert torch.equal(torch.rand(3), expected[rank])
    with pytest.raises(LmadaptError, match="not of rank 2"):
        load_checkpoint(entry, model, opt, sched, rank=2)


def test_sharded_state_goes_through_the_engine_and_the_rest_stays_in_the_entry(tmp_path, optimizer_setup):
    """FSDP/DeepSpeed runs hand weights and optimizer to the engine's own save/load (a stand-in here:
    the engines need GPUs); scheduler, trainer state and RNG still come from the checkpoint entry."""
    model, opt, sched = optimizer_setup(0)
    _step(model, opt, sched)
    shards = sharded_state_dir(tmp_path, 1)
    shards.mkdir(parents=True)
    (shards / "shard-0").write_text("engine state")  # what every rank's save wrote before the entry
    entry = save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=1), keep_last=1, sharded=True)
    assert not (entry.path / "trainable.safetensors").exists()

    model2, opt2, sched2 = optimizer_setup(1)
    loaded_from = []
    state = load_checkpoint(entry, model2, opt2, sched2, load_sharded=loaded_from.append)
    assert state.step == 1 and loaded_from == [shards]
    assert sched2.state_dict() == sched.state_dict()
    with pytest.raises(LmadaptError, match="holds sharded"):
        load_checkpoint(entry, model2, opt2, sched2)  # resumed without the engine
    with pytest.raises(LmadaptError, match="holds whole"):
        whole = save_checkpoint(tmp_path, model, opt, sched, TrainerState(step=2), keep_last=1)
        load_checkpoint(whole, model2, opt2, sched2, load_sharded=loaded_from.append)
    assert not shards.exists()  # pruned with its entry (keep_last=1)
