"""Model and tokenizer directories: what loads, and the one-line error for each thing that does not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmadapt.config import LoraConfig, ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import rouge_l
from lmadapt.models.load import adapter_base_path, apply_lora, load_model, load_tokenizer, load_with_template


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_directory_without_config_or_adapter(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(tmp_path / "empty")))
    assert "neither config.json" in _one_line(excinfo)


def _pickled(model_dir, name: str) -> None:
    """Replace the safetensors weights of `model_dir` by the same tensors pickled as `name`."""
    from safetensors.torch import load_file

    (weights,) = model_dir.glob("*.safetensors")
    torch.save(load_file(str(weights)), model_dir / name)
    weights.unlink()


def test_pickled_weights_are_refused_unless_allowed_and_the_message_says_why(chat_model_dir):
    expected = load_model(ModelConfig(path=str(chat_model_dir)))[0].state_dict()
    _pickled(chat_model_dir, "pytorch_model.bin")
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(chat_model_dir)))
    message = _one_line(excinfo)
    assert (
        "pytorch_model.bin" in message and "can run any code" in message and "model.allow_pickle" in message
    )
    loaded = load_model(ModelConfig(path=str(chat_model_dir), allow_pickle=True))[0].state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", ["model.ckpt", "weights.pt", "weights.pth", "state.pkl"])
def test_other_pickle_files_are_named_too(chat_model_dir, name):
    _pickled(chat_model_dir, name)
    with pytest.raises(LmadaptError, match=rf"only pickled ones \({name}\).*can run any code"):
        load_model(ModelConfig(path=str(chat_model_dir)))


def test_a_pickled_adapter_is_refused_unless_allowed(adapter, chat_model_dir):
    _pickled(adapter, "adapter_model.bin")
    with pytest.raises(LmadaptError, match=r"adapter_model\.bin.*can run any code"):
        load_model(ModelConfig(path=str(adapter)))
    assert load_model(ModelConfig(path=str(adapter), allow_pickle=True))[1] == "causal"


def test_code_shipped_with_a_model_never_runs_unless_asked(chat_model_dir, tmp_path):
    marker = tmp_path / "ran"
    (chat_model_dir / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((chat_model_dir / "config.json").read_text())
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (chat_model_dir / "config.json").write_text(
        json.dumps({**config, "model_type": "evil", "auto_map": auto_map})
    )
    with pytest.raises(LmadaptError) as excinfo:
        load_model(ModelConfig(path=str(chat_model_dir)))  # trust_remote_code defaults to False
    assert "ships its own Python code" in _one_line(excinfo) and "model.trust_remote_code=true" in str(
        excinfo.value
    )
    assert not marker.exists()
    with pytest.raises(LmadaptError, match="ships its own Python code"):
        load_model(ModelConfig(path=str(chat_model_dir), kind="causal"))  # the model class, not the config
    assert not marker.exists()


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


def test_lora_on_top_of_an_adapter_warns_that_plain_peft_cannot_rebuild_the_chain(adapter, caplog):
    """Plain PEFT loads an adapter whose base is an adapter onto the inner adapter's base and drops the
    inner one, so a LoRA run from an adapter says so and how to get a portable output."""
    loaded = load_with_template(ModelConfig(path=str(adapter)), "tulu", torch.device("cpu"))
    assert (
        loaded.kind == "causal" and not caplog.records
    )  # full finetuning from it: a merged model, no warning
    load_with_template(
        ModelConfig(path=str(adapter), lora=LoraConfig(enabled=True)), "tulu", torch.device("cpu")
    )
    assert any("lmadapt merge" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


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


def test_lora_adapters_start_from_the_seed(tiny_llama_dir):
    def lora_a(seed: int) -> list[torch.Tensor]:
        model, kind = load_model(ModelConfig(path=str(tiny_llama_dir)))
        wrapped = apply_lora(model, LoraConfig(enabled=True, r=2), kind, seed=seed)
        return [p.detach().clone() for n, p in wrapped.named_parameters() if "lora_A" in n]

    first, again, other = lora_a(3), lora_a(3), lora_a(4)
    assert first and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
