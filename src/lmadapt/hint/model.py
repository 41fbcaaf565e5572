"""`HintModel`: the underlying Hugging Face model and the hypernetwork as one `nn.Module`.

One module is what the training engine optimises and checkpoints: `forward` reads a batch's
instructions with the hypernetwork, turns them into generated modules (one set per distinct
instruction, gathered to the examples that use it) and runs the underlying model with them active.
The hypernetwork is the instruction encoder (the underlying model's own, with generated modules
switched off, a separate trained copy, or a pretrained Hugging Face encoder read with its own tokenizer)
plus the parameter generator. With a pretrained encoder and instruction fusion the underlying model
still reads the instruction in its own tokens (the fused keys/values or states must be its own), so
such a model takes two tokenisations of every instruction.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmadapt.config import HypernetworkConfig
from lmadapt.data.collate import pad_right
from lmadapt.errors import ConfigError
from lmadapt.hint.generator import ParameterGenerator
from lmadapt.hint.injection import Injection
from lmadapt.hint.layout import model_layout
from lmadapt.hint.modules import FUSION_MASK, FUSION_STATES, GeneratedModules, component_kinds, select_rows

UNDERLYING = "underlying."
PRETRAINED_ENCODER = "pretrained_encoder."  # saved as a Hugging Face directory, not with the generator
SHARED, SEPARATE = "shared", "separate"


class HintModel(nn.Module):
    def __init__(self, underlying: Any, cfg: HypernetworkConfig):
        super().__init__()
        if not cfg.modules:
            raise ConfigError("hint.modules is empty: choose from adapter, prefix, lora")
        self.cfg = cfg
        self.layout = model_layout(underlying)
        self.kind = "seq2seq" if self.layout.family == "t5" else "causal"
        # The copy is taken before any hook is installed, so the separate encoder never applies modules.
        self.instruction_encoder = (
            copy.deepcopy(_encoder_stack(underlying)) if cfg.encoder == SEPARATE else None
        )
        reference = next(underlying.parameters())
        self.pretrained_encoder, self.encoder_tokenizer = None, None
        source_dim = self.layout.hidden_size
        if cfg.encoder not in (SHARED, SEPARATE):
            encoder, self.encoder_tokenizer = load_pretrained_encoder(cfg.encoder)
            self.pretrained_encoder = encoder.to(device=reference.device, dtype=reference.dtype)
            self.pretrained_encoder.requires_grad_(not cfg.freeze_encoder)
            source_dim = self.pretrained_encoder.config.hidden_size
        # Frozen pretrained encoder: its final states of each distinct instruction (token ids -> [T, d]).
        self._frozen_states: dict[tuple[int, ...], torch.Tensor] = {}
        self.underlying = underlying
        kinds = component_kinds(underlying, self.layout, cfg)
        heads = cfg.generator_heads or self.layout.num_heads
        # The generator's cross-attention maps the encoder's width to the underlying model's.
        self.generator = ParameterGenerator(kinds, self.layout, source_dim, heads).to(
            device=reference.device, dtype=reference.dtype
        )
        self.injection = Injection(underlying, self.layout, cfg.lora_targets if "lora" in cfg.modules else [])
        if cfg.freeze_underlying:
            underlying.requires_grad_(False)
        # Instruction batches encoded so far: the module cache keeps this at one per task.
        self.hypernetwork_passes = 0

    def encode_instruction(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """ids/mask [B, T] -> final hidden states [B, T, d] and, for decoder-only fusion, every layer's
        keys/values [B, kv_heads, T, head_dim]; generated modules are off throughout."""
        stack = (
            self.instruction_encoder
            if self.instruction_encoder is not None
            else _encoder_stack(self.underlying)
        )
        keep_cache = self.cfg.fusion and self.kind == "causal"
        with self.injection.active(None):
            if self.kind == "seq2seq":
                return stack(input_ids=ids, attention_mask=mask).last_hidden_state, None
            out = stack(input_ids=ids, attention_mask=mask, use_cache=keep_cache)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers] if keep_cache else None
        return out.last_hidden_state, layers

    def encode_with_pretrained(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pretrained encoder's final states [B, T, d_enc] of encoder-tokenised instructions ids/mask
        [B, T]. Frozen, each distinct instruction is encoded once (in eval mode) and then looked up."""
        encoder = self.pretrained_encoder
        if not self.cfg.freeze_encoder:
            return encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask, strict=True)]
        missing = [row for row in dict.fromkeys(rows) if row not in self._frozen_states]
        if missing:
            batch = pad_right(missing, self.encoder_tokenizer.pad_token_id or 0).to(ids.device)
            batch_mask = pad_right([[1] * len(row) for row in missing], 0).to(ids.device)
            with torch.no_grad():
                states = encoder(input_ids=batch, attention_mask=batch_mask).last_hidden_state
            for row, row_states in zip(missing, states, strict=True):
                self._frozen_states[row] = row_states[: len(row)]
        out = ids.new_zeros((*ids.shape, encoder.config.hidden_size), dtype=self.generator.queries.dtype)
        for i, row in enumerate(rows):
            positions = mask[i].bool().nonzero().squeeze(-1)
            out[i, positions] = self._frozen_states[row].to(out.device)
        return out

    def generate_modules(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        encoder_ids: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
    ) -> GeneratedModules:
        """One hypernetwork pass: instructions ids/mask [B, T] -> generated modules with batch B.

        With a pretrained encoder, encoder_ids/encoder_mask [B, T'] are the same instructions in the
        encoder's tokens; ids/mask are then read only for instruction fusion."""
        self.hypernetwork_passes += 1
        if self.pretrained_encoder is None:
            states, layers = self.encode_instruction(ids, mask)
            modules = self.generator(states, mask)
        else:
            if encoder_ids is None or encoder_mask is None:
                raise ValueError("a HintModel with a pretrained encoder needs encoder_ids and encoder_mask")
            modules = self.generator(self.encode_with_pretrained(encoder_ids, encoder_mask), encoder_mask)
            if self.cfg.fusion:
                states, layers = self.encode_instruction(ids, mask)
        if self.cfg.fusion:
            modules[FUSION_MASK] = mask
            if layers is None:
                modules[FUSION_STATES] = states
            else:
                for slot, (keys, values) in zip(self.layout.slots, layers, strict=True):
                    modules[f"{slot.name}.fusion_keys"] = keys
                    modules[f"{slot.name}.fusion_values"] = values
        return modules

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
        instruction_index: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        use_cache: bool = False,
        encoder_ids: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
    ) -> Any:
        """The underlying model's output (`.logits`) with each example's generated modules active.

        input_ids/attention_mask [B, S]: the instance inputs; instruction_ids/mask [U, T]: the distinct
        instructions; instruction_index [B]: which instruction row each example uses (default: row i);
        decoder_input_ids [B, L]: encoder-decoder only; encoder_ids/encoder_mask [U, T']: the instructions
        in a pretrained encoder's tokens. Logits are [B, S, V] (decoder-only) or [B, L, V].
        """
        modules = self.generate_modules(instruction_ids, instruction_mask, encoder_ids, encoder_mask)
        if instruction_index is not None:
            modules = select_rows(modules, instruction_index)
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": use_cache,
        }
        if self.kind == "seq2seq":
            if decoder_input_ids is None:
                raise ValueError("an encoder-decoder HintModel needs decoder_input_ids")
            inputs["decoder_input_ids"] = decoder_input_ids
        with self.injection.active(modules):
            return self.underlying(**inputs)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self.underlying.prepare_decoder_input_ids_from_labels(labels=labels)

    def train(self, mode: bool = True) -> HintModel:
        super().train(mode)
        if self.pretrained_encoder is not None and self.cfg.freeze_encoder:
            self.pretrained_encoder.eval()  # no dropout: its cached states stay what it computes
        return self

    def hypernetwork_state(self) -> dict[str, torch.Tensor]:
        """Weights of the generator (and the separate encoder), without the underlying model's and
        without a pretrained encoder's (saved as its own Hugging Face directory)."""
        return {
            k: v for k, v in self.state_dict().items() if not k.startswith((UNDERLYING, PRETRAINED_ENCODER))
        }

    def load_hypernetwork_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith((UNDERLYING, PRETRAINED_ENCODER))]
        if missing or unexpected:
            raise ConfigError(
                f"hypernetwork weights do not fit this configuration (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )


def _encoder_stack(underlying: Any) -> nn.Module:
    """The stack that reads the instruction: T5's encoder, or a decoder-only model's body (no LM head)."""
    return underlying.encoder if underlying.config.is_encoder_decoder else underlying.model


def load_pretrained_encoder(path: str) -> tuple[nn.Module, Any]:
    """A local Hugging Face encoder (base model, no task head) and its tokenizer; nothing is downloaded."""
    from transformers import AutoModel, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise ConfigError(
            f"hint.encoder: {path!r} is neither 'shared', 'separate' nor a local Hugging Face encoder "
            "directory (no config.json)"
        )
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    if getattr(encoder.config, "is_encoder_decoder", False) or getattr(encoder.config, "is_decoder", False):
        raise ConfigError(f"hint.encoder: {path} is not an encoder-only model ({encoder.config.model_type})")
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # BERT's [CLS] pooler: the generator reads every token's final state
    return encoder, AutoTokenizer.from_pretrained(path, local_files_only=True)
