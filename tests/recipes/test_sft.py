from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import logged_losses, tiny_run_config
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from lmadapt.config import SFTConfig, load_config, save_config
from lmadapt.errors import LmadaptError
from lmadapt.recipes import sft


def _cfg(tmp_path: Path, model_dir: Path, data: Path, *extra: str) -> SFTConfig:
    return tiny_run_config(
        SFTConfig, tmp_path, model_dir, data, "train.lr=3e-3", "train.warmup_ratio=0.1", *extra
    )


def test_sft_tiny_llama_lowers_loss_and_saves_hf_model(tmp_path, tiny_llama_dir, write_reverse_data, caplog):
    data = write_reverse_data(tmp_path / "train.jsonl", 64)
    cfg = _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=30", f"data.eval_sources.0.path={data}")
    result = sft.run(cfg)
    losses = logged_losses(result.out_dir)
    assert len(losses) == 30 and losses[-1] < 0.7 * losses[0]
    # Plain transformers loads the output, with the chat template it was trained with.
    model = AutoModelForCausalLM.from_pretrained(result.out_dir)
    tok = AutoTokenizer.from_pretrained(result.out_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "rev ab"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nrev ab\n<|assistant|>\n"
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, result.model.get_parameter(name))
    assert load_config(SFTConfig, result.out_dir / "config.yaml") == cfg
    assert (result.out_dir / "loss.png").is_file()
    # A second run over the same data reuses the tokenized cache.
    caplog.set_level("INFO", logger="lmadapt")
    sft.run(
        _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=1", f"train.output_dir={tmp_path / 'run2'}")
    )
    assert "cache hit" in caplog.text


def test_sft_tiny_t5_lowers_loss(tmp_path, tiny_t5_dir, write_reverse_data):
    data = write_reverse_data(tmp_path / "train.jsonl", 64)
    result = sft.run(_cfg(tmp_path, tiny_t5_dir, data, "train.max_steps=30"))
    losses = logged_losses(result.out_dir)
    assert losses[-1] < 0.7 * losses[0]
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(result.out_dir)
    assert reloaded.config.is_encoder_decoder


def test_lora_output_loads_with_plain_peft_and_gives_same_logits(
    tmp_path, tiny_llama_dir, write_reverse_data
):
    from peft import PeftModel

    data = write_reverse_data(tmp_path / "train.jsonl", 32)
    cfg = _cfg(
        tmp_path, tiny_llama_dir, data, "train.max_steps=5", "model.lora.enabled=true", "model.lora.r=4"
    )
    result = sft.run(cfg)
    assert (result.out_dir / "adapter_config.json").is_file()
    assert not (result.out_dir / "model.safetensors").exists()  # only the adapter is saved
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    loaded = PeftModel.from_pretrained(base, result.out_dir).eval()
    ids = torch.tensor([[104, 105, 106, 107, 108, 1]])
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(input_ids=ids).logits
    torch.testing.assert_close(got, expected)
    assert (got - untouched).abs().max() > 1e-4  # the adapter did change the model


