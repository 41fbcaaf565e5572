"""The training engine shared by every recipe.

`fit` runs AdamW with a warmup schedule, exact token-normalised gradient accumulation, gradient
clipping, a non-finite-gradient guard, periodic evaluation, atomic checkpoints and exact resume.
Data order is a pure function of (seed, micro-batch index), so the optimizer step count alone
fixes the data position and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from lmadapt.config import TrainConfig
from lmadapt.errors import Interrupted, LmadaptError, Preempted
from lmadapt.train.batching import BatchPlan, MicroBatchPlan
from lmadapt.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from lmadapt.train.monitor import Monitor, format_metrics, plot_loss_curve
from lmadapt.train.objectives import Objective
from lmadapt.train.preemption import StopRequest
from lmadapt.train.schedule import build_optimizer, build_scheduler

log = logging.getLogger("lmadapt")

MAX_CONSECUTIVE_SKIPS = 10


def setup_accelerator(cfg: TrainConfig) -> Accelerator:
    use_cpu = not torch.cuda.is_available()
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "no" if use_cpu else "bf16"
    if use_cpu:
        torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    return Accelerator(cpu=use_cpu, mixed_precision=precision)


def total_steps(cfg: TrainConfig, n_examples: int, world_size: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    micro = math.ceil(n_examples / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * micro / (cfg.grad_accum * world_size)))


@dataclass
class FitResult:
    state: TrainerState
    total_steps: int
    final_metrics: dict[str, float]


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
) -> FitResult:
    """Train `model` in place; evaluate on `eval_examples` every `cfg.eval_every` steps and at the end.
    `plan` picks each micro-batch's items (lmadapt.train.batching); by default a seeded shuffle.

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

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    ckpt_root = out_dir / "checkpoints"
    state = TrainerState()
    if cfg.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
        log.info("resumed from %s (step %d of %d)", ckpt.path, state.step, steps)
    elif cfg.resume:
        log.info("no complete checkpoint under %s; starting from scratch", ckpt_root)

    main = accelerator.is_main_process
    monitor = Monitor(out_dir, steps, state.step, cfg.progress, enabled=main, unit=objective.unit)
    monitor.reset_rate(state.trained_tokens)
    consecutive_skips = 0
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
                max_norm = cfg.max_grad_norm or float("inf")
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
                if math.isfinite(grad_norm):
                    optimizer.step()
                    consecutive_skips = 0
                else:
                    state.skipped_steps += 1
                    consecutive_skips += 1
                    log.warning("step %d: non-finite gradient norm, update skipped", state.step + 1)
                    if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                        raise LmadaptError(
                            f"{consecutive_skips} consecutive non-finite gradients; lower train.lr"
                        )
                optimizer.zero_grad(set_to_none=True)
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                state.step += 1
                state.units += units
                state.trained_tokens += tokens
                state.elapsed_s = time.perf_counter() - start_time
                last_metrics = {"loss": loss_total / max(units, 1), "lr": lr, "grad_norm": grad_norm}
                log_now = state.step % max(1, cfg.log_every) == 0 or state.step == steps
                if log_now:  # statistics of the objective's own (DPO rewards, accuracy) since the last log
                    last_metrics.update(objective.pop_metrics("train"))
                counts = {"trained_tokens": state.trained_tokens}
                if objective.unit != "tokens":
                    counts[objective.unit] = state.units
                monitor.step(state.step, state.trained_tokens, {**last_metrics, **counts}, log_now)

                is_last = state.step == steps
                if (cfg.eval_every and state.step % cfg.eval_every == 0) or is_last:
                    eval_metrics = evaluate(
                        model, objective, eval_examples, collate, cfg.batch_size, accelerator
                    )
                    if eval_metrics:
                        monitor.write({"step": state.step, **eval_metrics})
                        last_metrics.update(eval_metrics)
                        monitor.line(f"step {state.step}/{steps} eval: {format_metrics(eval_metrics)}")
                    model.train()
                    monitor.reset_rate(state.trained_tokens)
                stopping = _any_rank(accelerator, stop.requested)
                periodic = cfg.save_every and (state.step % cfg.save_every == 0 or is_last)
                if (periodic or stopping) and main:
                    save_checkpoint(
                        ckpt_root, accelerator.unwrap_model(model), optimizer, scheduler, state, cfg.keep_last
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
        newest = latest_checkpoint(ckpt_root)
        where = (
            f"newest checkpoint {newest.path}; rerun the same command with --resume to continue from it"
            if newest is not None
            else "no checkpoint written yet (train.save_every); a rerun starts over"
        )
        raise Interrupted(f"interrupted at step {state.step} of {steps}; {where}") from None
    monitor.close()
    if main:
        plot_loss_curve(out_dir / "metrics.jsonl", out_dir / "loss.png", title=out_dir.name)
    return FitResult(state=state, total_steps=steps, final_metrics=last_metrics)


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
    for j, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sync = j == len(batches) - 1
        ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
        with ctx, accelerator.autocast():
            loss_sum = objective.loss_sum(model, batch)
        # DDP averages gradients over ranks; scaling by `world` turns that into a global sum.
        accelerator.backward(loss_sum * world / max(global_units, 1))
        loss_total += float(loss_sum.detach())
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
    for start in range(rank * batch_size, len(examples), batch_size * world):
        batch = collate(list(examples[start : start + batch_size]))
        weight += objective.weight(batch)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            total += float(objective.loss_sum(model, batch))
    total, weight = _all_sum(accelerator, [total, float(weight)])
    return {"eval_loss": total / max(weight, 1.0), **objective.pop_metrics("eval")}


def _any_rank(accelerator: Accelerator, flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    return _all_sum(accelerator, [float(flag)])[0] > 0


def _all_sum(accelerator: Accelerator, values: list[float]) -> list[float]:
    """`values` summed over ranks (one collective for all of them)."""
    if accelerator.num_processes == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").tolist()
