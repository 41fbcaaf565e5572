"""PPO's update rule for the RL loop, with a reward model and a value model (Tulu 2.5 / InstructGPT).

The loop trains one module, `PolicyAndValue`: the policy and a value model (a scalar-head model read at
every token, initialised from the reward model), under one optimizer and one loss,
policy loss + vf_coef * value loss, as TRL's PPO does. Per rollout batch, `prepare` computes without
gradient: the rollout policy's log-probs, the reference's (the policy with LoRA adapters disabled, or a
frozen copy), the value model's estimates, and the reward model's score of each completion (plus
`verifiable_coef` x the loop's verifiable reward, when there is one; replaced by the missing-EOS
penalty when the completion has no EOS). losses/ppo.py turns them into per-token rewards (score at the
last token, -kl_coef * k1 KL on every token), GAE advantages and returns. `loss_sum` is the clipped
policy loss plus the clipped value loss, summed over completion tokens: the loop divides by the
mini-batch's token count, so the loss is a token mean and accumulation is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmadapt.config import PPOLossConfig
from lmadapt.losses.grpo import clipped_surrogate
from lmadapt.losses.ppo import clipped_value_loss, explained_variance, ppo_targets, scores_with_eos_penalty
from lmadapt.models.score import token_scores
from lmadapt.rl.experience import Experience, completion_logps, gather, micro_batches, sequence_inputs
from lmadapt.rl.grpo import ReferenceScorer
from lmadapt.rl.rollout import Rollouts


class PolicyAndValue(torch.nn.Module):
    """What PPO trains and checkpoints: the policy (`policy.*` weights) and the value model (`value.*`)."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module):
        super().__init__()
        self.policy, self.value = policy, value


def completion_values(value_model: torch.nn.Module, batch: Experience) -> torch.Tensor:
    """The value model's estimate before each completion token: [B, C] float32.

    Aligned like the log-probs: the value of token t is read at the position that predicts it (the
    state in which the token is chosen), so position t's value estimates the return from token t on.
    """
    scores = token_scores(value_model, **sequence_inputs(batch))
    width = batch["completion_ids"].size(1)
    return scores[:, -width - 1 : -1].float()


def reward_model_scores(reward_model: torch.nn.Module, batch: Experience) -> torch.Tensor:
    """The reward model's score of each prompt + completion: [B] float32.

    The model's own forward, which scores the last non-pad token exactly as `lmadapt reward` trained
    it (the left padding of the prompts is skipped by the mask and the position ids).
    """
    return reward_model(**sequence_inputs(batch), use_cache=False).logits[:, 0].float()


# (the trained PolicyAndValue, a micro-batch) -> the reward model's score of each sequence [B]
RewardScorer = Callable[[torch.nn.Module, Experience], torch.Tensor]


def frozen_reward_model(reward_model: torch.nn.Module) -> RewardScorer:
    """Scores from a separate, frozen reward model."""
    reward_model.eval().requires_grad_(False)
    return lambda _, batch: reward_model_scores(reward_model, batch)


def value_adapters_off() -> RewardScorer:
    """Scores from the LoRA value model with its adapters disabled. The value model starts as the reward
    model and trains only adapters and a copy of the head (PEFT modules_to_save), so with them off it
    is the reward model, and no second copy is needed."""

    def score(model: torch.nn.Module, batch: Experience) -> torch.Tensor:
        with model.value.disable_adapter():
            return reward_model_scores(model.value, batch)

    return score


