"""Preference objectives (DPO family, Bradley-Terry reward models) and the reference log-prob pass.

Batches come from `collate_pairs`: 2B rows, the B chosen sequences then the B rejected ones, so
both sides go through the model in one forward pass. An objective's unit is the pair: the engine
divides the summed per-pair losses by the number of pairs in the whole effective batch.

The reference model's log-probs never change during training, so by default they are computed in
one pass before training and cached on disk under a key of (reference weights, dtype, tokenised
data); the reference model then never sits in memory beside the policy. Online, the reference is
either the policy with its LoRA adapters disabled or a frozen model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from lmadapt.config import PreferenceLossConfig
from lmadapt.data.preference import TokenizedPair, collate_pairs
from lmadapt.eval.scoring import reply_log_probs
from lmadapt.losses import dpo as dpo_losses
from lmadapt.losses.lm import count_trained_tokens
from lmadapt.losses.reward import bradley_terry
from lmadapt.store import CorruptEntry, Entry, content_digest, load_or_build
from lmadapt.train.objectives import unwrap_ddp

log = logging.getLogger("lmadapt")

Batch = dict[str, torch.Tensor]
ReferenceFn = Callable[[torch.nn.Module, Batch], torch.Tensor]

# Bump when the way reference log-probs are computed or stored changes.
REFERENCE_FORMAT_VERSION = 2
REFERENCE_KIND = "reference-logps"
REFERENCE_FILE = "ref_logps.safetensors"


def adapters_off_reference(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Reference logps [2B] of a PEFT policy: the same model with its adapters disabled."""
    with torch.no_grad(), unwrap_ddp(model).disable_adapter():
        return reply_log_probs(model, batch)[0]


