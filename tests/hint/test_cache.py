from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from lmadapt.config import HypernetworkConfig
from lmadapt.data.superni import EvalInstance
from lmadapt.hint import (
    ModuleCache,
    compile_instruction,
    instruction_key,
    load_hint_run,
    load_modules,
    predict,
)
from lmadapt.hint.cache import run_hypernetwork, save_modules
from lmadapt.hint.run import HINT_FILE, HYPERNETWORK_FILE, MODEL_DIR
from lmadapt.store import MANIFEST

CFG = HypernetworkConfig(modules=["adapter", "prefix"], adapter_size=4, prefix_length=2)


def _instances(n_tasks: int, per_task: int) -> list[EvalInstance]:
    out = []
    for t in range(n_tasks):
        instruction = f"Definition: task {t} says copy the input {'again ' * t}.\n\n"
        for i in range(per_task):
            text = f"in{t}{i}"
            out.append(
                EvalInstance(
                    f"t{t}-{i}", f"t{t}", "cat", "default", instruction, text, instruction + text, [text]
                )
            )
    return out


def test_saved_run_loads_back_with_identical_weights(save_run, family):
    path = save_run(family, CFG)
    record = json.loads((path / HINT_FILE).read_text())
    assert len(record["run_id"]) == 64 and record["hypernetwork"]["prefix_length"] == 2
    assert (path / MODEL_DIR / "config.json").is_file()
    run = load_hint_run(path)
    stored = load_file(str(path / HYPERNETWORK_FILE))
    assert stored.keys() == run.model.hypernetwork_state().keys()
    for name, value in stored.items():
        assert torch.equal(run.model.hypernetwork_state()[name], value)
    # The saved underlying model is a plain transformers model.
    assert run.model.underlying.config._attn_implementation == "lmadapt_hint_sdpa"
    assert "lmadapt" not in (path / MODEL_DIR / "config.json").read_text()
    # model/ carries the template around the instance, like every lmadapt model directory.
    assert AutoTokenizer.from_pretrained(path / MODEL_DIR).chat_template == run.template.jinja


def test_compiled_instruction_is_keyed_by_run_and_text_and_reused(save_run, tmp_path):
    run = load_hint_run(save_run("llama", CFG))
    text = "Definition: reverse the list.\n\n"
    path = compile_instruction(run, text, tmp_path / "out")
    assert path.name == instruction_key(run.run_id, text)
    assert instruction_key(run.run_id, text) != instruction_key(run.run_id, text + " ")
    assert instruction_key(run.run_id, text) != instruction_key("0" * 64, text)
    modules, meta = load_modules(path)
    assert meta["instruction"] == text and meta["run_id"] == run.run_id
    fresh = run_hypernetwork(run, text)
    assert modules.keys() == fresh.keys()
    for name in modules:
        torch.testing.assert_close(modules[name], fresh[name])
    # A new cache over the same directory finds the file: no hypernetwork pass.
    cache = ModuleCache(run, tmp_path / "out")
    passes = run.model.hypernetwork_passes
    cache.get(text)
    assert cache.compiled == 0 and run.model.hypernetwork_passes == passes


def test_a_file_from_another_run_is_recompiled(save_run, tmp_path):
    run = load_hint_run(save_run("llama", CFG))
    text = "Definition: sort.\n\n"
    cache = ModuleCache(run, tmp_path / "c")
    foreign = {k: torch.zeros_like(v) for k, v in run_hypernetwork(run, text).items()}
    save_modules(cache.path(text), foreign, "another-run", text)
    got = cache.get(text)
    assert cache.compiled == 1 and any(t.abs().sum() > 0 for t in got.values())


def test_predict_runs_the_hypernetwork_once_per_task_not_per_batch(save_run, tmp_path, family):
    run = load_hint_run(save_run(family, CFG))
    instances = _instances(n_tasks=2, per_task=5)
    result = predict(run, instances, max_new_tokens=3, batch_size=2, cache_dir=tmp_path / "m")
    assert result.compiled == 2 and run.model.hypernetwork_passes == 2
    assert len(result.predictions) == 10 and len(list((tmp_path / "m").glob(f"*/{MANIFEST}"))) == 2
    again = predict(run, instances, max_new_tokens=3, batch_size=4, cache_dir=tmp_path / "m")
    assert again.compiled == 0 and run.model.hypernetwork_passes == 2
    assert again.predictions == result.predictions
    flops = result.flops
    assert flops["num_tasks"] == 2 and flops["hint"]["per_instance"] > 0
    assert flops["concatenation_over_hint"] > 0
