"""The online RL loop shared by the RL recipes: rollout -> reward -> update passes, with checkpoints.

One RL step: draw `rollout.prompts_per_step` prompts (a pure function of the step, like the SFT engine's
data order), sample G completions each with a seed derived from the step, score them with the reward
function, let the algorithm turn the batch into training data (`PolicyUpdate.prepare`: advantages,
reference log-probs, ...), then make `update.num_iterations` passes over it, each split into
`update.mini_batches` optimizer steps that accumulate micro-batches of train.batch_size sequences
exactly (the engine's `accumulate_gradients`: summed losses over the unit count of the whole
mini-batch). Checkpoints are written at RL-step boundaries, so `--resume` regenerates the very rollouts
the uninterrupted run drew and continues bit for bit. SIGTERM/Ctrl-C stop after the current step with
a checkpoint (train/preemption.py).

When the policy is updated more than once per rollout batch, the log-probs of the policy that sampled
it ("old_logps", [N, C]) are computed first in the same micro-batches the first pass uses; with a single
update the algorithm takes its own detached log-probs, so the ratio is exactly 1 either way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator

from lmadapt.config import RLTrainConfig, RolloutConfig, UpdateConfig
from lmadapt.errors import ConfigError, LmadaptError, Preempted
from lmadapt.rl.experience import Experience, from_rollouts, micro_batches, score_experience
from lmadapt.rl.prompts import RLPrompt, ground_truths
from lmadapt.rl.rewards import RewardFn, score_completions
from lmadapt.rl.rollout import RolloutBackend, Rollouts
from lmadapt.train.batching import BatchPlan
from lmadapt.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint
from lmadapt.train.loop import (
    FitResult,
    accumulate_gradients,
    checkpoint,
    count_update,
    injected_fault,
    interrupted,
    optimizer_step,
    too_many_bad_steps,
)
from lmadapt.train.monitor import Monitor, plot_curves
from lmadapt.train.preemption import StopRequest
from lmadapt.train.schedule import build_optimizer, build_scheduler

log = logging.getLogger("lmadapt")

# A completion "solves" its prompt when its reward reaches this (1.0: exact match, right number).
SOLVED = 1.0


class PolicyUpdate(Protocol):
    """An RL algorithm's update rule: what the loop needs besides the rollouts.

    It is a training objective (train/objectives.py: `unit`, `weight`, `trained_tokens`, `loss_sum`,
    `pop_metrics`) over experience micro-batches, plus `prepare`, which adds what its loss needs.
    """

    unit: str

    def prepare(
        self, model: torch.nn.Module, experience: Experience, rewards: torch.Tensor, rollouts: Rollouts
    ) -> Experience:
        """Add the algorithm's per-sequence / per-token fields to `experience` (rewards: [N] float32)."""
        ...

    def weight(self, batch: Experience) -> int: ...

    def trained_tokens(self, batch: Experience) -> int: ...

    def loss_sum(self, model: torch.nn.Module, batch: Experience) -> torch.Tensor: ...

    def pop_metrics(self, split: str) -> dict[str, float]: ...


@dataclass
class RLSettings:
    train: RLTrainConfig
    rollout: RolloutConfig
    update: UpdateConfig


def rl_total_steps(cfg: RLSettings, n_prompts: int) -> int:
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * n_prompts / cfg.rollout.prompts_per_step))


