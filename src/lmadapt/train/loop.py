"""The training engine shared by every recipe.

`fit` runs AdamW with a warmup schedule, exact token-normalised gradient accumulation, gradient
clipping, a guard that skips steps with a non-finite loss or gradient (train.max_bad_steps in a row
stop the run), periodic evaluation, atomic checkpoints and exact resume.
Data order is a pure function of (seed, micro-batch index), so the step count alone (skipped steps
included) fixes the data position and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from transformers import PreTrainedModel

from lmadapt.config import TrainConfig
from lmadapt.errors import Interrupted, LmadaptError, Preempted
from lmadapt.faults import fault
from lmadapt.store import discard
from lmadapt.train.batching import BatchPlan, MicroBatchPlan
from lmadapt.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    sharded_state_dir,
)
from lmadapt.train.distributed import (
    ShardedStateIO,
    configure_engine,
    export_state_dict,
    is_sharded,
    sharded_state_io,
)
from lmadapt.train.monitor import Monitor, format_metrics, plot_loss_curve
from lmadapt.train.objectives import Objective
from lmadapt.train.preemption import StopRequest
from lmadapt.train.schedule import build_optimizer, build_scheduler

log = logging.getLogger("lmadapt")


def total_steps(cfg: TrainConfig, n_examples: int, world_size: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    micro = math.ceil(n_examples / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * micro / (cfg.grad_accum * world_size)))


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in backward for every Hugging Face model inside `model` (a PEFT or HINT
    wrapper holds one). Non-reentrant checkpointing: it needs no input that requires grad, so frozen
    embeddings under LoRA work, and it reruns forward hooks, which HINT's modules rely on."""
    hf = (m for m in model.modules() if isinstance(m, PreTrainedModel))
    found = [m for m in hf if m.supports_gradient_checkpointing]
    if not found:
        name = type(model).__name__
        raise LmadaptError(f"train.gradient_checkpointing: {name} holds no Hugging Face model supporting it")
    for module in found:
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


@dataclass
class FitResult:
    state: TrainerState
    total_steps: int
    final_metrics: dict[str, float]
    # FSDP/DeepSpeed: the full weights gathered for the Hugging Face export (rank 0; None otherwise).
    full_state_dict: dict[str, torch.Tensor] | None = None