def frozen_reference(reference: torch.nn.Module) -> ReferenceFn:
    """Reference logps [2B] from a separate frozen model (full finetuning with online references)."""
    reference.eval().requires_grad_(False)

    def logps(_: torch.nn.Module, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return reply_log_probs(reference, batch)[0]

    return logps


class PairStats:
    """Running sums of per-pair rewards, reported as TRL names them (rewards/chosen, ...)."""

    def __init__(self) -> None:
        self.sums = torch.zeros(5, dtype=torch.float64)  # chosen, rejected, margin, correct, pairs

    def add(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        margin = chosen - rejected
        row = torch.stack([chosen.sum(), rejected.sum(), margin.sum(), (margin > 0).float().sum()])
        self.sums[:4] += row.double().cpu()
        self.sums[4] += chosen.numel()

    def pop(self, prefix: str = "") -> dict[str, float]:
        """Means since the last pop (summed over ranks when distributed); empty when nothing was added."""
        sums, self.sums = self.sums, torch.zeros_like(self.sums)
        if dist.is_available() and dist.is_initialized():
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            sums = sums.to(device)
            dist.all_reduce(sums)
            sums = sums.cpu()
        chosen, rejected, margin, correct, pairs = sums.tolist()
        if pairs == 0:
            return {}
        names = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
        return {
            prefix + n: v / pairs for n, v in zip(names, (chosen, rejected, margin, correct), strict=True)
        }


class _PairObjective:
    """Shared parts: the pair is the unit; train and eval statistics are kept apart."""

    unit = "pairs"

    def __init__(self) -> None:
        self.stats = {"train": PairStats(), "eval": PairStats()}

    def weight(self, batch: Batch) -> int:
        return batch["input_ids"].size(0) // 2

    def trained_tokens(self, batch: Batch) -> int:
        return count_trained_tokens(batch["labels"], shift=True)

    def _record(self, model: torch.nn.Module, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.stats["train" if model.training else "eval"].add(chosen.detach(), rejected.detach())

    def pop_metrics(self, split: str) -> dict[str, float]:
        """Reward statistics of `split` ("train" or "eval") since the last call; eval names get "eval_"."""
        return self.stats[split].pop("eval_" if split == "eval" else "")


class DirectPreference(_PairObjective):
    """DPO, conservative DPO, dpo_norm, IPO and SimPO on `collate_pairs` batches.

    reference=None reads cached reference logps from batch["ref_logps"] (SimPO needs none);
    otherwise it is called as reference(model, batch) -> logps [2B] each step.
    """

    def __init__(self, cfg: PreferenceLossConfig, reference: ReferenceFn | None = None):
        super().__init__()
        if cfg.loss not in ("dpo", "dpo_norm", "ipo", "simpo"):
            raise ValueError(f"unknown preference loss {cfg.loss!r}")
        self.cfg = cfg
        self.reference = reference

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        cfg = self.cfg
        logps, lengths = reply_log_probs(model, batch)
        policy_c, policy_r = logps.chunk(2)
        len_c, len_r = lengths.chunk(2)
        if cfg.loss == "simpo":
            out = dpo_losses.simpo(policy_c, policy_r, len_c, len_r, cfg.beta, cfg.gamma, cfg.label_smoothing)
        else:
            ref = batch["ref_logps"] if self.reference is None else self.reference(model, batch)
            ref_c, ref_r = ref.to(logps).chunk(2)
            if cfg.loss == "dpo":
                out = dpo_losses.dpo(policy_c, policy_r, ref_c, ref_r, cfg.beta, cfg.label_smoothing)
            elif cfg.loss == "dpo_norm":
                out = dpo_losses.dpo_norm(
                    policy_c, policy_r, ref_c, ref_r, len_c, len_r, cfg.beta, cfg.label_smoothing
                )
            else:
                out = dpo_losses.ipo(policy_c, policy_r, ref_c, ref_r, len_c, len_r, cfg.beta)
        self._record(model, out.chosen_rewards, out.rejected_rewards)
        return out.losses.sum()


class BradleyTerryReward(_PairObjective):
    """Reward-model training: a scalar-head model scores both sides; loss -log sigmoid(r_c - r_r)."""

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        chosen, rejected = scores.logits.squeeze(-1).float().chunk(2)
        self._record(model, chosen, rejected)
        return bradley_terry(chosen, rejected).sum()


# ---------------------------------------------------------------------------------------------
# The reference pass and its cache


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Summed reply logps of every pair under `model` in eval mode: [N, 2] float32 (chosen, rejected).

    Pairs are batched by length, which keeps padding (and so wasted compute) low.
    """
    was_training = model.training
    model.eval()
    order = sorted(
        range(len(pairs)), key=lambda i: len(pairs[i].chosen.input_ids) + len(pairs[i].rejected.input_ids)
    )
    out = torch.empty(len(pairs), 2, dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = collate_pairs([pairs[i] for i in index], pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logps = reply_log_probs(model, batch)[0].float().cpu()
        out[index] = torch.stack(logps.chunk(2), dim=1)
    model.train(was_training)
    return out


def reference_cache_key(model_path: str | Path, precision: str, data_key: str) -> str:
    """sha256 key of a reference pass: the reference weights' bytes, the precision they ran in
    (e.g. "torch.float32/no": weights dtype / autocast) and the tokenised data (whose key covers
    data files, tokenizer, template, max length, mixture and seed)."""
    description = {
        "version": REFERENCE_FORMAT_VERSION,
        "model": content_digest(model_path),
        "precision": precision,
        "data": data_key,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def load_or_compute_reference(
    cache_dir: str | Path, key: str, count: int, compute: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, bool]:
    """(reference logps [count, 2], hit): the intact cached entry for `key` (in the store, under
    <cache_dir>/reference/), else compute()'s result, stored."""

    def save(logps: torch.Tensor, directory: Path) -> dict[str, Any]:
        save_file({"ref_logps": logps.contiguous()}, str(directory / REFERENCE_FILE))
        return {"count": count}

    def load(entry: Entry) -> torch.Tensor:
        logps = load_file(str(entry.path / REFERENCE_FILE))["ref_logps"]
        if logps.shape != (count, 2):
            raise CorruptEntry(f"{entry.path}: holds {tuple(logps.shape)} log-probs, expected ({count}, 2)")
        return logps

    entry = Path(cache_dir) / "reference" / key
    return load_or_build(entry, REFERENCE_KIND, REFERENCE_FORMAT_VERSION, compute, save, load)
