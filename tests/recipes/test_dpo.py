from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import logged_losses, require_trl, tiny_run_config
from transformers import AutoModelForCausalLM, ByT5Tokenizer

from lmadapt.config import DataConfig, DPOConfig, SourceConfig, load_config, save_config
from lmadapt.data.pipeline import load_tokenized
from lmadapt.data.preference import collate_pairs, with_reference
from lmadapt.data.templates import get_template
from lmadapt.errors import ConfigError
from lmadapt.models.tiny import tiny_llama
from lmadapt.recipes import dpo
from lmadapt.train.preference import DirectPreference, compute_reference_logps

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(tmp_path: Path, model_dir: Path, data: Path, *extra: str) -> DPOConfig:
    return tiny_run_config(
        DPOConfig, tmp_path, model_dir, data, "train.lr=1e-3", "train.warmup_ratio=0", *extra
    )


def _last_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_dpo_learns_the_preference_saves_hf_model_and_reuses_cached_reference(
    tmp_path, tiny_llama_dir, caplog, write_pairs
):
    data = write_pairs(tmp_path / "pairs.jsonl", 32)
    cfg = _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=20", f"data.eval_sources.0.path={data}")
    result = dpo.run(cfg)
    losses = logged_losses(result.out_dir)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # the policy starts as its own reference
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.05
    final = _last_record(result.out_dir)
    assert final["eval_rewards/accuracies"] >= 0.9 and final["eval_rewards/margins"] > 0
    assert final["eval_loss"] < math.log(2)
    reloaded = AutoModelForCausalLM.from_pretrained(result.out_dir)
    for name, param in reloaded.named_parameters():
        torch.testing.assert_close(param, result.model.get_parameter(name))
    assert load_config(DPOConfig, result.out_dir / "config.yaml") == cfg

    caplog.set_level("INFO", logger="lmadapt")
    second = _cfg(
        tmp_path, tiny_llama_dir, data, "train.max_steps=1", f"train.output_dir={tmp_path / 'run2'}"
    )
    assert logged_losses(dpo.run(second).out_dir)[0] == pytest.approx(math.log(2), abs=1e-6)
    assert "reference-logps: cache hit" in caplog.text


@pytest.mark.parametrize("loss", ["dpo_norm", "ipo", "simpo"])
def test_every_loss_trains_through_the_recipe(tmp_path, tiny_llama_dir, loss, write_pairs):
    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    result = dpo.run(
        _cfg(tmp_path, tiny_llama_dir, data, "train.max_steps=4", f"dpo.loss={loss}", "dpo.beta=1")
    )
    losses = logged_losses(result.out_dir)
    assert len(losses) == 4 and losses[-1] < losses[0]
    if loss == "ipo":
        assert losses[0] == pytest.approx(0.25, abs=1e-5)  # (0 - 1/(2 beta))^2 when policy == reference


@pytest.mark.parametrize("reference", ["cached", "online"])
def test_lora_uses_the_base_model_with_adapters_off_as_reference(
    tmp_path, tiny_llama_dir, reference, write_pairs
):
    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    cfg = _cfg(
        tmp_path,
        tiny_llama_dir,
        data,
        "train.max_steps=6",
        "model.lora.enabled=true",
        "model.lora.r=4",
        f"dpo.reference={reference}",
    )
    result = dpo.run(cfg)
    losses = logged_losses(result.out_dir)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and losses[-1] < losses[0]
    assert (result.out_dir / "adapter_config.json").is_file()
    assert not (result.out_dir / "model.safetensors").exists()
    assert [type(m).__name__ for m in result.model.modules()].count("LlamaForCausalLM") == 1  # no second copy
    assert (tmp_path / "cache" / "reference").is_dir() == (reference == "cached")


def test_online_full_finetuning_matches_cached(tmp_path, tiny_llama_dir, write_pairs):
    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    runs = {}
    for reference in ("cached", "online"):
        cfg = _cfg(
            tmp_path,
            tiny_llama_dir,
            data,
            "train.max_steps=3",
            f"dpo.reference={reference}",
            f"train.output_dir={tmp_path / reference}",
        )
        runs[reference] = logged_losses(dpo.run(cfg).out_dir)
    assert runs["online"] == pytest.approx(runs["cached"], abs=1e-6)