def fit(
    model: torch.nn.Module,
    objective: Objective,
    train_examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    cfg: TrainConfig,
    out_dir: Path,
    accelerator: Accelerator,
    eval_examples: Sequence[Any] = (),
    plan: MicroBatchPlan | None = None,
    suite: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
    lr_of: Mapping[str, float] | None = None,
) -> FitResult:
    """Train `model` in place; evaluate on `eval_examples` every `cfg.eval_every` steps and at the end.
    `plan` picks each micro-batch's items (lmadapt.train.batching); by default a seeded shuffle.
    `suite(model, step)`, run on the main process at each evaluation, returns further metrics to log
    (the `train.eval_suite` evaluations). `lr_of`: peak learning rates of named parameters that differ
    from `cfg.lr` (`build_optimizer`).

    With `cfg.save_every` > 0 a checkpoint is written every that many steps and at the last step.
    SIGTERM or Ctrl-C checkpoints after the current step and ends with `Preempted` (see preemption.py);
    a second signal, or the grace period running out, ends it at once with `Interrupted`. Both name
    the step reached and the checkpoint to resume from.
    """
    if not train_examples:
        raise LmadaptError("no training examples left after loading and filtering the data")
    torch.manual_seed(cfg.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    steps = total_steps(cfg, len(train_examples), world)
    plan = plan or BatchPlan(len(train_examples), cfg.batch_size, cfg.seed)

    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.compile:
        # In place (the module keeps its type and parameter names, so checkpoints and exports are
        # unchanged); dynamic shapes because batch lengths vary and a recompile per length costs more.
        model.compile(dynamic=True)
    optimizer = build_optimizer(model, cfg, lr_of)
    scheduler = build_scheduler(optimizer, cfg, steps)
    configure_engine(accelerator, cfg.batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)

    ckpt_root = out_dir / "checkpoints"
    sharded_io = sharded_state_io(accelerator, model, optimizer)
    state = TrainerState()
    if cfg.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state = load_checkpoint(
            ckpt,
            accelerator.unwrap_model(model),
            optimizer,
            scheduler,
            rank,
            sharded_io.load if sharded_io else None,
        )
        log.info("resumed from %s (step %d of %d)", ckpt.path, state.step, steps)
    elif cfg.resume:
        log.info("no complete checkpoint under %s; starting from scratch", ckpt_root)

    main = accelerator.is_main_process
    monitor = Monitor(out_dir, steps, state.step, cfg.progress, enabled=main, unit=objective.unit)
    monitor.reset_rate(state.trained_tokens)
    start_time = time.perf_counter() - state.elapsed_s
    last_metrics: dict[str, float] = {}
    model.train()
    try:
        with StopRequest(cfg.stop_grace_s) as stop:
            while state.step < steps:
                first_micro = state.step * cfg.grad_accum * world
                batches = [
                    collate([train_examples[i] for i in plan.indices(first_micro + j * world + rank)])
                    for j in range(cfg.grad_accum)
                ]
                loss_total, units, tokens = accumulate_gradients(model, objective, batches, accelerator)
                loss_total = injected_fault(model, state.step + 1, loss_total)
                lr = scheduler.get_last_lr()[0]
                grad_norm, stepped = optimizer_step(
                    model, optimizer, scheduler, accelerator, cfg.max_grad_norm, loss_total
                )
                if stepped:
                    state.units += units
                    state.trained_tokens += tokens
                count_update(state, stepped, loss_total, cfg.max_bad_steps)
                state.step += 1
                state.elapsed_s = time.perf_counter() - start_time
                if state.bad_steps_in_row >= max(1, cfg.max_bad_steps):
                    monitor.close()
                    raise too_many_bad_steps(state, cfg.max_bad_steps, ckpt_root)
                lr = scheduler.get_last_lr()[0]
                last_metrics = {"loss": loss_total / max(units, 1), "lr": lr, "grad_norm": grad_norm}
                log_now = state.step % max(1, cfg.log_every) == 0 or state.step == steps
                if log_now:  # statistics of the objective's own (DPO rewards, accuracy) since the last log
                    last_metrics.update(objective.pop_metrics("train"))
                counts = {"trained_tokens": state.trained_tokens}
                if objective.unit != "tokens":
                    counts[objective.unit] = state.units
                if state.skipped_steps:
                    counts["skipped_steps"] = state.skipped_steps
                monitor.step(state.step, state.trained_tokens, {**last_metrics, **counts}, log_now)

                is_last = state.step == steps
                if (cfg.eval_every and state.step % cfg.eval_every == 0) or is_last:
                    eval_metrics = evaluate(
                        model, objective, eval_examples, collate, cfg.batch_size, accelerator
                    )
                    if suite is not None and main:
                        eval_metrics.update(suite(accelerator.unwrap_model(model), state.step))
                    if eval_metrics:
                        monitor.write({"step": state.step, **eval_metrics})
                        last_metrics.update(eval_metrics)
                        monitor.line(f"step {state.step}/{steps} eval: {format_metrics(eval_metrics)}")
                    model.train()
                    monitor.reset_rate(state.trained_tokens)
                stopping = _any_rank(accelerator, stop.requested)
                periodic = cfg.save_every and (state.step % cfg.save_every == 0 or is_last)
                if periodic or stopping:
                    checkpoint(
                        ckpt_root, model, optimizer, scheduler, state, cfg.keep_last, accelerator, sharded_io
                    )
                    monitor.reset_rate(state.trained_tokens)
                if stopping and not is_last:
                    accelerator.wait_for_everyone()
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
        plot_loss_curve(out_dir / "metrics.jsonl", out_dir / "loss.png", title=out_dir.name)
    return FitResult(state, steps, last_metrics, export_state_dict(accelerator, model))


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    max_grad_norm: float,
    loss_total: float,
) -> tuple[float, bool]:
    """Clip the accumulated gradients (max_grad_norm 0 = no clipping); when the loss and their norm are
    finite, step the optimizer and the schedule (otherwise both stay where they were); zero them.
    Returns (gradient norm, whether it stepped)."""
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
    # DeepSpeed clips and steps inside backward (its gradient_clipping) and may report no norm.
    grad_norm = float("nan") if norm is None else float(norm)
    # Both are already the same on every rank (the loss is summed over ranks, gradients are all-reduced
    # before the norm), so every rank skips the same steps with no extra collective.
    stepped = math.isfinite(loss_total) and (norm is None or math.isfinite(grad_norm))
    if stepped:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, stepped


def count_update(state: TrainerState, stepped: bool, loss_total: float, max_bad_steps: int) -> None:
    """Count an update `optimizer_step` applied or skipped (and warn about a skipped one)."""
    if stepped:
        state.bad_steps_in_row = 0
        return
    state.skipped_steps += 1
    state.bad_steps_in_row += 1
    log.warning(
        "step %d: non-finite %s, update skipped (%d in a row; train.max_bad_steps=%d)",
        state.step + 1,
        "loss" if not math.isfinite(loss_total) else "gradient norm",
        state.bad_steps_in_row,
        max_bad_steps,
    )


def too_many_bad_steps(state: TrainerState, max_bad_steps: int, ckpt_root: Path) -> LmadaptError:
    first_bad = state.step - state.bad_steps_in_row + 1
    return LmadaptError(
        f"steps {first_bad}-{state.step}: {state.bad_steps_in_row} consecutive non-finite "
        f"losses or gradients (train.max_bad_steps={max_bad_steps}), none applied; "
        f"{_resume_point(ckpt_root)}; lower train.lr or check the data"
    )


