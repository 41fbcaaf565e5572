from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import save_tiny_bert

from lmadapt.config import (
    HintConfig,
    HintDataConfig,
    HintPretrainConfig,
    HintTrainConfig,
    HypernetworkConfig,
    ModelConfig,
    save_config,
)
from lmadapt.data.superni import load_superni
from lmadapt.demo.suite import FAMILIES, build_suite, export_superni
from lmadapt.errors import ConfigError
from lmadapt.hint import is_hint_run, load_hint_run, load_modules, predict
from lmadapt.hint.run import HYPERNETWORK_FILE, MODEL_DIR
from lmadapt.recipes import hint
from lmadapt.store import MANIFEST, open_entry

SMALL = HypernetworkConfig(adapter_size=4, prefix_length=2)


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    suite = build_suite(
        train_instances=6, eval_instances=2, families=(FAMILIES[0], FAMILIES[1], FAMILIES[-1])
    )
    return export_superni(suite, tmp_path / "suite")


def _config(model_dir: Path, suite: Path, out: Path, steps: int, **train) -> HintConfig:
    return HintConfig(
        model=ModelConfig(path=str(model_dir)),
        hint=SMALL,
        data=HintDataConfig(superni=str(suite), encoding="def+1pos", max_instances_per_task=3),
        train=HintTrainConfig(
            output_dir=str(out),
            max_steps=steps,
            batch_size=4,
            lr=1e-3,
            progress=False,
            num_threads=1,
            **train,
        ),
    )


def test_hint_trains_saves_and_predicts(tiny_llama_dir, suite_dir, tmp_path):
    result = hint.run(_config(tiny_llama_dir, suite_dir, tmp_path / "run", steps=3))
    out = result.out_dir
    assert (
        is_hint_run(out)
        and (out / HYPERNETWORK_FILE).is_file()
        and (out / MODEL_DIR / "config.json").is_file()
    )
    assert result.fit.state.step == 3 and result.fit.state.trained_tokens > 0
    run = load_hint_run(out)
    assert run.run_id == result.run_id and run.settings.encoding == "def+1pos"
    instances = load_superni(suite_dir, encoding="def+1pos", max_instances=2)
    predicted = predict(run, instances, max_new_tokens=4, batch_size=4)
    tasks = {x.task for x in instances}
    assert len(predicted.predictions) == len(instances) and predicted.compiled == len(tasks)
    assert len(list((out / "modules").glob(f"*/{MANIFEST}"))) == len(tasks)