def test_existing_run_dir_is_refused(tmp_path, tiny_llama_dir, write_reverse_data):
    data = write_reverse_data(tmp_path / "train.jsonl", 8)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(LmadaptError, match="already exists"):
        sft.run(_cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=1"))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_bad_data_is_one_line_error_with_exit_code_2(tmp_path, tiny_llama_dir, write_reverse_data, cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
        '{"messages": [{"role": "robot", "content": "x"}]}\n'
    )
    cfg = _cfg(tmp_path, tiny_llama_dir, bad, "train.max_steps=1")
    save_config(cfg, tmp_path / "cfg.yaml")
    proc = cli("sft", str(tmp_path / "cfg.yaml"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lmadapt: error:") and f"{bad}:2" in last and "role" in last


def test_killed_run_resumes_to_identical_weights(
    tmp_path, tiny_llama_dir, write_reverse_data, kill_after_checkpoint, resume_cli
):
    """SIGKILL mid-epoch after a checkpoint, resume, and end bit-identical to an uninterrupted run."""
    data = write_reverse_data(tmp_path / "train.jsonl", 48)
    common = [
        "train.max_steps=300",
        "train.save_every=10",
        "train.keep_last=2",
        "train.batch_size=4",
        "train.log_every=5",
    ]
    straight = _cfg(tmp_path, tiny_llama_dir, data, *common, f"train.output_dir={tmp_path / 'straight'}")
    sft.run(straight)

    resumed_dir = tmp_path / "resumed"
    cfg = _cfg(tmp_path, tiny_llama_dir, data, *common, f"train.output_dir={resumed_dir}")
    save_config(cfg, tmp_path / "cfg.yaml")
    # 48 examples / batch 4 = 12 steps per epoch: step 30 is mid-epoch.
    kill_after_checkpoint("sft", tmp_path / "cfg.yaml", resumed_dir, 30)
    assert not (resumed_dir / "model.safetensors").exists()
    resume_cli("sft", tmp_path / "cfg.yaml")
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(resumed_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one trajectory, no duplicates


@pytest.mark.parametrize("lora", [[], ["model.lora.enabled=true", "model.lora.r=4"]], ids=["full", "lora"])
def test_packed_step_equals_unpacked_step_with_the_same_trained_tokens(
    tmp_path, tiny_llama_dir, write_reverse_data, lora
):
    """One optimizer step over the whole data: packed rows vs one big padded batch."""
    data = write_reverse_data(tmp_path / "train.jsonl", 24)
    exact = [
        "train.max_steps=1",
        "train.batch_size=24",  # all examples, or all rows (at most 24)
        "train.lr=1e-2",
        "train.adam_eps=1.0",  # makes the update ~linear in the gradient, so gradient errors show
        "train.warmup_ratio=0.0",
        "train.schedule=constant",
        f"data.eval_sources.0.path={data}",
        *lora,
    ]
    results = {}
    for name, extra in (
        ("padded", ["data.batching=random"]),
        ("packed", ["data.batching=packed", "data.pack_length=128"]),
    ):
        cfg = _cfg(tmp_path, tiny_llama_dir, data, *exact, *extra, f"train.output_dir={tmp_path / name}")
        torch.manual_seed(0)  # sft.run draws LoRA's initial A matrices from the global generator
        results[name] = sft.run(cfg)
    padded, packed = results["padded"], results["packed"]
    assert packed.fit.state.trained_tokens == padded.fit.state.trained_tokens > 0
    for key in ("loss", "grad_norm", "eval_loss"):
        assert packed.fit.final_metrics[key] == pytest.approx(padded.fit.final_metrics[key], rel=1e-5)
    for name, p in padded.model.named_parameters():
        torch.testing.assert_close(packed.model.get_parameter(name), p, atol=1e-5, rtol=1e-5)
    ids = torch.tensor([[104, 105, 106, 107, 108, 1]])
    with torch.no_grad():
        moved = padded.model.eval()(input_ids=ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(input_ids=ids).logits
    assert (moved - untouched).abs().max() > 1e-3  # the step did change the model


@pytest.mark.parametrize(
    "batching", ["data.batching=packed", "data.batching=grouped", "data.batching=random"]
)
def test_resumed_run_equals_uninterrupted_one(tmp_path, tiny_llama_dir, write_reverse_data, batching, caplog):
    """Resume from a mid-run checkpoint (across an epoch boundary) lands on the same weights."""
    data = write_reverse_data(tmp_path / "train.jsonl", 24)
    common = ["train.max_steps=10", "train.save_every=4", "train.keep_last=5", "train.batch_size=2", batching]
    straight = sft.run(_cfg(tmp_path, tiny_llama_dir, data, *common))
    weights = {name: p.detach().clone() for name, p in straight.model.named_parameters()}
    # As if killed after the step-8 checkpoint: no final checkpoint, outputs or result.json.
    shutil.rmtree(straight.out_dir / "checkpoints" / "step-00000010")
    for path in [*straight.out_dir.glob("*.safetensors"), straight.out_dir / "result.json"]:
        path.unlink()
    caplog.set_level("INFO", logger="lmadapt")
    resumed = sft.run(_cfg(tmp_path, tiny_llama_dir, data, *common, "train.resume=true"))
    assert "step-00000008 (step 8 of 10)" in caplog.text and resumed.fit.state.step == 10
    for name, p in weights.items():
        assert torch.equal(resumed.model.get_parameter(name), p), name