def test_killed_run_resumes_to_identical_weights(
    tmp_path, tiny_llama_dir, kill_after_checkpoint, resume_cli, write_pairs
):
    data = write_pairs(tmp_path / "pairs.jsonl", 12)
    common = ["train.max_steps=60", "train.save_every=3", "train.batch_size=4", "train.grad_accum=2"]
    straight = dpo.run(_cfg(tmp_path, tiny_llama_dir, data, *common, f"train.output_dir={tmp_path / 'a'}"))
    run_dir = tmp_path / "b"
    save_config(
        _cfg(tmp_path, tiny_llama_dir, data, *common, f"train.output_dir={run_dir}"), tmp_path / "b.yaml"
    )
    kill_after_checkpoint("dpo", tmp_path / "b.yaml", run_dir, 3)
    assert not (run_dir / "model.safetensors").exists()
    resume_cli("dpo", tmp_path / "b.yaml")
    a, b = (
        load_file(str(straight.out_dir / "model.safetensors")),
        load_file(str(run_dir / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logged_losses(run_dir) == logged_losses(straight.out_dir)


def test_seq2seq_models_are_refused(tmp_path, tiny_t5_dir, write_pairs):
    data = write_pairs(tmp_path / "pairs.jsonl", 4)
    with pytest.raises(ConfigError, match="causal"):
        dpo.run(_cfg(tmp_path, tiny_t5_dir, data, "train.max_steps=1"))


def test_tulu2_recipe_has_the_paper_hyperparameters():
    cfg = load_config(DPOConfig, CONFIGS / "dpo_tulu2.yaml")
    assert (cfg.train.lr, cfg.train.warmup_ratio, cfg.train.epochs, cfg.dpo.beta) == (5e-7, 0.1, 3, 0.1)
    assert cfg.train.batch_size * cfg.train.grad_accum * 8 == 32 and cfg.data.max_length == 8192
    assert (cfg.train.weight_decay, cfg.train.schedule, cfg.dpo.loss) == (0.0, "linear", "dpo")


# ---------------------------------------------------------------------------------------------
# Parity with TRL's DPOTrainer


class _NoEosByteTokenizer(ByT5Tokenizer):
    """ByT5 that adds no EOS when called, so TRL's plain-text tokenisation yields exactly our ids."""

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return token_ids_0 + (token_ids_1 or [])


def test_step0_loss_gradients_and_first_steps_match_trl(tmp_path, tiny_llama_dir, write_pairs):
    trl = require_trl()
    from datasets import Dataset

    TRLConfig, DPOTrainer = trl.DPOConfig, trl.DPOTrainer

    n, lr, beta = 8, 1e-3, 0.1
    data = write_pairs(tmp_path / "pairs.jsonl", n)
    reference_dir = tmp_path / "reference"  # another model, so step-0 margins are not all zero
    tok = ByT5Tokenizer()
    torch.manual_seed(1)
    tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok).save_pretrained(
        reference_dir
    )
    template = get_template("tulu", tok)

    # Ours: one step-0 loss and gradient, then 5 steps of the recipe with the cached reference.
    data_cfg = DataConfig(max_length=1024, cache_dir=str(tmp_path / "c"))
    pairs, _ = load_tokenized([SourceConfig(str(data))], data_cfg, tok, template, "preference")
    reference = AutoModelForCausalLM.from_pretrained(reference_dir)
    ref_logps = compute_reference_logps(reference, pairs, tok.pad_token_id, n, torch.device("cpu"))
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    batch = collate_pairs(with_reference(pairs, ref_logps), tok.pad_token_id)
    loss = DirectPreference(load_config(DPOConfig).dpo).loss_sum(ours, batch) / n
    loss.backward()
    cfg = _cfg(
        tmp_path,
        tiny_llama_dir,
        data,
        "data.max_length=1024",
        "train.max_steps=5",
        f"train.batch_size={n}",
        f"train.lr={lr}",
        f"dpo.beta={beta}",
        f"dpo.reference_model={reference_dir}",
    )
    our_losses = logged_losses(dpo.run(cfg).out_dir)

    # TRL on the same text: prompts rendered by our template, replies as the template ends them.
    records = [json.loads(line) for line in data.read_text().splitlines()]
    rows = [
        {
            "prompt": template.generation_prompt([{"role": "user", "content": r["prompt"]}]),
            "chosen": r["chosen"] + tok.eos_token,
            "rejected": r["rejected"] + tok.eos_token,
        }
        for r in records
    ]
    trl_losses: list[float] = []

    class RecordingTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            value = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            trl_losses.append(float(value.detach()))
            return value

    args = TRLConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=n,  # the whole data set per step: batch order cannot differ
        max_steps=5,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=beta,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = RecordingTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(reference_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=_NoEosByteTokenizer(),
    )
    theirs = trainer.train_dataset
    trl_sequences = sorted(
        (r["prompt_ids"] + r["chosen_ids"], len(r["chosen_ids"]), r["prompt_ids"] + r["rejected_ids"])
        for r in theirs
    )
    our_sequences = sorted(
        (p.chosen.input_ids, sum(x >= 0 for x in p.chosen.labels), p.rejected.input_ids) for p in pairs
    )
    assert trl_sequences == our_sequences  # same token ids and the same trained spans

    trl_batch = trainer.data_collator([theirs[i] for i in range(n)])
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    trl_loss.backward()
    assert abs(trl_loss.item() - math.log(2)) > 1e-3
    assert trl_loss.item() == pytest.approx(loss.item(), abs=1e-5)
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(param.grad, ours.get_parameter(name).grad, atol=1e-5, rtol=0)
    trainer.model.zero_grad()
    trl_losses.clear()
    trainer.train()
    assert len(trl_losses) == len(our_losses) == 5
    assert our_losses == pytest.approx(trl_losses, abs=1e-4)
