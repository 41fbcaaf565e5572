"""Model and tokenizer directories: what loads, and the one-line error for each thing that does not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmadapt.config import ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import rouge_l
from lmadapt.models.load import adapter_base_path, load_model, load_tokenizer


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_directory_without_config_or_adapter(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(tmp_path / "empty")))
    assert "neither config.json" in _one_line(excinfo)


def test_config_without_safetensors_weights_names_pickles(chat_model_dir):
    for weights in chat_model_dir.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(chat_model_dir)))
    assert "no .safetensors weights" in _one_line(excinfo) and "pickled" in str(excinfo.value)


def test_a_directory_that_is_not_a_tokenizer(tmp_path, chat_model_dir):
    for path in [tmp_path, tmp_path / "missing"]:
        with pytest.raises(LmadaptError) as excinfo:
            load_tokenizer(path)
        assert str(path) in _one_line(excinfo)
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    shutil.copy(chat_model_dir / "config.json", weights_only)
    with pytest.raises(LmadaptError, match="not a tokenizer directory"):
        load_tokenizer(weights_only)
    with pytest.raises(LmadaptError, match="not a tokenizer directory") as excinfo:
        rouge_l("a b", ["a"], track="xlingual", xlingual_tokenizer=weights_only)  # --xlingual-tokenizer
    _one_line(excinfo)


@pytest.fixture
def adapter(chat_model_dir, train_sft):
    return train_sft(chat_model_dir, "model.lora.enabled=true", "train.max_steps=1").out_dir


def test_adapter_without_a_tokenizer_uses_its_bases(adapter, chat_model_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (adapter / name).unlink(missing_ok=True)
    assert len(load_tokenizer(adapter)) == len(load_tokenizer(chat_model_dir))


def test_relative_base_path_resolves_from_the_adapter_directory(adapter, chat_model_dir, monkeypatch):
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../base"  # as another tool might have stored it
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    monkeypatch.chdir("/")
    assert adapter_base_path(adapter) == chat_model_dir.resolve()


def test_adapter_with_missing_base_or_broken_weights(adapter):
    weights = adapter / "adapter_model.safetensors"
    state = weights.read_bytes()
    weights.write_bytes(state[: len(state) // 2])
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(adapter)))
    assert "cannot load the PEFT adapter" in _one_line(excinfo)
    weights.write_bytes(state)
    merged, _ = load_model(ModelConfig(path=str(adapter)))
    assert all(p.requires_grad for p in merged.parameters())  # full finetuning from an adapter trains

    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/base"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(adapter)))
    assert "/nowhere/base" in _one_line(excinfo) and "base_model_name_or_path" in str(excinfo.value)


def test_attn_implementation_reaches_the_model_and_kernels_agree(tiny_llama_dir):
    ids = torch.randint(3, 200, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    logits = {}
    for impl in ("eager", "sdpa"):
        model, _ = load_model(ModelConfig(path=str(tiny_llama_dir), attn_implementation=impl))
        assert model.config._attn_implementation == impl
        logits[impl] = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits["sdpa"][mask.bool()], logits["eager"][mask.bool()], atol=1e-5, rtol=0)
    default, _ = load_model(ModelConfig(path=str(tiny_llama_dir)))
    assert default.config._attn_implementation == "sdpa"  # "auto": transformers' own choice


@pytest.mark.skipif(torch.cuda.is_available(), reason="flash-attn may be installed on a GPU machine")
def test_flash_attention_without_its_package_is_a_one_line_error(tiny_llama_dir):
    with pytest.raises(LmadaptError, match="FlashAttention2") as err:
        load_model(ModelConfig(path=str(tiny_llama_dir), attn_implementation="flash_attention_2"))
    assert "\n" not in str(err.value)