def test_killed_run_resumes_to_the_same_weights(
    tiny_llama_dir, suite_dir, tmp_path, kill_after_checkpoint, resume_cli
):
    straight = hint.run(_config(tiny_llama_dir, suite_dir, tmp_path / "a", steps=40))
    save_config(
        _config(tiny_llama_dir, suite_dir, tmp_path / "b", steps=40, save_every=2), tmp_path / "b.yaml"
    )
    kill_after_checkpoint("hint", tmp_path / "b.yaml", tmp_path / "b", 2)
    assert not (tmp_path / "b" / HYPERNETWORK_FILE).exists()
    resume_cli("hint", tmp_path / "b.yaml")
    a, b = (
        load_file(str(straight.out_dir / HYPERNETWORK_FILE)),
        load_file(str(tmp_path / "b" / HYPERNETWORK_FILE)),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.run_id == load_hint_run(tmp_path / "b").run_id


def test_seq2seq_with_pretraining_and_a_separate_encoder(tiny_t5_dir, suite_dir, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(f"document {i} has some plain text in it" for i in range(8)))
    cfg = _config(tiny_t5_dir, suite_dir, tmp_path / "t5", steps=2)
    cfg.hint = HypernetworkConfig(encoder="separate", adapter_size=4, prefix_length=2)
    cfg.pretrain = HintPretrainConfig(sources=[str(docs)], max_steps=2, lr=1e-3)
    result = hint.run(cfg)
    open_entry(result.out_dir / "pretrain" / hint.PRETRAINED, hint.PRETRAINED_KIND, 1)  # stored, intact
    assert (
        json.loads((result.out_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
    )
    run = load_hint_run(result.out_dir)
    assert run.model.kind == "seq2seq" and run.model.instruction_encoder is not None


def test_compile_from_a_task_file_or_an_instruction_with_examples(tiny_llama_dir, suite_dir, tmp_path):
    cfg = _config(tiny_llama_dir, suite_dir, tmp_path / "lora", steps=1)
    cfg.hint = HypernetworkConfig(modules=["lora"], lora_rank=2, fusion=False)
    run_dir = hint.run(cfg).out_dir
    task = sorted((suite_dir / "tasks").glob("*.json"))[0]
    from_task = hint.run_compile(run_dir, tmp_path / "compiled", task=task, peft=True)
    _modules, meta = load_modules(from_task.path)
    assert meta["instruction"] == from_task.instruction and "Positive Example 1" in from_task.instruction
    assert (from_task.peft_dir / "adapter_model.safetensors").is_file()
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"input": "a b", "output": "b a"}\n{"input": "c d", "output": "d c"}\n')
    from_text = hint.run_compile(
        run_dir, tmp_path / "compiled", instruction="reverse the list", examples=examples
    )
    assert from_text.instruction.startswith("Definition: reverse the list.")
    assert "Positive Example 2 -" in from_text.instruction and from_text.path != from_task.path
    with pytest.raises(ConfigError):
        hint.run_compile(run_dir, tmp_path / "compiled", task=task, instruction="x")


def test_eval_superni_on_a_hint_run_uses_compiled_modules(tiny_llama_dir, suite_dir, tmp_path):
    from lmadapt.recipes.evaluate import run_superni

    run_dir = hint.run(_config(tiny_llama_dir, suite_dir, tmp_path / "run", steps=2)).out_dir
    # The run reads inputs with its own template and limits: flags for a plain model are refused.
    for flag in ({"chat_template": "off"}, {"max_source_tokens": 512}):
        with pytest.raises(ConfigError, match="has no effect on a HINT run"):
            run_superni(suite_dir, tmp_path / "eval", model=str(run_dir), **flag)
    # No encoding named: the run's training encoding (def+1pos), not the def+2pos default.
    metrics = run_superni(suite_dir, tmp_path / "eval", model=str(run_dir), max_new_tokens=4, batch_size=4)
    assert metrics["run"]["encoding"] == "def+1pos"
    instances = load_superni(suite_dir, encoding="def+1pos")
    lines = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(instances)
    # One compiled module file per test task: the instruction was read once per task.
    assert len(list((run_dir / "modules").glob(f"*/{MANIFEST}"))) == len({x.task for x in instances})
    assert metrics["flops"] is not None and "error" not in metrics["flops"]


def test_chatml_instances_resize_the_underlying_model(tiny_llama_dir, suite_dir, tmp_path):
    cfg = _config(tiny_llama_dir, suite_dir, tmp_path / "run", steps=1)
    cfg.data.template = "chatml"
    result = hint.run(cfg)
    tokenizer = load_hint_run(result.out_dir).tokenizer
    assert result.model.underlying.get_input_embeddings().num_embeddings >= len(tokenizer)
    assert "<|im_end|>" in tokenizer.all_special_tokens


def test_training_with_a_pretrained_encoder_reads_both_tokenisations(tiny_llama_dir, suite_dir, tmp_path):
    words = " ".join(
        json.loads(path.read_text())["Definition"][0] for path in (suite_dir / "tasks").glob("*.json")
    )
    encoder = save_tiny_bert(tmp_path / "encoder", words + " Definition Positive Example Input Output")
    cfg = _config(tiny_llama_dir, suite_dir, tmp_path / "run", steps=2)
    cfg.hint = HypernetworkConfig(encoder=str(encoder), adapter_size=4, prefix_length=2)
    result = hint.run(cfg)
    assert result.model.pretrained_encoder is not None and len(result.model._frozen_states) > 0
    run = load_hint_run(result.out_dir)
    instances = load_superni(suite_dir, encoding="def+1pos", max_instances=1)
    predicted = predict(run, instances, max_new_tokens=3, batch_size=4)
    assert predicted.flops["hint"]["hypernetwork"] > 0 and len(predicted.predictions) == len(instances)


def test_gate_lr_opens_the_prefix_gates_faster(tiny_llama_dir, suite_dir, tmp_path):
    moved = {}
    for gate_lr in (0.0, 0.5):
        cfg = _config(tiny_llama_dir, suite_dir, tmp_path / f"g{gate_lr}", steps=2, gate_lr=gate_lr)
        gates = load_file(str(hint.run(cfg).out_dir / HYPERNETWORK_FILE))[hint.GATES]
        moved[gate_lr] = gates.abs().max().item()
    # Adam moves a parameter by about its learning rate per step: ~1e-3 per step at lr, ~0.5 at gate_lr.
    assert moved[0.0] < 3e-3 and moved[0.5] > 0.3