def validate_settings(cfg: RLSettings) -> None:
    """Refuse settings the loop cannot honour or would ignore."""
    rollout, update, train = cfg.rollout, cfg.update, cfg.train
    positive = {
        "rollout.prompts_per_step": rollout.prompts_per_step,
        "rollout.num_generations": rollout.num_generations,
        "rollout.max_new_tokens": rollout.max_new_tokens,
        "update.num_iterations": update.num_iterations,
        "update.mini_batches": update.mini_batches,
        "train.batch_size": train.batch_size,
    }
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if rollout.temperature <= 0 or not 0 < rollout.top_p <= 1:
        raise ConfigError("rollout.temperature must be > 0 and rollout.top_p in (0, 1]")
    if train.grad_accum != 1:
        raise ConfigError(
            "train.grad_accum is not used by RL recipes: micro-batches of train.batch_size sequences are "
            "accumulated over each mini-batch (update.mini_batches optimizer steps per pass)"
        )
    if train.gradient_checkpointing or train.compile:
        # The shared prompt pass hands its keys/values to the completions, which checkpointing
        # (it turns the cache off) and a compiled model (not measured here) do not support yet.
        raise ConfigError(
            "train.gradient_checkpointing and train.compile are not supported by RL recipes yet"
        )
    if (rollout.prompts_per_step * rollout.num_generations) < update.mini_batches:
        raise ConfigError("update.mini_batches exceeds the sequences of a rollout batch")


def check_one_process(accelerator: Accelerator) -> None:
    """Online RL runs in one process for now (a recipe checks this before it writes anything)."""
    if accelerator.num_processes > 1:
        raise LmadaptError("online RL recipes run in one process for now; launch without accelerate/torchrun")


def rl_fit(
    model: torch.nn.Module,
    algorithm: PolicyUpdate,
    prompts: Sequence[RLPrompt],
    reward: RewardFn | None,
    backend: RolloutBackend,
    cfg: RLSettings,
    out_dir: Path,
    accelerator: Accelerator,
    policy: torch.nn.Module | None = None,
) -> FitResult:
    """Train `model` in place with online RL; see the module docstring.

    `model` is what the optimizer trains and checkpoints hold: the policy itself, or a module holding
    the policy (`policy`) and more (PPO's value model). reward=None: the algorithm scores the completions
    itself in `prepare` (PPO's reward model); the rewards it receives are zeros.
    """
    validate_settings(cfg)
    check_one_process(accelerator)
    train = cfg.train
    torch.manual_seed(train.seed)
    steps = rl_total_steps(cfg, len(prompts))
    updates_per_step = cfg.update.num_iterations * cfg.update.mini_batches
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, steps * updates_per_step)
    model, optimizer = accelerator.prepare(model, optimizer)
    sampler = model if policy is None else policy
    plan = BatchPlan(len(prompts), cfg.rollout.prompts_per_step, train.seed)

    ckpt_root = out_dir / "checkpoints"
    state = TrainerState()
    if train.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
        log.info("resumed from %s (step %d of %d)", ckpt.path, state.step, steps)
    elif train.resume:
        log.info("no complete checkpoint under %s; starting from scratch", ckpt_root)

    main = accelerator.is_main_process
    monitor = Monitor(out_dir, steps, state.step, train.progress, enabled=main, unit=algorithm.unit)
    start_time = time.perf_counter() - state.elapsed_s
    last: dict[str, float] = {}
    model.train()
    try:
        with StopRequest(train.stop_grace_s) as stop:
            while state.step < steps:
                chosen = [prompts[i] for i in plan.indices(state.step)]
                started = time.perf_counter()
                rollouts = backend.generate(
                    sampler, [p.prompt_ids for p in chosen], cfg.rollout, rollout_seed(train.seed, state.step)
                )
                rewards = torch.zeros(len(rollouts))
                if reward is not None:
                    truths = ground_truths(chosen, rollouts.group_size)
                    rewards = torch.tensor(score_completions(reward, rollouts.texts, truths))
                rolled = time.perf_counter()
                experience = from_rollouts(rollouts)
                schedule = update_rows(len(rollouts), cfg.update)
                # Under the same autocast as the updates: the first pass then reproduces these log-probs.
                with accelerator.autocast():
                    if updates_per_step > 1:  # the first pass's micro-batches exactly, so its ratio is 1
                        first_pass = [
                            batch
                            for rows in schedule[: cfg.update.mini_batches]
                            for batch in micro_batches(experience, rows, train.batch_size)
                        ]
                        width = rollouts.completion_ids.size(1)
                        experience["old_logps"] = score_experience(
                            sampler, first_pass, cfg.rollout.temperature, width, accelerator.device
                        )
                    experience = algorithm.prepare(model, experience, rewards, rollouts)
                loss_sum, units, grad_norm = 0.0, 0, float("nan")
                for rows in schedule:
                    batches = micro_batches(experience, rows, train.batch_size)
                    loss, n_units, n_tokens = accumulate_gradients(model, algorithm, batches, accelerator)
                    loss = injected_fault(model, state.step + 1, loss)
                    grad_norm, stepped = optimizer_step(
                        model, optimizer, scheduler, accelerator, train.max_grad_norm, loss
                    )
                    count_update(state, stepped, loss, train.max_bad_steps)
                    loss_sum, units = loss_sum + loss, units + n_units
                    if stepped:
                        state.units += n_units
                        state.trained_tokens += n_tokens
                updated = time.perf_counter()
                state.step += 1
                state.elapsed_s = updated - start_time
                if state.bad_steps_in_row >= max(1, train.max_bad_steps):
                    monitor.close()
                    raise too_many_bad_steps(state, train.max_bad_steps, ckpt_root)
                last = {
                    "loss": loss_sum / max(units, 1),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    **rollout_metrics(rollouts, rewards if reward is not None else None),
                    **algorithm.pop_metrics("train"),
                    "rollout_s": rolled - started,
                    "update_s": updated - rolled,
                }
                if state.skipped_steps:
                    last["skipped_steps"] = state.skipped_steps
                log_now = state.step % max(1, train.log_every) == 0 or state.step == steps
                monitor.step(state.step, state.trained_tokens, last, log_now)
                is_last = state.step == steps
                periodic = train.save_every and (state.step % train.save_every == 0 or is_last)
                if periodic or stop.requested:
                    checkpoint(
                        ckpt_root, model, optimizer, scheduler, state, train.keep_last, accelerator, None
                    )
                    monitor.reset_rate(state.trained_tokens)
                if stop.requested and not is_last:
                    monitor.close()
                    raise Preempted(
                        f"stopped on request at step {state.step} of {steps}, checkpoint in {ckpt_root}; "
                        "rerun the same command with --resume to continue"
                    )
    except KeyboardInterrupt:
        monitor.close()
        raise interrupted(state.step, steps, ckpt_root) from None
    monitor.close()
    if main:
        plot_curves(
            out_dir / "metrics.jsonl",
            out_dir / "loss.png",
            ("loss", "reward_mean", "score_mean"),
            out_dir.name,
        )
    return FitResult(state, steps, last, None)


