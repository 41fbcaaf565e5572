"""A LoRA run's output is first-class: eval, DPO, reward and `lmadapt merge` take the adapter directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lmadapt.cli import main
from lmadapt.config import DPOConfig, ModelConfig, RewardConfig, load_config
from lmadapt.models.load import load_model
from lmadapt.recipes import dpo, reward
from lmadapt.recipes.evaluate import run_multiple_choice, run_rewards

from .conftest import CONVERSATIONS

IDS = torch.tensor([[2, 5, 9, 12, 7, 6, 10, 3]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


def _pairs(path: Path) -> Path:
    rows = [{"prompt": u, "chosen": r, "rejected": r.split()[0]} for u, r in CONVERSATIONS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _preference_overrides(tmp_path: Path, model: Path, data: Path, out: str, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"data.sources.0.path={data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / out}",
        "train.batch_size=2",
        "train.max_steps=2",
        "train.lr=1e-2",
        "train.warmup_ratio=0",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
        *extra,
    ]


@pytest.fixture
def adapter(tmp_path, chat_model_dir, train_sft, monkeypatch) -> Path:
    """A LoRA SFT run whose base was given as a relative path."""
    monkeypatch.chdir(tmp_path)
    out = train_sft("base", "model.lora.enabled=true", "train.max_steps=5").out_dir
    monkeypatch.chdir(out)  # a later user works from elsewhere
    return out


def test_adapter_records_its_base_as_an_absolute_path(adapter, chat_model_dir):
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(chat_model_dir.resolve())


def test_merge_writes_a_full_model_with_peft_logits_and_refuses_to_overwrite(adapter, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert main(["merge", "--model", str(adapter), "--out", str(merged)]) == 0
    reference = AutoPeftModelForCausalLM.from_pretrained(adapter)  # plain PEFT: base + adapter
    plain = AutoModelForCausalLM.from_pretrained(merged)
    torch.testing.assert_close(_logits(plain), _logits(reference))
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert not torch.allclose(_logits(base), _logits(reference), atol=1e-3)  # the adapter changed the model
    template = AutoTokenizer.from_pretrained(merged).chat_template
    assert template is not None and template == AutoTokenizer.from_pretrained(adapter).chat_template

    capsys.readouterr()
    assert main(["merge", "--model", str(adapter), "--out", str(merged)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main(["merge", "--model", str(adapter), "--out", str(merged), "--overwrite"]) == 0
    assert main(["merge", "--model", str(merged), "--out", str(tmp_path / "again")]) == 2  # not an adapter


def test_eval_on_the_adapter_equals_eval_on_the_merged_model(adapter, tmp_path):
    data = tmp_path / "mc.jsonl"
    questions = [{"question": u, "choices": [r, "red sun"], "answer": 0} for u, r in CONVERSATIONS]
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    assert main(["merge", "--model", str(adapter), "--out", str(tmp_path / "merged")]) == 0
    on_adapter = run_multiple_choice(data, tmp_path / "a", model=str(adapter))
    on_merged = run_multiple_choice(data, tmp_path / "m", model=str(tmp_path / "merged"))
    assert on_adapter["overall"] == on_merged["overall"]
    read = [(tmp_path / d / "predictions.jsonl").read_text() for d in ("a", "m")]
    assert read[0] == read[1]


def test_dpo_on_the_adapter_trains_from_base_plus_adapter(adapter, tmp_path):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    cfg = load_config(
        DPOConfig, None, _preference_overrides(tmp_path, adapter, pairs, "dpo", "model.lora.enabled=true")
    )
    out = dpo.run(cfg).out_dir
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the policy starts as its reference
    # The new adapter sits on the SFT adapter, which it names as its base: loading rebuilds the chain.
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(adapter)
    sft_merged = AutoPeftModelForCausalLM.from_pretrained(adapter).merge_and_unload()
    sft_logits = _logits(sft_merged)
    chain = PeftModel.from_pretrained(sft_merged, out)  # (injects the DPO adapter into sft_merged)
    loaded, _ = load_model(ModelConfig(path=str(out)))
    torch.testing.assert_close(_logits(loaded), _logits(chain))
    assert not torch.allclose(_logits(loaded), sft_logits, atol=1e-3)  # DPO moved it


def test_reward_model_from_the_adapter_and_its_lora_output_merge(adapter, tmp_path):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    cfg = load_config(
        RewardConfig, None, _preference_overrides(tmp_path, adapter, pairs, "rm", "model.lora.enabled=true")
    )
    out = reward.run(cfg).out_dir
    metrics = run_rewards(out, pairs, tmp_path / "rm-eval")
    assert metrics["pairs"] == len(CONVERSATIONS)
    merged = tmp_path / "rm-merged"
    assert main(["merge", "--model", str(out), "--out", str(merged)]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(merged)
    again = run_rewards(merged, pairs, tmp_path / "rm-eval-merged")
    scores = ("accuracy", "loss", "mean_chosen", "mean_rejected", "mean_margin", "pairs")
    assert [again[k] for k in scores] == pytest.approx([metrics[k] for k in scores])
    assert plain.config.num_labels == 1