class PPOUpdate:
    """The `PolicyUpdate` of PPO (rl/loop.py) for a `PolicyAndValue`. Unit: the completion token."""

    unit = "tokens"

    def __init__(
        self,
        cfg: PPOLossConfig,
        temperature: float,
        micro_batch_size: int,
        reward_model: RewardScorer,
        reference: ReferenceScorer,
        verifiable: bool,
    ):
        self.cfg, self.temperature, self.micro_batch_size = cfg, temperature, micro_batch_size
        self.reward_model = reward_model
        self.reference, self.verifiable = reference, verifiable
        # Token sums since the last pop: policy loss, value loss, policy clipped, value clipped, entropy,
        # ratio, tokens.
        self._sums = torch.zeros(7, dtype=torch.float64)
        self._rollout_metrics: dict[str, float] = {}

    def prepare(
        self, model: torch.nn.Module, experience: Experience, rewards: torch.Tensor, rollouts: Rollouts
    ) -> Experience:
        cfg, n, width = self.cfg, len(rollouts), rollouts.completion_ids.size(1)
        policy, value = model.policy, model.value
        device = next(model.parameters()).device
        # Row order and micro-batches of the first update pass when it is the only one, so its ratio is 1.
        batches = micro_batches(experience, range(n), self.micro_batch_size)
        experience = dict(experience)
        if "old_logps" not in experience:  # the loop computes them when there are several update passes
            experience["old_logps"] = gather(
                lambda b: completion_logps(policy, b, self.temperature)[0], batches, width, device
            )
        ref_logps = self.reference(policy, batches, width)
        values = gather(lambda b: completion_values(value, b), batches, width, device)
        rm_scores = gather(lambda b: self.reward_model(model, b), batches, width, device)
        scores = rm_scores + cfg.verifiable_coef * rewards if self.verifiable else rm_scores
        scores = scores_with_eos_penalty(scores, rollouts.ended, cfg.missing_eos_penalty)
        mask = experience["completion_mask"]
        targets = ppo_targets(
            scores,
            experience["old_logps"],
            ref_logps,
            values,
            mask,
            cfg.kl_coef,
            cfg.gamma,
            cfg.lam,
            cfg.whiten_rewards,
            cfg.whiten_advantages,
        )
        experience.update(old_values=values, advantages=targets.advantages, returns=targets.returns)
        sequence_kl = targets.kl.sum(dim=1)
        self._rollout_metrics = {
            "score_mean": scores.mean().item(),
            "score_std": scores.std().item() if n > 1 else 0.0,
            "rm_score_mean": rm_scores.mean().item(),
            "kl": sequence_kl.mean().item(),  # per completion: the sum of its tokens' k1
            "non_score_reward": -cfg.kl_coef * sequence_kl.mean().item(),
            "value_mean": (values * mask).sum().item() / mask.sum().item(),
            "explained_variance": explained_variance(values, targets.returns, mask).item()
            if mask.sum() > 1
            else float("nan"),
        }
        return experience

    def weight(self, batch: Experience) -> int:
        return int(batch["completion_mask"].sum())

    def trained_tokens(self, batch: Experience) -> int:
        return int(batch["completion_mask"].sum())

    def loss_sum(self, model: torch.nn.Module, batch: Experience) -> torch.Tensor:
        cfg = self.cfg
        mask = batch["completion_mask"].float()
        logps, entropy = completion_logps(model.policy, batch, self.temperature, with_entropy=True)
        policy = clipped_surrogate(logps, batch["old_logps"], batch["advantages"], cfg.clip, cfg.clip)
        values = completion_values(model.value, batch)
        value_losses, value_clipped = clipped_value_loss(
            values, batch["old_values"], batch["returns"], cfg.value_clip
        )
        policy_sum, value_sum = (policy.per_token_loss * mask).sum(), (value_losses * mask).sum()
        assert entropy is not None
        stats = [policy.clipped.float(), value_clipped.float(), entropy, policy.ratio]
        sums = [policy_sum.detach(), value_sum.detach(), *((s * mask).sum() for s in stats), mask.sum()]
        self._sums += torch.stack(sums).double().cpu()
        return policy_sum + cfg.vf_coef * value_sum

    def pop_metrics(self, split: str) -> dict[str, float]:
        """The last rollout batch's scores, KL and value fit; token means of the update's losses, clipped
        shares, entropy and ratio since the last call."""
        sums, self._sums = self._sums, torch.zeros_like(self._sums)
        rollout, self._rollout_metrics = self._rollout_metrics, {}
        policy_loss, value_loss, clipped, value_clipped, entropy, ratio, tokens = sums.tolist()
        if tokens == 0:
            return rollout
        return {
            **rollout,
            "policy_loss": policy_loss / tokens,
            "value_loss": value_loss / tokens,
            "clip_fraction": clipped / tokens,
            "value_clip_fraction": value_clipped / tokens,
            "entropy": entropy / tokens,
            "ratio": ratio / tokens,
        }
