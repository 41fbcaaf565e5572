"""`HintModel`: the underlying Hugging Face model and the hypernetwork as one `nn.Module`.

One module is what the training engine optimises and checkpoints: `forward` reads a batch's
instructions with the hypernetwork, turns them into generated modules (one set per distinct
instruction, gathered to the examples that use it) and runs the underlying model with them active.
The hypernetwork is the instruction encoder (the underlying model's own, with generated modules
switched off, or a separate trained copy) plus the parameter generator.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from lmadapt.config import HypernetworkConfig
from lmadapt.errors import ConfigError
from lmadapt.hint.generator import ParameterGenerator
from lmadapt.hint.injection import Injection
from lmadapt.hint.layout import model_layout
from lmadapt.hint.modules import FUSION_MASK, FUSION_STATES, GeneratedModules, component_kinds, select_rows

UNDERLYING = "underlying."


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
            copy.deepcopy(_encoder_stack(underlying)) if cfg.encoder == "separate" else None
        )
        self.underlying = underlying
        kinds = component_kinds(underlying, self.layout, cfg)
        heads = cfg.generator_heads or self.layout.num_heads
        reference = next(underlying.parameters())
        self.generator = ParameterGenerator(kinds, self.layout, self.layout.hidden_size, heads).to(
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

    def generate_modules(self, ids: torch.Tensor, mask: torch.Tensor) -> GeneratedModules:
        """One hypernetwork pass: instructions ids/mask [B, T] -> generated modules with batch B."""
        self.hypernetwork_passes += 1
        states, layers = self.encode_instruction(ids, mask)
        modules = self.generator(states, mask)
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
    ) -> Any:
        """The underlying model's output (`.logits`) with each example's generated modules active.

        input_ids/attention_mask [B, S]: the instance inputs; instruction_ids/mask [U, T]: the distinct
        instructions; instruction_index [B]: which instruction row each example uses (default: row i);
        decoder_input_ids [B, L]: encoder-decoder only. Logits are [B, S, V] (decoder-only) or [B, L, V].
        """
        modules = self.generate_modules(instruction_ids, instruction_mask)
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

    def hypernetwork_state(self) -> dict[str, torch.Tensor]:
        """Weights of the generator (and the separate encoder), without the underlying model's."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(UNDERLYING)}

    def load_hypernetwork_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(UNDERLYING)]
        if missing or unexpected:
            raise ConfigError(
                f"hypernetwork weights do not fit this configuration (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )


def _encoder_stack(underlying: Any) -> nn.Module:
    """The stack that reads the instruction: T5's encoder, or a decoder-only model's body (no LM head)."""
    return underlying.encoder if underlying.config.is_encoder_decoder else underlying.model
