"""GRPO's update rule for the RL loop: group-relative advantages, the clipped surrogate with separate
low/high clipping, an optional k3 KL penalty to a frozen reference, and the grpo / dapo / dr_grpo loss
aggregations (losses/grpo.py holds the math).

The reference of a LoRA policy is the same model with its adapters disabled; of a fully finetuned one,
a frozen copy of the starting weights. Its log-probs are computed once per rollout batch, without
gradient, and only when `beta` > 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmadapt.config import GRPOLossConfig
from lmadapt.losses import grpo as grpo_losses
from lmadapt.rl.experience import Experience, completion_logps, micro_batches, score_experience
from lmadapt.rl.rollout import Rollouts
from lmadapt.train.objectives import unwrap_ddp

# (policy, micro-batches of the whole rollout batch in row order, completion width) -> ref logps [N, C]
ReferenceScorer = Callable[[torch.nn.Module, list[Experience], int], torch.Tensor]


def adapters_off_scorer(temperature: float) -> ReferenceScorer:
    """Reference log-probs of a PEFT policy: the same model with its adapters disabled."""

    def score(model: torch.nn.Module, batches: list[Experience], width: int) -> torch.Tensor:
        with unwrap_ddp(model).disable_adapter():
            return score_experience(model, batches, temperature, width, next(model.parameters()).device)

    return score


def frozen_scorer(reference: torch.nn.Module, temperature: float) -> ReferenceScorer:
    """Reference log-probs from a separate frozen model (full finetuning)."""
    reference.eval().requires_grad_(False)

    def score(_: torch.nn.Module, batches: list[Experience], width: int) -> torch.Tensor:
        return score_experience(reference, batches, temperature, width, next(reference.parameters()).device)

    return score


class GRPOUpdate:
    """The `PolicyUpdate` of GRPO (rl/loop.py). Unit: the sequence (grpo, dr_grpo) or the token (dapo)."""

    def __init__(
        self,
        cfg: GRPOLossConfig,
        temperature: float,
        max_completion_length: int,
        micro_batch_size: int,
        reference: ReferenceScorer | None = None,
    ):
        if cfg.beta > 0 and reference is None:
            raise ValueError("GRPO with beta > 0 needs a reference scorer")
        self.cfg, self.temperature = cfg, temperature
        self.max_completion_length, self.micro_batch_size = max_completion_length, micro_batch_size
        self.reference = reference if cfg.beta > 0 else None
        self.unit = "tokens" if cfg.loss_type == "dapo" else "sequences"
        self._sums = torch.zeros(5, dtype=torch.float64)  # kl, clipped, entropy, ratio, tokens
        self._zero_std_groups = 0

    def prepare(
        self, model: torch.nn.Module, experience: Experience, rewards: torch.Tensor, rollouts: Rollouts
    ) -> Experience:
        advantages, zero_std = grpo_losses.group_advantages(
            rewards, rollouts.group_size, self.cfg.scale_rewards
        )
        self._zero_std_groups += zero_std
        experience = {**experience, "advantages": advantages}
        if self.reference is not None:
            batches = micro_batches(experience, range(len(rollouts)), self.micro_batch_size)
            experience["ref_logps"] = self.reference(model, batches, rollouts.completion_ids.size(1))
        return experience

    def weight(self, batch: Experience) -> int:
        return grpo_losses.loss_units(batch["completion_mask"], self.cfg.loss_type)

    def trained_tokens(self, batch: Experience) -> int:
        return int(batch["completion_mask"].sum())

    def loss_sum(self, model: torch.nn.Module, batch: Experience) -> torch.Tensor:
        cfg = self.cfg
        mask = batch["completion_mask"].float()
        logps, entropy = completion_logps(model, batch, self.temperature, with_entropy=True)
        # One update per rollout batch: the policy has not moved since sampling, so old = current.
        old_logps = batch["old_logps"] if "old_logps" in batch else logps.detach()
        surrogate = grpo_losses.clipped_surrogate(
            logps, old_logps, batch["advantages"], cfg.epsilon_low, cfg.epsilon_high
        )
        per_token = surrogate.per_token_loss
        kl = torch.zeros_like(per_token)
        if self.reference is not None:
            kl = grpo_losses.k3_kl(logps, batch["ref_logps"])
            per_token = per_token + cfg.beta * kl
        loss = grpo_losses.aggregate_loss_sum(per_token, mask, cfg.loss_type, self.max_completion_length)
        assert entropy is not None
        stats = [kl.detach(), surrogate.clipped.float(), entropy, surrogate.ratio]
        self._sums[:4] += torch.stack([(s * mask).sum() for s in stats]).double().cpu()
        self._sums[4] += float(mask.sum())
        return loss

    def pop_metrics(self, split: str) -> dict[str, float]:
        """Token means since the last call (KL, clipped share, entropy, ratio) and zero-variance groups."""
        sums, self._sums = self._sums, torch.zeros_like(self._sums)
        zero_std, self._zero_std_groups = self._zero_std_groups, 0
        kl, clipped, entropy, ratio, tokens = sums.tolist()
        if tokens == 0:
            return {}
        metrics = {"clip_fraction": clipped / tokens, "entropy": entropy / tokens, "ratio": ratio / tokens}
        if self.reference is not None:
            metrics["kl"] = kl / tokens
        return {**metrics, "zero_std_groups": float(zero_std)}
