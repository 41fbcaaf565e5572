"""Load Hugging Face models and tokenizers from local directories, and wrap them with LoRA.

A model directory is either a full model (config.json + safetensors weights) or a PEFT adapter
(adapter_config.json). An adapter is loaded onto its base (`base_model_name_or_path`, itself possibly
an adapter) and merged into the weights, so every caller gets a plain model: evaluation runs at full
speed, DPO's reference is the adapted model, and a new LoRA trained on top records the adapter
directory as its base (loading it rebuilds the whole chain).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmadapt.config import LoraConfig, ModelConfig
from lmadapt.data.templates import ChatTemplate, get_template
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.models.vocab import fit_model_to_template

log = logging.getLogger("lmadapt")

ModelKind = Literal["causal", "seq2seq"]
# "lm": a causal or seq2seq language model; "score": the LM with a one-output sequence-classification
# head (a reward model: a fresh head on a plain LM, the trained head of a reward model).
ModelHead = Literal["lm", "score"]

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json")


def local_dir(path: str | Path, what: str) -> Path:
    """`path` as an absolute directory; never a Hub name (lmadapt does not download at run time)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise LmadaptError(
            f"{what} '{path}' is not a local directory; lmadapt never downloads at run time, "
            "so fetch the model first (e.g. `huggingface-cli download NAME --local-dir DIR`) and pass DIR"
        )
    return p.resolve()


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def _adapter_config(adapter_dir: Path) -> dict:
    try:
        return json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmadaptError(f"{adapter_dir / ADAPTER_CONFIG}: not a readable adapter config ({e})") from None


def adapter_base_path(adapter_dir: str | Path) -> Path:
    """The adapter's base model directory: `base_model_name_or_path`, absolute as lmadapt saves it; a
    relative one (saved elsewhere) is tried from the working directory, then from the adapter's."""
    adapter_dir = Path(adapter_dir).expanduser().resolve()
    base = _adapter_config(adapter_dir).get("base_model_name_or_path")
    if not base:
        raise LmadaptError(f"{adapter_dir / ADAPTER_CONFIG}: no base_model_name_or_path")
    candidates = [Path(base).expanduser()]
    if not candidates[0].is_absolute():
        candidates.append(adapter_dir / base)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise LmadaptError(
        f"adapter '{adapter_dir}': its base model '{base}' (base_model_name_or_path in {ADAPTER_CONFIG}) "
        "is not a local directory; edit it to the base model's directory"
    )


def adapter_head(adapter_dir: str | Path) -> ModelHead:
    """ "score" for a reward-model adapter (PEFT task SEQ_CLS), else "lm"."""
    task = _adapter_config(Path(adapter_dir).expanduser()).get("task_type")
    return "score" if task == "SEQ_CLS" else "lm"


PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_model_dir(path: str | Path, allow_pickle: bool = False) -> Path:
    """The absolute model directory, after checking it holds a model (config + weights) or an adapter.

    Weights are read from safetensors. A directory with only pickled weights is refused unless
    `allow_pickle`: unpickling a file can run any code it carries.
    """
    directory = local_dir(path, "model path")
    adapter = (directory / ADAPTER_CONFIG).is_file()
    if not adapter and not (directory / "config.json").is_file():
        raise LmadaptError(
            f"model path '{path}' has neither config.json (a model) nor {ADAPTER_CONFIG} (a PEFT adapter)"
        )
    if any(directory.glob("*.safetensors")) or (adapter and not (directory / "adapter_model.bin").is_file()):
        return directory  # (an adapter without weights: PEFT names what is missing)
    pickled = sorted(p.name for pattern in PICKLE_PATTERNS for p in directory.glob(pattern))
    if not pickled:
        raise LmadaptError(f"model path '{path}' has config.json but no .safetensors weights")
    if not allow_pickle:
        raise LmadaptError(
            f"model path '{path}' has no .safetensors weights, only pickled ones ({', '.join(pickled[:3])}); "
            "lmadapt does not unpickle by default because loading a pickle can run any code in it: re-save "
            "them with save_pretrained(..., safe_serialization=True), or set model.allow_pickle=true if you "
            "trust the file"
        )
    log.warning("model path %s: loading pickled weights (model.allow_pickle=true)", path)
    return directory


