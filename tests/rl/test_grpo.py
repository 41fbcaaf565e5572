"""GRPOUpdate (rl/grpo.py) against TRL's GRPOTrainer on the same model and a fixed batch."""

from __future__ import annotations

import sys

import pytest
import torch
from support import require_trl
from transformers import AutoModelForCausalLM, ByT5Tokenizer

from lmadapt.config import GRPOLossConfig
from lmadapt.rl.experience import completion_logps
from lmadapt.rl.grpo import GRPOUpdate

TEMPERATURE = 0.7
MAX_COMPLETION = 6


def _fixed_batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """4 sequences: equal-length prompts (TRL passes no position ids, so left padding would differ),
    ragged completions, old log-probs near the model's own (some ratios clipped), a reference."""
    gen = torch.Generator().manual_seed(0)
    batch = {
        "prompt_ids": torch.randint(3, 250, (4, 3), generator=gen),
        "prompt_mask": torch.ones(4, 3, dtype=torch.long),
        "completion_ids": torch.randint(3, 250, (4, 5), generator=gen),
        "completion_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]]),
        "advantages": torch.tensor([1.5, -0.5, -1.0, 0.7]),
    }
    with torch.no_grad():
        logps = completion_logps(model, batch, TEMPERATURE)[0]
    batch["old_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=gen)
    batch["ref_logps"] = logps + 0.5 * torch.randn(logps.shape, generator=gen)
    return batch


def _trl_trainer(trl, model, loss_type: str, beta: float, tmp_path):
    from datasets import Dataset

    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=MAX_COMPLETION,
        loss_type=loss_type,
        beta=beta,
        epsilon=0.1,
        epsilon_high=0.28,
        temperature=TEMPERATURE,
        report_to=[],
        use_cpu=True,
        bf16=False,  # fp32 on CPU, as ours runs
        use_bias_correction_kl=False,  # the GRPO paper's KL term (TRL's default weights it by the ratio)
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "abc"}] * 4),
        processing_class=ByT5Tokenizer(),
    )
    trainer.current_gradient_accumulation_steps = 1  # set by its training loop; one micro-batch here
    return trainer


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_equal_trl_grpo_trainer(tmp_path, tiny_llama_dir, loss_type, beta):
    trl = require_trl()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # TRL loads its reference from the path
    batch = _fixed_batch(model)
    trainer = _trl_trainer(trl, model, loss_type, beta, tmp_path)
    mask = batch["completion_mask"]
    trl_inputs = {
        "prompt_ids": batch["prompt_ids"],
        "prompt_mask": batch["prompt_mask"],
        "completion_ids": batch["completion_ids"],
        "completion_mask": mask,
        "advantages": batch["advantages"],
        "old_per_token_logps": batch["old_logps"],
        "ref_per_token_logps": batch["ref_logps"],
        "num_items_in_batch": mask.sum().float(),
    }
    model.train()
    theirs = trainer.compute_loss(model, trl_inputs)
    theirs.backward()
    trl_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    cfg = GRPOLossConfig(loss_type=loss_type, beta=beta, epsilon_low=0.1, epsilon_high=0.28)
    reference = None if beta == 0 else lambda *_: pytest.fail("the reference is read from the batch")
    update = GRPOUpdate(cfg, TEMPERATURE, MAX_COMPLETION, micro_batch_size=4, reference=reference)
    ours = update.loss_sum(model, batch) / update.weight(batch)
    ours.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item()) > 1e-3
    metrics = update.pop_metrics("train")
    assert 0 < metrics["clip_fraction"] < 1  # the clipped branch is part of the comparison
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, trl_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_parity_tests_fail_without_trl_unless_skipping_is_allowed(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    monkeypatch.delenv("LMADAPT_ALLOW_SKIP_PARITY", raising=False)
    with pytest.raises(pytest.fail.Exception, match="trl is not installed"):
        require_trl()
    monkeypatch.setenv("LMADAPT_ALLOW_SKIP_PARITY", "1")
    with pytest.raises(pytest.skip.Exception):
        require_trl()
