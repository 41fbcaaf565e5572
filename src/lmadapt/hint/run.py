"""A trained HINT run on disk, and loading it back.

Layout of a run directory:

    RUN/
      hint.json                  format, hypernetwork config, data settings, run_id (content hash)
      hypernetwork.safetensors   parameter generator and prefix gates (+ separate instruction encoder)
      model/                     underlying model + tokenizer (save_pretrained; plain transformers loads it)
      encoder/                   a pretrained instruction encoder + its tokenizer (hint.encoder: DIR only)
      modules/                   compiled-instruction cache, <key>/ store entries (see hint.cache)
      config.yaml, metrics.jsonl, loss.png, checkpoints/, pretrain/   training records

`run_id` hashes the weight files and the configuration, so compiled modules of an older run in the
same directory are never mistaken for this one's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmadapt.config import HypernetworkConfig, ModelConfig, from_dict, to_dict
from lmadapt.data.templates import ChatTemplate
from lmadapt.errors import LmadaptError
from lmadapt.hint.data import instance_template
from lmadapt.hint.model import HintModel
from lmadapt.models.load import load_model, load_tokenizer
from lmadapt.models.save import save_model_and_tokenizer

FORMAT = "lmadapt-hint/2"
# Runs saved before prefixes had gates: their prefixes shared the attention softmax. Those without
# prefixes (adapters, LoRA) compute exactly as they did and still load.
UNGATED_FORMAT = "lmadapt-hint/1"
HINT_FILE = "hint.json"
HYPERNETWORK_FILE = "hypernetwork.safetensors"
MODEL_DIR = "model"
ENCODER_DIR = "encoder"
MODULES_DIR = "modules"


@dataclass(frozen=True)
class RunSettings:
    """How the run encoded its data; inference must encode the same way."""

    template: str  # around the instance: "none" or a chat template name
    encoding: str  # the prompt encoding the run was trained with (e.g. "def+2pos")
    max_instruction_length: int
    max_input_length: int
    instance_format: str = "raw"  # "raw", "compact" or "tk" (see HintDataConfig)


@dataclass
class HintRun:
    path: Path
    model: HintModel
    tokenizer: Any
    settings: RunSettings
    run_id: str

    @property
    def template(self) -> ChatTemplate:
        return instance_template(self.settings.template, self.tokenizer)

    @property
    def module_dir(self) -> Path:
        return self.path / MODULES_DIR


def is_hint_run(path: str | Path) -> bool:
    return (Path(path) / HINT_FILE).is_file()


def save_hint_run(model: HintModel, tokenizer: Any, out: str | Path, settings: RunSettings) -> str:
    """Write the run layout under `out`; returns its run_id."""
    out = Path(out)
    model_dir = out / MODEL_DIR
    # The tokenizer carries the template around the instance, as for any lmadapt model.
    save_model_and_tokenizer(
        model.underlying, tokenizer, model_dir, instance_template(settings.template, tokenizer).jinja
    )
    weights = {k: v.detach().contiguous().cpu() for k, v in model.hypernetwork_state().items()}
    save_file(weights, str(out / HYPERNETWORK_FILE), metadata={"format": FORMAT})
    body = {"format": FORMAT, "hypernetwork": to_dict(model.cfg), "settings": asdict(settings)}
    files = [out / HYPERNETWORK_FILE, model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))]
    if model.pretrained_encoder is not None:
        # The run carries its encoder (trained or not), so loading it needs nothing outside RUN/.
        encoder_dir = out / ENCODER_DIR
        model.pretrained_encoder.save_pretrained(encoder_dir)
        model.encoder_tokenizer.save_pretrained(encoder_dir)
        body["encoder_dir"] = ENCODER_DIR
        files += [encoder_dir / "config.json", *sorted(encoder_dir.glob("*.safetensors"))]
    run_id = _content_hash(files, json.dumps(body, sort_keys=True))
    (out / HINT_FILE).write_text(json.dumps({**body, "run_id": run_id}, indent=2) + "\n", encoding="utf-8")
    return run_id


def load_hint_run(path: str | Path, device: torch.device | str | None = None, dtype: str = "auto") -> HintRun:
    """Load a run directory written by `save_hint_run` (the model is returned in eval mode)."""
    path = Path(path)
    record = _read_record(path)
    cfg = from_dict(HypernetworkConfig, record["hypernetwork"])
    if "encoder_dir" in record:  # hint.json keeps the original encoder path; the run's copy is what loads
        cfg = replace(cfg, encoder=str(path / record["encoder_dir"]))
    if record["format"] == UNGATED_FORMAT and "prefix" in cfg.modules:
        raise LmadaptError(
            f"{path}: HINT run saved before prefixes were gated ({UNGATED_FORMAT}); its prefixes do not "
            "work with this version of lmadapt: retrain it"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    underlying, _ = load_model(ModelConfig(path=str(path / MODEL_DIR), dtype=dtype), device)  # type: ignore[arg-type]
    model = HintModel(underlying.to(device), cfg)
    model.load_hypernetwork_state(load_file(str(path / HYPERNETWORK_FILE), device=str(device)))
    model.eval()
    return HintRun(
        path=path,
        model=model,
        tokenizer=load_tokenizer(str(path / MODEL_DIR)),
        settings=RunSettings(**record["settings"]),
        run_id=record["run_id"],
    )


def read_run_settings(path: str | Path) -> RunSettings:
    """How the run at `path` encoded its data, read from hint.json without loading any weights."""
    return RunSettings(**_read_record(Path(path))["settings"])


def _read_record(path: Path) -> dict[str, Any]:
    if not is_hint_run(path):
        raise LmadaptError(f"{path} is not a HINT run (no {HINT_FILE}); train one with `lmadapt hint CONFIG`")
    record = json.loads((path / HINT_FILE).read_text(encoding="utf-8"))
    if record.get("format") not in (FORMAT, UNGATED_FORMAT):
        raise LmadaptError(f"{path / HINT_FILE}: unknown format {record.get('format')!r} (expected {FORMAT})")
    return record


def _content_hash(files: list[Path], text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8"))
    for file in files:
        digest.update(file.name.encode("utf-8"))
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