def _resume_point(ckpt_root: Path) -> str:
    newest = latest_checkpoint(ckpt_root)
    if newest is None:
        return "no checkpoint written yet (train.save_every); a rerun starts over"
    return f"newest checkpoint {newest.path}; rerun the same command with --resume to continue from it"


def injected_fault(model: torch.nn.Module, step: int, loss_total: float) -> float:
    """The fault tests/faults armed at `step` (lmadapt.faults), after its gradients are accumulated:
    "kill" ends the process, "nan-loss" makes the summed loss NaN, "inf-grad" one gradient entry +inf.
    Returns the loss. Unarmed it costs one dictionary test."""
    action = fault("step", step)
    if action == "inf-grad":
        grad = next(p.grad for p in model.parameters() if p.grad is not None)
        grad.view(-1)[0] = float("inf")
    return float("nan") if action == "nan-loss" else loss_total


def checkpoint(
    root: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainerState,
    keep_last: int,
    accelerator: Accelerator,
    sharded_io: ShardedStateIO | None,
) -> None:
    """Every rank calls this: each hands rank 0 its RNG state and, when sharded, writes its shard of
    the weights and optimizer state; rank 0 then stores the checkpoint entry."""
    if sharded_io is not None:
        shards = sharded_state_dir(root, state.step)
        if accelerator.is_main_process and shards.exists():  # left by a run killed at this step
            discard(shards)
        accelerator.wait_for_everyone()
        sharded_io.save(shards)
        accelerator.wait_for_everyone()
    rng_states = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_checkpoint(
            root, unwrapped, optimizer, scheduler, state, keep_last, rng_states, sharded_io is not None
        )


def accumulate_gradients(
    model: torch.nn.Module,
    objective: Objective,
    batches: list[dict[str, torch.Tensor]],
    accelerator: Accelerator,
) -> tuple[float, int, int]:
    """Backpropagate one effective batch made of micro-batches.

    Each micro-batch's summed loss is divided by the unit count (e.g. trained tokens) of the whole
    effective batch across all ranks, so the accumulated gradient equals that of one big batch.
    Returns (summed loss, units, trained tokens), each summed over ranks.
    """
    world = accelerator.num_processes
    local = [sum(objective.weight(b) for b in batches), sum(objective.trained_tokens(b) for b in batches)]
    global_units, global_tokens = (int(x) for x in _all_sum(accelerator, local))
    loss_total = 0.0
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    for j, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sync = j == len(batches) - 1
        # Backward inside no_sync too: FSDP2 reduce-scatters in backward unless told not to.
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            with accelerator.autocast():
                loss_sum = objective.loss_sum(model, batch)
            if deepspeed:  # its engine steps in backward at an accumulation boundary: the last micro-batch
                accelerator.gradient_state._set_sync_gradients(sync)
            # DDP averages gradients over ranks; scaling by `world` turns that into a global sum.
            accelerator.backward(loss_sum * world / max(global_units, 1))
        loss_total += float(loss_sum.detach())
    if deepspeed:
        accelerator.gradient_state._set_sync_gradients(True)
    return _all_sum(accelerator, [loss_total])[0], global_units, global_tokens


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    objective: Objective,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    batch_size: int,
    accelerator: Accelerator,
) -> dict[str, float]:
    """Mean eval loss per unit over `examples` (sharded over ranks) and the objective's eval statistics.
    Empty dict when there are no examples."""
    if not examples:
        return {}
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    total, weight = 0.0, 0
    # Under FSDP/ZeRO-3 every forward is a collective, so a rank whose shard is one batch short
    # runs a throw-away forward in that round instead of leaving the others waiting.
    rounds = math.ceil(len(examples) / (batch_size * world)) if is_sharded(accelerator) else 0
    starts = range(rank * batch_size, max(len(examples), rounds * batch_size * world), batch_size * world)
    for start in starts:
        batch = collate(list(examples[start : start + batch_size] or examples[:1]))
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            if start >= len(examples):
                _idle_forward(model, batch)
                continue
            weight += objective.weight(batch)
            total += float(objective.loss_sum(model, batch))
    total, weight = _all_sum(accelerator, [total, float(weight)])
    return {"eval_loss": total / max(weight, 1.0), **objective.pop_metrics("eval")}


def interrupted(step: int, steps: int, ckpt_root: Path) -> Interrupted:
    """The error a training loop stopped at once (second signal, Ctrl-C) raises: where it can resume."""
    return Interrupted(f"interrupted at step {step} of {steps}; {_resume_point(ckpt_root)}")


def _any_rank(accelerator: Accelerator, flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    return _all_sum(accelerator, [float(flag)])[0] > 0


def _idle_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """A forward pass whose result is discarded: it only takes part in the sharded engine's collectives."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = batch["input_ids"][:, :1]
    model(**inputs)


def _all_sum(accelerator: Accelerator, values: list[float]) -> list[float]:
    """`values` summed over ranks (one collective for all of them)."""
    if accelerator.num_processes == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").tolist()
