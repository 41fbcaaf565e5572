from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from support import byte_llama
from transformers import LlamaForSequenceClassification

from lmadapt.config import PPOLossConfig
from lmadapt.losses.ppo import ppo_targets
from lmadapt.models.score import token_scores
from lmadapt.rl.experience import from_rollouts, micro_batches
from lmadapt.rl.grpo import frozen_scorer
from lmadapt.rl.ppo import (
    PolicyAndValue,
    PPOUpdate,
    frozen_reward_model,
    reward_model_scores,
    value_adapters_off,
)
from lmadapt.rl.rollout import Rollouts

PROMPTS = [[5, 9, 14], [7, 20, 33, 8, 11]]
COMPLETIONS = [[40, 41, 1], [50, 60, 70, 80]]  # the first ends with EOS (1), the second was cut


def _scalar_model(seed: int) -> LlamaForSequenceClassification:
    config = byte_llama().config
    config.num_labels, config.pad_token_id = 1, 0
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config)


def _rollouts() -> Rollouts:
    """Two prompts (left-padded) and their completions (right-padded), pad id 0."""
    p, c = max(map(len, PROMPTS)), max(map(len, COMPLETIONS))
    prompt_ids, prompt_mask = torch.zeros(2, p, dtype=torch.long), torch.zeros(2, p, dtype=torch.long)
    completion_ids, completion_mask = torch.zeros(2, c, dtype=torch.long), torch.zeros(2, c, dtype=torch.long)
    for i, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        prompt_ids[i, p - len(prompt) :], prompt_mask[i, p - len(prompt) :] = torch.tensor(prompt), 1
        completion_ids[i, : len(completion)], completion_mask[i, : len(completion)] = (
            torch.tensor(completion),
            1,
        )
    ended = torch.tensor([True, False])
    return Rollouts(
        prompt_ids, prompt_mask, completion_ids, completion_mask, torch.zeros(2, c), ended, ["", ""], 1
    )


