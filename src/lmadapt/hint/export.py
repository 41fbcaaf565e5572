"""Export a compiled instruction's LoRA modules as a standard PEFT adapter directory.

HINT's LoRA delta is x A B with A [d_in, r] and B [r, d_out]; PEFT computes lora_B(lora_A(x)) *
alpha / r, so the adapter stores lora_A.weight = A^T, lora_B.weight = B^T and alpha = r. Only runs
whose modules are LoRA alone and that use no instruction fusion can be expressed this way: PEFT has no
parallel adapters, and plain transformers cannot attend to the instruction's states.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, TaskType
from safetensors.torch import save_file

from lmadapt.errors import ConfigError
from lmadapt.hint.modules import GeneratedModules
from lmadapt.hint.run import MODEL_DIR, HintRun

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def export_peft(run: HintRun, modules: GeneratedModules, out_dir: str | Path) -> Path:
    """Write `modules` (batch 1, from `ModuleCache.get` or `load_modules`) as a PEFT LoRA adapter of the
    run's underlying model (RUN/model); `PeftModel.from_pretrained` loads it with plain transformers."""
    cfg = run.model.cfg
    if set(cfg.modules) != {"lora"} or cfg.fusion:
        raise ConfigError(
            "only a run trained with hint.modules=[lora] and hint.fusion=false exports to PEFT "
            f"(this run: modules {cfg.modules}, fusion {cfg.fusion})"
        )
    weights, targets = {}, []
    for slot in run.model.layout.slots:
        for target in cfg.lora_targets:
            path = slot.projections[target]
            a = modules[f"{slot.name}.lora_{target}_a"]
            b = modules[f"{slot.name}.lora_{target}_b"]
            if a.shape[0] != 1:
                raise ConfigError(
                    f"export_peft takes the modules of one instruction, got a batch of {a.shape[0]}"
                )
            weights[f"base_model.model.{path}.lora_A.weight"] = a[0].T.contiguous().cpu()
            weights[f"base_model.model.{path}.lora_B.weight"] = b[0].T.contiguous().cpu()
            targets.append(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_rank,
        lora_dropout=0.0,
        target_modules=targets,
        bias="none",
        task_type=TaskType.SEQ_2_SEQ_LM if run.model.kind == "seq2seq" else TaskType.CAUSAL_LM,
        base_model_name_or_path=str((run.path / MODEL_DIR).resolve()),
    ).save_pretrained(str(out))
    save_file(weights, str(out / ADAPTER_WEIGHTS))
    return out