def load_tokenizer(
    path: str | Path, trust_remote_code: bool = False, what: str = "tokenizer path"
) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `path` (`what` names it in errors, e.g. a config field); an adapter
    directory without one uses its base model's."""
    directory = local_dir(path, what)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        if is_adapter_dir(directory):
            return load_tokenizer(adapter_base_path(directory), trust_remote_code)
        raise LmadaptError(
            f"'{path}' is not a tokenizer directory (none of {', '.join(TOKENIZER_FILES)} is there)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, TypeError) as e:
        raise _refusal("load a tokenizer from", path, e) from None
    if tok.pad_token is None:
        # Padding positions are masked out everywhere, so any id works; eos is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def _refusal(what: str, path: str | Path, e: BaseException) -> LmadaptError:
    """A loading error as one line; code shipped with the model that was not trusted says how to allow it."""
    if "custom code" in str(e):
        return LmadaptError(
            f"'{path}' ships its own Python code (auto_map), which lmadapt runs only with "
            "model.trust_remote_code=true: set it only if you trust that code"
        )
    return LmadaptError(f"cannot {what} '{path}': {first_line(e)}")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def detect_kind(path: str | Path, trust_remote_code: bool = False) -> ModelKind:
    directory = local_dir(path, "model path")
    if is_adapter_dir(directory):
        return detect_kind(adapter_base_path(directory), trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise _refusal("read the model config in", path, e) from None
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" means bf16 on accelerators and fp32 on CPU (bf16 matmul is far slower on most CPUs)."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, name)


def load_model(
    cfg: ModelConfig, device: torch.device | None = None, head: ModelHead = "lm"
) -> tuple[PreTrainedModel, ModelKind]:
    """Load a model, or a PEFT adapter merged into its base, from a local directory.

    Weights are read from safetensors (pickles only with `cfg.allow_pickle`: check_model_dir), Python
    files shipped with the model run only with `cfg.trust_remote_code`. `device` only picks the dtype
    ("auto"): the model is returned on the CPU and callers move it.
    """
    device = device or torch.device("cpu")
    directory = check_model_dir(cfg.path, cfg.allow_pickle)
    if is_adapter_dir(directory):
        return _load_merged_adapter(cfg, directory, device, head)
    kind: ModelKind = detect_kind(directory, cfg.trust_remote_code) if cfg.kind == "auto" else cfg.kind
    if head == "score":
        auto_cls, extra = AutoModelForSequenceClassification, {"num_labels": 1}
    else:
        auto_cls, extra = (AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM), {}
    try:
        model = auto_cls.from_pretrained(
            directory,
            local_files_only=True,
            # None: safetensors when there are any, else the pickles check_model_dir let through
            use_safetensors=True if not cfg.allow_pickle else None,
            dtype=resolve_dtype(cfg.dtype, device),
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation=None if cfg.attn_implementation == "auto" else cfg.attn_implementation,
            **extra,
        )
    except (OSError, ValueError, ImportError, SafetensorError) as e:
        raise _refusal("load a model from", cfg.path, e) from None
    return model, kind


@dataclasses.dataclass
class ModelWithTemplate:
    """A model to train, its tokenizer and the chat template fitted to both."""

    model: PreTrainedModel
    kind: ModelKind
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    template_tokens: list[int]  # the template's marker ids, whose embedding rows must train (LoRA too)


def model_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of a `model:` section (`model.tokenizer`, else the model's); errors name the field."""
    field = "model.tokenizer" if cfg.tokenizer else "model.path"
    return load_tokenizer(cfg.tokenizer or cfg.path, cfg.trust_remote_code, field)


def load_with_template(
    cfg: ModelConfig, template: str, device: torch.device, causal_for: str = ""
) -> ModelWithTemplate:
    """`load_tokenizer` + `load_model` + the chat template `template` fitted to both (models/vocab.py).
    `causal_for` names a method that needs a decoder-only model (e.g. "DPO"): any other is refused."""
    tokenizer = model_tokenizer(cfg)
    model, kind = load_model(cfg, device)
    if causal_for and kind != "causal":
        raise ConfigError(f"{causal_for} needs a causal (decoder-only) model; {cfg.path} is {kind}")
    if cfg.lora.enabled and is_adapter_dir(cfg.path):
        # PEFT records one base per adapter and does not follow a base that is itself an adapter:
        # plain PEFT would silently drop the first adapter, plain transformers refuses the directory.
        log.warning(
            "model.path %s is a LoRA adapter: the new adapter trains on top of it merged, and its recorded "
            "base is that adapter, which lmadapt loads but plain PEFT/transformers do not (PEFT silently "
            "drops the first adapter). For a portable output, `lmadapt merge --model %s --out DIR` first "
            "and start from DIR",
            cfg.path,
            cfg.path,
        )
    chat = get_template(template, tokenizer)
    return ModelWithTemplate(model, kind, tokenizer, chat, fit_model_to_template(model, tokenizer, chat))


def _load_merged_adapter(
    cfg: ModelConfig, adapter_dir: Path, device: torch.device, head: ModelHead
) -> tuple[PreTrainedModel, ModelKind]:
    from peft import PeftConfig, PeftModel

    base_path = adapter_base_path(adapter_dir)
    if base_path == adapter_dir:
        raise LmadaptError(f"adapter '{cfg.path}' names itself as its base model in {ADAPTER_CONFIG}")
    base, kind = load_model(dataclasses.replace(cfg, path=str(base_path)), device, head)
    # Tokens added in training (chat markers) grew the embeddings; the saved tokenizer says how far.
    vocab = len(load_tokenizer(adapter_dir, cfg.trust_remote_code))
    if vocab > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(vocab)
    try:
        config = PeftConfig.from_pretrained(adapter_dir)
        if head == "score" and config.task_type != "SEQ_CLS":
            config.task_type = None  # an LM's adapter under a new score head: the task-agnostic wrapper
        model = PeftModel.from_pretrained(base, adapter_dir, config=config).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise LmadaptError(
            f"cannot load the PEFT adapter '{cfg.path}' onto its base '{base_path}': {first_line(e)}"
        ) from None
    model.requires_grad_(True)  # PEFT froze the base; a merged model trains like any loaded one
    # A LoRA trained on this model must name the adapter (not the bare base) as its base.
    model.name_or_path = model.config.name_or_path = str(adapter_dir)
    log.info("loaded adapter %s onto %s and merged it", adapter_dir, base_path)
    return model, kind


def apply_lora(
    model: PreTrainedModel,
    cfg: LoraConfig,
    kind: ModelKind | Literal["sequence_classification"],
    trainable_tokens: Sequence[int] = (),
    *,
    seed: int,
) -> PreTrainedModel:
    """Wrap `model` with PEFT LoRA adapters; only the adapters (and a classification head) train.

    LoRA's A matrices are drawn after `torch.manual_seed(seed)` (the run's seed), so a rerun, or a resumed
    run's reference, starts from the same adapters.

    `trainable_tokens` (ids of chat-template markers, see models/vocab.py) also train their embedding
    rows (and output rows when the head is not tied), saved in the adapter as PEFT trainable tokens.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    if trainable_tokens and kind == "seq2seq":
        # T5-style models read embeddings through separate encoder/decoder modules sharing one weight;
        # PEFT trainable tokens on one of them would leave the other's marker rows untrained.
        raise ConfigError(
            "LoRA cannot train the chat template's new marker tokens on an encoder-decoder model; "
            "use full finetuning (model.lora.enabled=false) or a template without new tokens (tulu)"
        )

    task = {
        "seq2seq": TaskType.SEQ_2_SEQ_LM,
        "causal": TaskType.CAUSAL_LM,
        "sequence_classification": TaskType.SEQ_CLS,
    }
    peft_cfg = PeftLoraConfig(
        task_type=task[kind],
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        trainable_token_indices=_token_layers(model, list(trainable_tokens)) if trainable_tokens else None,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return peft_model


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout (LoRA's too), as TRL does by default: with dropout the policy would differ
    from its reference (or its sampler), whose log-probs are computed in eval mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _token_layers(model: PreTrainedModel, token_ids: list[int]) -> dict[str, list[int]]:
    """{module name: token ids} for PEFT trainable tokens: the input embeddings, plus an untied LM head."""
    names = {id(module): name for name, module in model.named_modules()}
    layers = {names[id(model.get_input_embeddings())]: token_ids}
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        layers[names[id(output)]] = token_ids
    return layers
