from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import TaskType, get_peft_model
from support import tiny_run_config
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lmadapt.config import DataConfig, RewardConfig, SourceConfig
from lmadapt.data.pipeline import load_tokenized
from lmadapt.data.preference import collate_pairs
from lmadapt.data.templates import get_template
from lmadapt.errors import LmadaptError
from lmadapt.recipes import evaluate, reward


def _write_pairs(path: Path, n: int, seed: int) -> Path:
    """The chosen reply reverses the user's word; the rejected one repeats it."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(3, 6)))
            chosen = [
                {"role": "user", "content": f"rev {word}"},
                {"role": "assistant", "content": word[::-1]},
            ]
            rejected = [chosen[0], {"role": "assistant", "content": word + "z"}]
            f.write(json.dumps({"prompt": f"rev {word}", "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def _cfg(tmp_path: Path, model_dir: Path, data: Path, *extra: str) -> RewardConfig:
    return tiny_run_config(
        RewardConfig, tmp_path, model_dir, data, "train.lr=3e-3", "train.warmup_ratio=0", *extra
    )


def _scores(model, tokenizer, record: dict) -> tuple[float, float]:
    """Scores of one pair computed with plain transformers from the saved model and chat template."""
    out = []
    for side in ("chosen", "rejected"):
        prompt = tokenizer.apply_chat_template(record[side][:-1], tokenize=False, add_generation_prompt=True)
        text = prompt + record[side][-1]["content"] + tokenizer.eos_token
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            out.append(model(input_ids=torch.tensor([ids])).logits.item())
    return out[0], out[1]


def test_reward_model_learns_pairs_and_eval_reports_pairwise_accuracy(tmp_path, tiny_llama_dir):
    train = _write_pairs(tmp_path / "train.jsonl", 48, seed=0)
    held_out = _write_pairs(tmp_path / "test.jsonl", 16, seed=1)
    result = reward.run(
        _cfg(tmp_path, tiny_llama_dir, train, "train.max_steps=15", f"data.eval_sources.0.path={held_out}")
    )
    records = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert records[-1]["eval_rewards/accuracies"] >= 0.9

    metrics = evaluate.run_rewards(result.out_dir, held_out, tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    # The saved output is a plain transformers reward model: recompute every score without lmadapt.
    model = AutoModelForSequenceClassification.from_pretrained(result.out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    scores = [_scores(model, tokenizer, json.loads(line)) for line in held_out.read_text().splitlines()]
    assert metrics["pairs"] == 16
    assert metrics["accuracy"] == pytest.approx(sum(c > r for c, r in scores) / 16)
    assert metrics["mean_margin"] == pytest.approx(sum(c - r for c, r in scores) / 16, abs=1e-4)
    expected_loss = sum(math.log1p(math.exp(r - c)) for c, r in scores) / 16
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-4)
    assert metrics["accuracy"] >= 0.9


def test_lora_reward_model_saves_an_adapter_that_eval_loads(tmp_path, tiny_llama_dir):
    train = _write_pairs(tmp_path / "train.jsonl", 16, seed=0)
    cfg = _cfg(
        tmp_path, tiny_llama_dir, train, "train.max_steps=3", "model.lora.enabled=true", "model.lora.r=4"
    )
    result = reward.run(cfg)
    assert (result.out_dir / "adapter_config.json").is_file()
    metrics = evaluate.run_rewards(result.out_dir, train, tmp_path / "eval", batch_size=5)
    head = dict(result.model.named_parameters())
    assert any("score" in name and param.requires_grad for name, param in head.items())  # the head trains
    result.model.eval()
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    data_cfg = DataConfig(max_length=1024, cache_dir=str(tmp_path / "c"))
    template = get_template("tulu", tokenizer)
    pairs, _ = load_tokenized([SourceConfig(str(train))], data_cfg, tokenizer, template, "preference")
    with torch.no_grad():
        scores = result.model(**{k: v for k, v in collate_pairs(pairs, 0).items() if k != "labels"}).logits
    chosen, rejected = scores.squeeze(-1).chunk(2)
    assert metrics["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())


def test_eval_rewards_refuses_a_model_without_a_trained_score_head(tmp_path, tiny_llama_dir):
    """A plain LM (or an adapter trained without the head) would be scored by a random head."""
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 4, seed=0)
    with pytest.raises(LmadaptError, match=r"not a trained reward model: score.weight not saved in it"):
        evaluate.run_rewards(tiny_llama_dir, pairs, tmp_path / "eval", template="tulu")

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    adapter = tmp_path / "causal-adapter"
    peft_cfg = PeftLoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=["q_proj"])
    get_peft_model(base, peft_cfg).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(adapter)
    with pytest.raises(LmadaptError, match=r"not a trained reward model: score.weight not saved"):
        evaluate.run_rewards(adapter, pairs, tmp_path / "eval", template="tulu")
    assert not (tmp_path / "eval").exists()
