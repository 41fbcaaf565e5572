"""Compile once, reuse: an instruction becomes a module file the first time it is seen.

A compiled instruction is the generated modules of one hypernetwork pass (batch dimension 1, plus the
fusion tensors) in a safetensors file named by `instruction_key(run_id, instruction)`, a SHA-256 of the
run's content hash and the exact instruction text. The file's metadata repeats both, so a stale or
foreign file is recompiled rather than used. Inference asks `ModuleCache.get` for every task: one
hypernetwork pass per distinct instruction, however many batches use it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmadapt.hint.data import tokenize_instruction
from lmadapt.hint.modules import GeneratedModules
from lmadapt.hint.run import HintRun

log = logging.getLogger("lmadapt")

MODULE_FORMAT = "lmadapt-hint-modules/1"


def instruction_key(run_id: str, instruction: str) -> str:
    return hashlib.sha256(f"{run_id}\0{instruction}".encode()).hexdigest()


@torch.no_grad()
def run_hypernetwork(run: HintRun, instruction: str) -> GeneratedModules:
    """One hypernetwork pass over `instruction` (as the run tokenises it) -> modules with batch 1."""
    model = run.model
    ids = tokenize_instruction(instruction, run.tokenizer, model.kind, run.settings.max_instruction_length)
    device = next(model.parameters()).device
    ids_tensor = torch.tensor([ids], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        return model.generate_modules(ids_tensor, torch.ones_like(ids_tensor))
    finally:
        model.train(was_training)


def save_modules(path: str | Path, modules: GeneratedModules, run_id: str, instruction: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in modules.items()}
    metadata = {"format": MODULE_FORMAT, "run_id": run_id, "instruction": instruction}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_modules(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GeneratedModules, dict[str, str]]:
    """(modules, metadata) of a compiled-instruction file."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def compile_instruction(run: HintRun, instruction: str, out_dir: str | Path | None = None) -> Path:
    """Compile `instruction` into `out_dir` (default: the run's module cache); returns the module file."""
    cache = ModuleCache(run, out_dir)
    cache.get(instruction)
    return cache.path(instruction)


class ModuleCache:
    """A run's compiled instructions: on disk under `directory` (default RUN/modules/) and in memory.

    With `persist=False`, or when the directory cannot be written, compiled modules stay in memory.
    `compiled` counts hypernetwork passes made by this cache (misses).
    """

    def __init__(self, run: HintRun, directory: str | Path | None = None, persist: bool = True):
        self.run = run
        self.directory = Path(directory) if directory is not None else run.module_dir
        self.persist = persist
        self.compiled = 0
        self._memory: dict[str, GeneratedModules] = {}

    def path(self, instruction: str) -> Path:
        return self.directory / f"{instruction_key(self.run.run_id, instruction)}.safetensors"

    def get(self, instruction: str) -> GeneratedModules:
        key = instruction_key(self.run.run_id, instruction)
        if key in self._memory:
            return self._memory[key]
        modules = self._read(instruction)
        if modules is None:
            modules = run_hypernetwork(self.run, instruction)
            self.compiled += 1
            self._write(instruction, modules)
        self._memory[key] = modules
        return modules

    def _read(self, instruction: str) -> GeneratedModules | None:
        path = self.path(instruction)
        if not path.is_file():
            return None
        reference = next(self.run.model.parameters())
        modules, meta = load_modules(path, reference.device)
        if meta.get("run_id") != self.run.run_id or meta.get("instruction") != instruction:
            log.warning("%s belongs to another run or instruction; recompiling", path)
            return None
        return {name: t.to(reference.dtype) if t.is_floating_point() else t for name, t in modules.items()}

    def _write(self, instruction: str, modules: GeneratedModules) -> None:
        if not self.persist:
            return
        try:
            save_modules(self.path(instruction), modules, self.run.run_id, instruction)
        except OSError as err:
            log.warning(
                "cannot write compiled modules to %s (%s); keeping them in memory", self.directory, err
            )
            self.persist = False
