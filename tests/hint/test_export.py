from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from lmadapt.config import HypernetworkConfig
from lmadapt.errors import ConfigError
from lmadapt.hint import ModuleCache, export_peft, load_hint_run
from lmadapt.hint.run import MODEL_DIR

LORA_ONLY = HypernetworkConfig(modules=["lora"], lora_rank=2, lora_targets=["q", "v", "o"], fusion=False)


def _logits(model, family):
    ids = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    extra = {"decoder_input_ids": torch.tensor([[0, 11, 12], [0, 13, 14]])} if family == "t5" else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=(ids != 0).long(), **extra).logits


def test_lora_modules_export_to_a_peft_adapter_that_plain_transformers_loads(save_run, family, tmp_path):
    run = load_hint_run(save_run(family, LORA_ONLY))
    modules = ModuleCache(run, persist=False).get("Definition: reverse the list.\n\n")
    with run.model.injection.active(modules):
        hinted = _logits(run.model.underlying, family)
    out = export_peft(run, modules, tmp_path / "adapter")

    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    plain = auto.from_pretrained(run.path / MODEL_DIR).eval()
    base = _logits(plain, family)
    adapted = _logits(PeftModel.from_pretrained(plain, out).eval(), family)
    torch.testing.assert_close(adapted, hinted, atol=1e-5, rtol=1e-5)
    assert (adapted - base).abs().max() > 1e-3  # the adapter is not a no-op
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 2
    assert len(config["target_modules"]) == 3 * len(run.model.layout.slots)


def test_runs_with_modules_peft_cannot_express_refuse_to_export(save_run, tmp_path):
    run = load_hint_run(save_run("llama", HypernetworkConfig(modules=["lora", "adapter"], adapter_size=2)))
    modules = ModuleCache(run, persist=False).get("Definition: x.\n\n")
    with pytest.raises(ConfigError, match="exports to PEFT"):
        export_peft(run, modules, tmp_path / "adapter")