def rollout_seed(seed: int, step: int) -> int:
    """The sampling seed of RL step `step` (0-based): a resumed run draws the same completions."""
    return seed * 1_000_003 + step


def update_rows(n: int, cfg: UpdateConfig) -> list[range]:
    """The rows of each optimizer step of one rollout batch: `num_iterations` passes in row order, each
    cut into `mini_batches` near-equal consecutive slices."""
    bounds = [round(i * n / cfg.mini_batches) for i in range(cfg.mini_batches + 1)]
    one_pass = [range(bounds[i], bounds[i + 1]) for i in range(cfg.mini_batches)]
    return one_pass * cfg.num_iterations


def rollout_metrics(rollouts: Rollouts, rewards: torch.Tensor | None) -> dict[str, float]:
    """Completion length and the share cut at max_new_tokens (no EOS); with verifiable rewards, their
    mean/std and the share of completions that solve their prompt."""
    lengths = rollouts.completion_mask.sum(dim=1).float()
    metrics = {
        "completion_length": lengths.mean().item(),
        "truncated": (~rollouts.ended).float().mean().item(),
    }
    if rewards is not None:
        metrics["reward_mean"] = rewards.mean().item()
        metrics["reward_std"] = rewards.std().item() if rewards.numel() > 1 else 0.0
        metrics["accuracy"] = (rewards >= SOLVED).float().mean().item()
    return metrics
