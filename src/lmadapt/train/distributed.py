"""Accelerator setup for one process or many, and refusal of launches that would silently not be many.

`accelerate launch` and `torchrun` describe a multi-process launch through the environment
(WORLD_SIZE, RANK, LOCAL_RANK, ...). Some launch commands start fewer processes than asked, or
processes that never join one process group: `accelerate launch --cpu --num_processes 2` runs a
single ordinary process, and a rank whose process group does not come up trains alone. Each such
process would write a complete, plausible-looking run. `check_launch` compares what the launch
asked for with what the accelerator actually joined and stops with one line when they disagree.

Under FSDP and DeepSpeed the parameters are split over the ranks: `sharded_state_io` checkpoints them
in the engine's own format and `export_state_dict` gathers the whole weights once, for the export.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmadapt.config import TrainConfig
from lmadapt.errors import LmadaptError

# Environment variables through which launchers (torchrun, accelerate, MPI) announce the world size.
WORLD_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARS = ("RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")

MULTI_PROCESS_HELP = (
    "on CPU use `torchrun --nproc_per_node N -m lmadapt ...` or `accelerate launch --multi_gpu "
    "--num_processes N -m lmadapt ...`; see 'Scaling out' in the README"
)


def setup_accelerator(cfg: TrainConfig) -> Accelerator:
    """The run's Accelerator: gloo on CPU, the launch's backend (DDP, FSDP2, DeepSpeed) on GPU.

    Raises LmadaptError when the launch asked for several processes and this one runs alone.
    """
    use_cpu = not torch.cuda.is_available()
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "no" if use_cpu else "bf16"
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision)
    check_launch(accelerator.num_processes, os.environ, _parent_command(), accelerator.distributed_type)
    if use_cpu:
        # Processes on one machine share its cores; each taking all of them oversubscribes the CPU.
        local = max(1, _int(os.environ.get("LOCAL_WORLD_SIZE")))
        torch.set_num_threads(cfg.num_threads or max(1, (os.cpu_count() or 1) // local))
    return accelerator


def check_launch(
    num_processes: int,
    env: Mapping[str, str],
    parent_command: Sequence[str] = (),
    distributed_type: DistributedType = DistributedType.NO,
) -> None:
    """Refuse a launch that asked for several processes when this one joined a group of `num_processes`,
    or for a sharding engine (FSDP, DeepSpeed) that is not the one running (`distributed_type`).

    env: the process environment; parent_command: the launcher's argv when known (accelerate
    launch with --cpu or without a distributed flag runs one plain process and exports nothing).
    """
    for engine, flag in (
        (DistributedType.FSDP, "ACCELERATE_USE_FSDP"),
        (DistributedType.DEEPSPEED, "ACCELERATE_USE_DEEPSPEED"),
    ):
        if env.get(flag, "").lower() in ("1", "true") and distributed_type != engine:
            raise LmadaptError(
                f"the launch asked for {engine.value} but this run would use {distributed_type.value} "
                "(accelerate falls back to plain data parallelism without GPUs); FSDP and DeepSpeed need CUDA"
            )
    if num_processes > 1:
        return
    asked = max((_int(env.get(var)) for var in WORLD_SIZE_VARS), default=0)
    rank = max((_int(env.get(var)) for var in RANK_VARS), default=0)
    if asked > 1 or rank > 0:
        announced = f"WORLD_SIZE={asked}" if asked > 1 else f"rank {rank}"
        raise LmadaptError(
            f"the launch announced {announced} but this process joined no process group and would "
            f"train alone, as an independent copy of the run; {MULTI_PROCESS_HELP}"
        )
    requested = _accelerate_num_processes(parent_command)
    if requested > 1:
        raise LmadaptError(
            f"`accelerate launch --num_processes {requested}` started one plain process (it does so with "
            f"--cpu or without --multi_gpu/--use_fsdp/--use_deepspeed); {MULTI_PROCESS_HELP}"
        )


def is_sharded(accelerator: Accelerator) -> bool:
    """True when parameters are split over ranks (FSDP, DeepSpeed): every rank must take part in saves."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def configure_engine(accelerator: Accelerator, micro_batch_size: int) -> None:
    """Settings an engine would otherwise read from a DataLoader, which lmadapt does not hand it:
    DeepSpeed sizes its buffers by the per-GPU micro-batch."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            micro_batch_size
        )


@dataclass
class ShardedStateIO:
    """Save/load of a sharded model's weights and optimizer state in the engine's own format (every
    rank reads and writes its part). FSDP: torch.distributed.checkpoint through accelerate;
    DeepSpeed: the engine's checkpoint. Both formats use pickle for metadata, unlike the rest of a
    checkpoint: there is no pickle-free format for a sharded optimizer state."""

    save: Callable[[Path], None]
    load: Callable[[Path], None]


def sharded_state_io(
    accelerator: Accelerator, model: torch.nn.Module, optimizer: Any
) -> ShardedStateIO | None:
    """How to checkpoint `model` and `optimizer` (both prepared) when they are sharded; None otherwise."""
    if accelerator.distributed_type == DistributedType.FSDP:
        from accelerate.utils import (
            load_fsdp_model,
            load_fsdp_optimizer,
            save_fsdp_model,
            save_fsdp_optimizer,
        )

        plugin = accelerator.state.fsdp_plugin

        def save_fsdp(directory: Path) -> None:
            save_fsdp_model(plugin, accelerator, model, str(directory))
            save_fsdp_optimizer(plugin, accelerator, optimizer, model, str(directory))

        def load_fsdp(directory: Path) -> None:
            load_fsdp_model(plugin, accelerator, model, str(directory))
            load_fsdp_optimizer(plugin, accelerator, optimizer, model, str(directory))

        return ShardedStateIO(save_fsdp, load_fsdp)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # `model` is the DeepSpeed engine; its checkpoint holds the partitioned weights and optimizer.
        return ShardedStateIO(
            lambda directory: model.save_checkpoint(str(directory), tag="state"),
            lambda directory: model.load_checkpoint(
                str(directory), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False
            ),
        )
    return None


def export_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full (unsharded) weights of a sharded `model` for the final Hugging Face export, on rank 0.

    Every rank must call it (the gather is a collective). None when the model is not sharded: its
    own parameters are already whole and `save_pretrained` reads them directly.
    """
    if not is_sharded(accelerator):
        return None
    state = accelerator.get_state_dict(model)  # ZeRO-3 needs zero3_save_16bit_model: true
    return state if accelerator.is_main_process else None


def _accelerate_num_processes(argv: Sequence[str]) -> int:
    """The --num_processes value of an `accelerate launch` command line, else 0."""
    launchers = ("accelerate", "accelerate-launch", "accelerate.commands.launch")
    if not any(Path(a).name in launchers for a in argv[:3]):
        return 0
    for i, arg in enumerate(argv):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(argv):
                return _int(argv[i + 1])
            if arg.startswith(flag + "="):
                return _int(arg.split("=", 1)[1])
    return 0


def _parent_command() -> list[str]:
    """argv of the process that started this one (Linux /proc), or [] where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