def _perturb(model: torch.nn.Module, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def _row(i: int) -> torch.Tensor:
    return torch.tensor([PROMPTS[i] + COMPLETIONS[i]])


def _logps_by_row(model: torch.nn.Module, i: int) -> torch.Tensor:
    """Log-probs of completion i's tokens from one unpadded forward pass. [len]"""
    logits = model(input_ids=_row(i)).logits[0].float()
    n = len(COMPLETIONS[i])
    return logits[-n - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(COMPLETIONS[i])[:, None])[:, 0]


def _values_by_row(value: torch.nn.Module, i: int) -> torch.Tensor:
    ids = _row(i)
    n = len(COMPLETIONS[i])
    return token_scores(value, ids, torch.ones_like(ids))[0, -n - 1 : -1]


def _setup(cfg: PPOLossConfig):
    policy, value, reward_model = byte_llama(seed=1), _scalar_model(2), _scalar_model(3)
    reference = copy.deepcopy(policy)
    _perturb(reference, 0.02, seed=4)  # so the KL is not zero
    model = PolicyAndValue(policy, value)
    scorer = frozen_reward_model(reward_model)
    update = PPOUpdate(cfg, 1.0, 1, scorer, frozen_scorer(reference, 1.0), verifiable=True)
    return model, update, reference, reward_model


def test_prepare_scores_each_row_as_an_unpadded_forward_would():
    cfg = PPOLossConfig(kl_coef=0.1, gamma=0.9, lam=0.8, missing_eos_penalty=-3.0, verifiable_coef=0.5)
    model, update, reference, reward_model = _setup(cfg)
    rollouts = _rollouts()
    verifiable = torch.tensor([1.0, 1.0])
    with torch.no_grad():
        experience = update.prepare(model, from_rollouts(rollouts), verifiable, rollouts)
        old = [_logps_by_row(model.policy, i) for i in range(2)]
        ref = [_logps_by_row(reference, i) for i in range(2)]
        values = [_values_by_row(model.value, i) for i in range(2)]
        rm_score = reward_model(input_ids=_row(0)).logits[0, 0]
    mask = rollouts.completion_mask
    for i in range(2):
        n = len(COMPLETIONS[i])
        torch.testing.assert_close(experience["old_logps"][i, :n], old[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(experience["old_values"][i, :n], values[i], rtol=0, atol=1e-5)
    # Row 0 ended with EOS: reward model + 0.5 x verifiable; row 1 was cut: the penalty alone.
    scores = torch.stack([rm_score + 0.5, torch.tensor(-3.0)])

    def padded(rows):
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)

    expected = ppo_targets(scores, padded(old), padded(ref), padded(values), mask, 0.1, 0.9, 0.8, False, True)
    torch.testing.assert_close(experience["advantages"], expected.advantages, rtol=0, atol=1e-4)
    torch.testing.assert_close(experience["returns"], expected.returns, rtol=0, atol=1e-5)
    metrics = update.pop_metrics("train")
    assert metrics["score_mean"] == pytest.approx(scores.mean().item(), abs=1e-5)
    assert metrics["kl"] == pytest.approx(
        sum((o - r).sum().item() for o, r in zip(old, ref, strict=True)) / 2, abs=1e-5
    )


def test_loss_and_gradients_match_a_per_token_loop():
    cfg = PPOLossConfig(kl_coef=0.1, clip=0.2, value_clip=0.05, vf_coef=0.3)
    model, update, _, _ = _setup(cfg)
    rollouts = _rollouts()
    with torch.no_grad():  # large returns of both signs, so some values move towards them past the clip
        experience = update.prepare(model, from_rollouts(rollouts), torch.tensor([4.0, -4.0]), rollouts)
    update.pop_metrics("train")
    # A later update pass: ratios away from 1, values moved.
    _perturb(model.policy, 0.3, seed=5)
    _perturb(model.value, 0.1, seed=6)
    twin = copy.deepcopy(model)

    loss = update.loss_sum(model, experience)
    loss.backward()

    expected = torch.zeros(())
    clipped = value_clipped = 0
    for i in range(2):
        logps, values = _logps_by_row(twin.policy, i), _values_by_row(twin.value, i)
        for t in range(len(COMPLETIONS[i])):
            ratio = torch.exp(logps[t] - experience["old_logps"][i, t])
            a = experience["advantages"][i, t]
            bounded = torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip)
            expected = expected + torch.maximum(-a * ratio, -a * bounded)
            clipped += int(-a * bounded > -a * ratio)
            old_v, ret = experience["old_values"][i, t], experience["returns"][i, t]
            v_clipped = old_v + torch.clamp(values[t] - old_v, -cfg.value_clip, cfg.value_clip)
            unclipped_loss, clipped_loss = (values[t] - ret) ** 2, (v_clipped - ret) ** 2
            expected = expected + cfg.vf_coef * 0.5 * torch.maximum(unclipped_loss, clipped_loss)
            value_clipped += int(clipped_loss > unclipped_loss)
    expected.backward()
    assert clipped > 0 and value_clipped > 0  # both clipped branches are exercised
    # The update scores both rows in one padded batch, sharing each prompt's pass through the KV cache; the
    # loop above runs them unpadded. Float32 rounding of the two orders: ~2e-6 on a loss of ~23 (float32's
    # spacing there), up to ~4e-6 on gradient entries of order 1.
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    metrics = update.pop_metrics("train")
    assert metrics["clip_fraction"] == pytest.approx(clipped / 7)
    assert metrics["value_clip_fraction"] == pytest.approx(value_clipped / 7)


def test_first_update_has_ratio_one_and_nothing_clipped():
    model, update, _, _ = _setup(PPOLossConfig())
    rollouts = _rollouts()
    with torch.no_grad():
        experience = update.prepare(model, from_rollouts(rollouts), torch.zeros(2), rollouts)
    for batch in micro_batches(experience, range(2), 1):  # the micro-batches `prepare` scored, as the loop
        update.loss_sum(model, batch).backward()
    metrics = update.pop_metrics("train")
    assert (
        metrics["ratio"] == 1.0 and metrics["clip_fraction"] == 0.0 and metrics["value_clip_fraction"] == 0.0
    )


def test_the_lora_value_model_with_adapters_off_scores_as_the_reward_model():
    reward_model = _scalar_model(3).eval()
    peft_cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules="all-linear", init_lora_weights=False
    )
    value = get_peft_model(copy.deepcopy(reward_model), peft_cfg)
    _perturb(value.base_model.model.score.modules_to_save["default"], 0.5, seed=7)  # the head trained too
    batch = from_rollouts(_rollouts())
    model = PolicyAndValue(byte_llama(), value)
    with torch.no_grad():
        expected = reward_model_scores(reward_model, batch)
        torch.testing.assert_close(value_adapters_off()(model, batch), expected)
        assert not torch.allclose(reward_model_scores(value, batch), expected, atol=1e-3)
