"""HINT: hypernetwork instruction tuning for Hugging Face models (see hint.model for the pieces).

Public entry points: `load_hint_run`, `is_hint_run`, `predict`, `predict_tasks`, `compile_instruction`,
`ModuleCache`, `export_peft`.
"""

from __future__ import annotations

from lmadapt.hint.cache import ModuleCache, compile_instruction, instruction_key, load_modules
from lmadapt.hint.export import export_peft
from lmadapt.hint.model import HintModel
from lmadapt.hint.predict import HintPredictions, predict, predict_tasks
from lmadapt.hint.run import HintRun, is_hint_run, load_hint_run

__all__ = [
    "HintModel",
    "HintPredictions",
    "HintRun",
    "ModuleCache",
    "compile_instruction",
    "export_peft",
    "instruction_key",
    "is_hint_run",
    "load_hint_run",
    "load_modules",
    "predict",
    "predict_tasks",
]
