"""Turn prompts into unit vectors: a causal model's own hidden states (rds) or an encoder's (deft).

An encoder embeds the prompt part of a conversation (everything before the last reply). `rds` renders it
with the chat template SFT trains with, runs the model without its LM head and pools the last hidden
layer with position weights (RDS+); `deft` runs an encoder (BERT-like, a sentence-transformers directory,
or the encoder of a T5) on the plain message texts and mean-pools (DEFT). A batch is padded on the right
and both poolings ignore the padding, so a vector does not depend on its batch-mates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmadapt.config import SelectConfig
from lmadapt.data.cache import tokenizer_fingerprint
from lmadapt.data.formats import Messages
from lmadapt.data.templates import get_template
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.models.load import (
    adapter_base_path,
    check_model_dir,
    first_line,
    is_adapter_dir,
    load_model,
    model_tokenizer,
    resolve_dtype,
)
from lmadapt.models.vocab import fit_model_to_template
from lmadapt.selection.pooling import l2_normalize, mean_pool, position_weighted_mean
from lmadapt.store import content_digest

# Bump when what a vector means changes (pooling, rendering), so cached embeddings stop matching.
ENCODER_VERSION = 1


@dataclass
class Encoder:
    """prompt messages -> text -> token states -> one unit vector per prompt."""

    method: str
    network: torch.nn.Module  # returns `last_hidden_state` for input_ids + attention_mask
    tokenizer: Any
    render: Callable[[Messages], str]
    pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    add_special_tokens: bool  # False when the rendered text already holds them (a chat template)
    max_length: int
    device: torch.device
    fingerprint: str  # sha256 of everything a vector depends on (the embedding cache key builds on it)

    @torch.no_grad()
    def encode(self, prompts: Sequence[Messages], batch_size: int) -> np.ndarray:
        """[len(prompts), hidden] float32 rows of unit length; batches are formed by length (less padding)."""
        texts = [self.render(messages) for messages in prompts]
        ids = [self.token_ids(text) for text in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            batch = [ids[i] for i in order[start : start + batch_size]]
            width = max(len(row) for row in batch)
            pad = self.tokenizer.pad_token_id or 0
            input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in batch], device=self.device)
            mask = torch.tensor(
                [[1] * len(row) + [0] * (width - len(row)) for row in batch], device=self.device
            )
            states = self.network(input_ids=input_ids, attention_mask=mask).last_hidden_state
            vectors = l2_normalize(self.pool(states.float(), mask)).cpu().numpy()
            if out.shape[1] == 0:
                out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
            out[order[start : start + batch_size]] = vectors
        return out

    def token_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]
        if not ids:
            raise LmadaptError(f"a prompt renders to no tokens: {text[:80]!r}")
        return ids[: self.max_length]


def plain_text(messages: Messages) -> str:
    """The message contents one per line: what a sentence encoder reads (no chat markup)."""
    return "\n".join(message["content"] for message in messages)


def load_encoder(cfg: SelectConfig, device: torch.device | None = None) -> Encoder:
    """The encoder `cfg.selection.method` names, on `device` (default: a GPU when there is one)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sel = cfg.selection
    if not cfg.model.path:
        raise ConfigError(f"model.path is not set (the {sel.method} method embeds with it)")
    tokenizer = model_tokenizer(cfg.model)
    if sel.method == "rds":
        model, kind = load_model(cfg.model, device)
        if kind != "causal":
            raise ConfigError(
                f"method rds needs a decoder-only model; {cfg.model.path} is an encoder-decoder "
                "(use method deft, which reads its encoder)"
            )
        template = get_template(sel.template, tokenizer)
        torch.manual_seed(sel.seed)  # rows added for new template markers start the same in every run
        fit_model_to_template(model, tokenizer, template)
        network, render, pool, special = (
            model.base_model,
            template.generation_prompt,
            position_weighted_mean,
            False,
        )
        identity = {"template": template.jinja}
    else:
        network = _encoder_network(cfg, device)
        render, pool, special, identity = plain_text, mean_pool, True, {}
    description = {
        "version": ENCODER_VERSION,
        "method": sel.method,
        "model": _model_digest(cfg.model.path),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "dtype": cfg.model.dtype,
        "max_length": sel.max_length,
        **identity,
    }
    fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    network.to(device).eval()
    return Encoder(sel.method, network, tokenizer, render, pool, special, sel.max_length, device, fingerprint)


def _model_digest(path: str | Path) -> str:
    """The bytes a model's outputs depend on: its directory, and an adapter's base (and its base...)."""
    digest = content_digest(path)
    return digest + _model_digest(adapter_base_path(path)) if is_adapter_dir(path) else digest


def _encoder_network(cfg: SelectConfig, device: torch.device) -> torch.nn.Module:
    """The bare transformer of an encoder model (a T5's encoder stack), from safetensors only."""
    from transformers import AutoModel

    directory = check_model_dir(cfg.model.path)
    try:
        model = AutoModel.from_pretrained(
            directory,
            local_files_only=True,
            use_safetensors=True,
            dtype=resolve_dtype(cfg.model.dtype, device),
            trust_remote_code=cfg.model.trust_remote_code,
        )
    except (OSError, ValueError, ImportError) as e:
        raise LmadaptError(f"cannot load an encoder from '{cfg.model.path}': {first_line(e)}") from None
    return model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
