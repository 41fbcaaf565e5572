from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmadapt.config import HypernetworkConfig
from lmadapt.errors import LmadaptError
from lmadapt.hint.run import HINT_FILE, HYPERNETWORK_FILE, UNGATED_FORMAT, load_hint_run


def _as_saved_before_gates(path) -> None:
    """Rewrite a run as lmadapt-hint/1 wrote it: that format tag and no prefix gates in the weights."""
    record = json.loads((path / HINT_FILE).read_text())
    (path / HINT_FILE).write_text(json.dumps({**record, "format": UNGATED_FORMAT}))
    weights = load_file(str(path / HYPERNETWORK_FILE))
    save_file({k: v for k, v in weights.items() if "prefix_gates" not in k}, str(path / HYPERNETWORK_FILE))


def test_a_run_with_prefixes_saved_before_gates_is_refused_by_name(save_run):
    path = save_run(
        "llama", HypernetworkConfig(modules=["adapter", "prefix"], adapter_size=4, prefix_length=2)
    )
    _as_saved_before_gates(path)
    with pytest.raises(LmadaptError) as err:
        load_hint_run(path, device="cpu")
    message = str(err.value)
    assert str(path) in message and "retrain" in message and "\n" not in message


def test_a_run_without_prefixes_saved_before_gates_still_loads(save_run):
    cfg = HypernetworkConfig(modules=["adapter", "lora"], adapter_size=4, lora_rank=2)
    path = save_run("t5", cfg)
    expected = load_hint_run(path, device="cpu").model.hypernetwork_state()
    _as_saved_before_gates(path)
    run = load_hint_run(path, device="cpu")
    assert run.model.generator.prefix_gates is None
    got = run.model.hypernetwork_state()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_a_saved_run_keeps_its_gates(save_run):
    path = save_run("llama", HypernetworkConfig(adapter_size=4, prefix_length=2))
    stored = load_file(str(path / HYPERNETWORK_FILE))["generator.prefix_gates"]
    assert stored.shape == (2, 4) and stored.abs().min() > 0  # randomised by save_run, so not the init
    assert torch.equal(load_hint_run(path, device="cpu").model.generator.prefix_gates.detach(), stored)
