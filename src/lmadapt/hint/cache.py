"""Compile once, reuse: an instruction becomes a module entry the first time it is seen.

A compiled instruction is the generated modules of one hypernetwork pass (batch dimension 1, plus the
fusion tensors): a store entry (lmadapt.store: atomic, checksummed) named by
`instruction_key(run_id, instruction)`, a SHA-256 of the run's content hash and the exact instruction
text, holding modules.safetensors. The manifest repeats both, so a stale, foreign or damaged entry is
recompiled rather than used. Inference asks `ModuleCache.get` for every task: one hypernetwork pass per
distinct instruction, however many batches use it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmadapt.hint.data import tokenize_for_encoder, tokenize_instruction
from lmadapt.hint.modules import GeneratedModules
from lmadapt.hint.run import HintRun
from lmadapt.store import CorruptEntry, Entry, StoreFull, load_or_build, open_entry, write_entry

log = logging.getLogger("lmadapt")

MODULE_KIND = "hint-modules"
MODULE_VERSION = 3  # 3: prefixes carry their gate
MODULES_FILE = "modules.safetensors"


def instruction_key(run_id: str, instruction: str) -> str:
    return hashlib.sha256(f"{run_id}\0{instruction}".encode()).hexdigest()


@torch.no_grad()
def run_hypernetwork(run: HintRun, instruction: str) -> GeneratedModules:
    """One hypernetwork pass over `instruction` (as the run tokenises it) -> modules with batch 1."""
    model = run.model
    limit = run.settings.max_instruction_length
    device = next(model.parameters()).device
    ids = torch.tensor([tokenize_instruction(instruction, run.tokenizer, model.kind, limit)], device=device)
    encoder_ids = None
    if model.encoder_tokenizer is not None:
        encoded = tokenize_for_encoder(instruction, model.encoder_tokenizer, limit)
        encoder_ids = torch.tensor([encoded], device=device)
    was_training = model.training
    model.eval()
    try:
        encoder_mask = None if encoder_ids is None else torch.ones_like(encoder_ids)
        return model.generate_modules(ids, torch.ones_like(ids), encoder_ids, encoder_mask)
    finally:
        model.train(was_training)


def _write_modules(
    modules: GeneratedModules, directory: Path, run_id: str, instruction: str
) -> dict[str, Any]:
    save_file(
        {name: t.detach().contiguous().cpu() for name, t in modules.items()}, str(directory / MODULES_FILE)
    )
    return {"run_id": run_id, "instruction": instruction}


def save_modules(path: str | Path, modules: GeneratedModules, run_id: str, instruction: str) -> Path:
    """Store `modules` as the entry `path` (replacing one already there)."""
    write_entry(
        path,
        MODULE_KIND,
        MODULE_VERSION,
        lambda directory: _write_modules(modules, directory, run_id, instruction),
        replace=True,
    )
    return Path(path)


def _read_modules(entry: Entry, device: torch.device | str) -> GeneratedModules:
    with safe_open(str(entry.path / MODULES_FILE), framework="pt", device=str(device)) as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118


def load_modules(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GeneratedModules, dict[str, str]]:
    """(modules, {"run_id", "instruction"}) of a compiled-instruction entry, verified; CorruptEntry if not."""
    entry = open_entry(path, MODULE_KIND, MODULE_VERSION)
    return _read_modules(entry, device), entry.meta


def compile_instruction(run: HintRun, instruction: str, out_dir: str | Path | None = None) -> Path:
    """Compile `instruction` into `out_dir` (default: the run's module cache); returns its entry directory."""
    cache = ModuleCache(run, out_dir, required=True)
    cache.get(instruction)
    return cache.path(instruction)


class ModuleCache:
    """A run's compiled instructions: on disk under `directory` (default RUN/modules/) and in memory.

    With `persist=False`, or when the directory cannot be written (or the disk is full), compiled modules
    stay in memory; with `required=True` (compiling is the point) that is an error instead.
    `compiled` counts hypernetwork passes made by this cache (misses).
    """

    def __init__(
        self, run: HintRun, directory: str | Path | None = None, persist: bool = True, required: bool = False
    ):
        self.run = run
        self.directory = Path(directory) if directory is not None else run.module_dir
        self.persist = persist
        self.required = required
        self.compiled = 0
        self._memory: dict[str, GeneratedModules] = {}

    def path(self, instruction: str) -> Path:
        return self.directory / instruction_key(self.run.run_id, instruction)

    def get(self, instruction: str) -> GeneratedModules:
        key = instruction_key(self.run.run_id, instruction)
        if key not in self._memory:
            self._memory[key] = self._stored(instruction) if self.persist else self._compile(instruction)
        return self._memory[key]

    def _compile(self, instruction: str) -> GeneratedModules:
        self.compiled += 1
        return run_hypernetwork(self.run, instruction)

    def _stored(self, instruction: str) -> GeneratedModules:
        """The entry's modules (as the model's dtype), compiling and storing them when missing or unusable."""
        run_id, reference = self.run.run_id, next(self.run.model.parameters())
        built: list[GeneratedModules] = []

        def build() -> GeneratedModules:
            built.append(self._compile(instruction))
            return built[0]

        def load(entry: Entry) -> GeneratedModules:
            if entry.meta.get("run_id") != run_id or entry.meta.get("instruction") != instruction:
                raise CorruptEntry(f"{entry.path} belongs to another run or instruction")
            modules = _read_modules(entry, reference.device)
            return {
                name: t.to(reference.dtype) if t.is_floating_point() else t for name, t in modules.items()
            }

        try:
            modules, _ = load_or_build(
                self.path(instruction),
                MODULE_KIND,
                MODULE_VERSION,
                build,
                lambda modules, directory: _write_modules(modules, directory, run_id, instruction),
                load,
            )
            return modules
        except (OSError, StoreFull) as err:
            if self.required:
                raise
            log.warning(
                "cannot write compiled modules to %s (%s); keeping them in memory", self.directory, err
            )
            self.persist = False
            return built[0] if built else self._compile(instruction)
