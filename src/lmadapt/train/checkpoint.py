"""Training checkpoints for exact resume, stored without pickles as entries of lmadapt.store.

A checkpoint is a store entry `checkpoints/step-00000042/` holding the trainable weights, the optimizer
state (tensors in safetensors, the rest in JSON), the scheduler and trainer state, and every RNG state of
every rank (each rank draws its own dropout masks). Under FSDP/DeepSpeed the weights and optimizer state
are sharded: every rank writes its part, in the engine's own format, into the sibling directory
`step-00000042.sharded/` before the entry is stored, and the entry names it.
The store stages, fsyncs, checksums and renames it into place, so a crash mid-write never leaves an
entry that verifies; resuming takes the newest checkpoint that verifies and skips damaged ones with a
warning.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmadapt.errors import LmadaptError
from lmadapt.faults import fault
from lmadapt.store import MANIFEST, CorruptEntry, Entry, discard, open_entry, write_entry

log = logging.getLogger("lmadapt")

CHECKPOINT_KIND = "checkpoint"
CHECKPOINT_VERSION = 2  # 2: one RNG state per rank; optional sharded engine state beside the entry
RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # (tensors, JSON metadata) of one process
SHARDED_SUFFIX = ".sharded"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    step: int = 0  # steps taken (skipped ones included); also fixes the data position
    trained_tokens: int = 0  # tokens the loss was computed on
    units: int = 0  # summed objective weight (trained tokens for LM losses, pairs for preferences)
    skipped_steps: int = 0  # steps with a non-finite loss or gradient: no update
    bad_steps_in_row: int = 0  # of them, the ones just before `step` (train.max_bad_steps aborts)
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainerState,
    keep_last: int,
    rng_states: Sequence[RngState] = (),
    sharded: bool = False,
) -> Entry:
    """Store everything needed to resume at `state.step` as `root/step-NNNNNNNN`, then prune old ones.

    rng_states: every rank's `rng_state()`, in rank order (default: this process's own).
    sharded: the weights and optimizer state are already in `sharded_state_dir(root, state.step)`,
    written there by every rank; the entry then holds everything else.
    """

    def write_files(directory: Path) -> dict[str, Any]:
        if not sharded:
            save_file(trainable_state(model), str(directory / "trainable.safetensors"))
            fault("checkpoint/between-files")
            opt_tensors, opt_meta = _split_optimizer_state(optimizer.state_dict())
            save_file(opt_tensors, str(directory / "optimizer.safetensors"))
            _write_json(directory / "optimizer.json", opt_meta)
        _write_json(directory / "scheduler.json", scheduler.state_dict())
        _write_json(directory / "trainer_state.json", asdict(state))
        states = list(rng_states) or [rng_state()]
        for rank, (rng_tensors, rng_meta) in enumerate(states):
            save_file(rng_tensors, str(directory / f"rng-rank{rank}.safetensors"))
            _write_json(directory / f"rng-rank{rank}.json", rng_meta)
        return {"step": state.step, "ranks": len(states), "sharded": sharded}

    # replace: a re-run of the same step after a resume (the old one may be the damaged one skipped)
    entry = write_entry(
        root / f"step-{state.step:08d}", CHECKPOINT_KIND, CHECKPOINT_VERSION, write_files, replace=True
    )
    prune_checkpoints(root, keep_last)
    return entry


def open_checkpoint(path: Path) -> Entry:
    """The checkpoint at `path`, verified against its manifest; CorruptEntry when it is not intact."""
    return open_entry(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)


def latest_checkpoint(root: Path) -> Entry | None:
    """Newest checkpoint under `root` that verifies (None if none); damaged newer ones are skipped, warned."""
    for path in reversed(_step_dirs(root)):
        try:
            return open_checkpoint(path)
        except CorruptEntry as e:
            log.warning("skipping checkpoint %s for the previous one: %s", path.name, e)
    return None


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete (manifest-bearing) checkpoints; remove older ones."""
    complete = [p for p in _step_dirs(root) if (p / MANIFEST).is_file()]
    for old in complete[: max(0, len(complete) - max(1, keep_last))]:
        discard(old)
        if (shards := old.with_name(old.name + SHARDED_SUFFIX)).exists():
            discard(shards)


def sharded_state_dir(root: Path, step: int) -> Path:
    """Where the ranks of a sharded (FSDP/DeepSpeed) run write their part of checkpoint `step`."""
    return root / f"step-{step:08d}{SHARDED_SUFFIX}"


def load_checkpoint(
    checkpoint: Entry,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
    load_sharded: Callable[[Path], None] | None = None,
) -> TrainerState:
    """Restore everything `save_checkpoint` wrote from a verified checkpoint, with `rank`'s own RNG
    state; returns the trainer state. `load_sharded(dir)` reads a sharded run's weights and optimizer
    state back (every rank calls it)."""
    path = checkpoint.path
    if checkpoint.meta.get("sharded") != (load_sharded is not None):
        saved = "sharded (FSDP/DeepSpeed)" if checkpoint.meta.get("sharded") else "whole"
        raise LmadaptError(
            f"checkpoint {path} holds {saved} weights and optimizer state; resume it under the launch "
            "(data parallel, FSDP or DeepSpeed) that wrote it"
        )
    if load_sharded is not None:
        load_sharded(path.with_name(path.name + SHARDED_SUFFIX))
    else:
        _load_weights_and_optimizer(path, model, optimizer)
    scheduler.load_state_dict(_read_json(path / "scheduler.json"))
    rng = path / f"rng-rank{rank}"
    if not rng.with_suffix(".safetensors").is_file():
        raise LmadaptError(
            f"checkpoint {path} holds the RNG states of {checkpoint.meta.get('ranks')} processes, not of "
            f"rank {rank}; resume with the number of processes that wrote it"
        )
    _set_rng_state(load_file(str(rng.with_suffix(".safetensors"))), _read_json(rng.with_suffix(".json")))
    return TrainerState(**_read_json(path / "trainer_state.json"))


def _load_weights_and_optimizer(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise RuntimeError(
            f"checkpoint {path} lacks trainable parameters {missing[:3]}; was the config changed?"
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    optimizer.load_state_dict(
        _join_optimizer_state(
            load_file(str(path / "optimizer.safetensors")), _read_json(path / "optimizer.json")
        )
    )


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> RngState:
    """This process's torch (CPU and CUDA), numpy and Python RNG states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
