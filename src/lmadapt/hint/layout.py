"""Where generated modules go in an unmodified Hugging Face model: its attention "slots".

A slot is one attention block: T5-family models have one per encoder layer (self-attention) and two per
decoder layer (self- and cross-attention); Llama-family decoder-only models have one per layer. Each slot
names the attention module that receives prefix keys/values, the feed-forward block a parallel adapter
sits beside (decoder adapters use the self-attention slot, so cross-attention slots have none), and the
linear projections LoRA can target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmadapt.errors import ConfigError

Family = Literal["t5", "decoder_only"]

# LoRA target name -> projection attribute of the attention module, per family.
_PROJECTIONS: dict[str, dict[str, str]] = {
    "t5": {"q": "q", "k": "k", "v": "v", "o": "o"},
    "decoder_only": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"},
}


@dataclass(frozen=True)
class Slot:
    name: str  # "encoder.0.self", "decoder.3.cross", ...
    stack: Literal["encoder", "decoder"]
    kind: Literal["self", "cross"]
    attention: str  # module path of the attention block
    feed_forward: str | None  # module path of the feed-forward block; None: no adapter in this slot
    projections: dict[str, str]  # LoRA target ("q", "k", "v", "o") -> module path of that nn.Linear


@dataclass(frozen=True)
class Layout:
    family: Family
    slots: tuple[Slot, ...]
    hidden_size: int
    num_heads: int
    kv_heads: int  # heads of the keys/values (fewer than num_heads under grouped-query attention)
    head_dim: int

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def model_layout(model: Any) -> Layout:
    """The slots of a T5-family encoder-decoder or a Llama-family decoder-only model."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False) and hasattr(getattr(model, "encoder", None), "block"):
        return _t5_layout(model)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is not None and all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in layers):
        return _decoder_only_layout(model)
    raise ConfigError(
        f"HINT supports T5-family encoder-decoders and Llama-family decoder-only models, "
        f"not {getattr(config, 'model_type', type(model).__name__)!r}"
    )


def _slot(name: str, stack: str, kind: str, attention: str, ffn: str | None, family: Family) -> Slot:
    projections = {target: f"{attention}.{attr}" for target, attr in _PROJECTIONS[family].items()}
    return Slot(name, stack, kind, attention, ffn, projections)  # type: ignore[arg-type]


def _t5_layout(model: Any) -> Layout:
    config = model.config
    slots = []
    for i, block in enumerate(model.encoder.block):
        ffn = f"encoder.block.{i}.layer.{len(block.layer) - 1}.DenseReluDense"
        attention = f"encoder.block.{i}.layer.0.SelfAttention"
        slots.append(_slot(f"encoder.{i}.self", "encoder", "self", attention, ffn, "t5"))
    for i, block in enumerate(model.decoder.block):
        ffn = f"decoder.block.{i}.layer.{len(block.layer) - 1}.DenseReluDense"
        attention = f"decoder.block.{i}.layer.0.SelfAttention"
        slots.append(_slot(f"decoder.{i}.self", "decoder", "self", attention, ffn, "t5"))
        attention = f"decoder.block.{i}.layer.1.EncDecAttention"
        slots.append(_slot(f"decoder.{i}.cross", "decoder", "cross", attention, None, "t5"))
    return Layout("t5", tuple(slots), config.d_model, config.num_heads, config.num_heads, config.d_kv)


def _decoder_only_layout(model: Any) -> Layout:
    config = model.config
    slots = tuple(
        _slot(
            f"decoder.{i}.self",
            "decoder",
            "self",
            f"model.layers.{i}.self_attn",
            f"model.layers.{i}.mlp",
            "decoder_only",
        )
        for i in range(len(model.model.layers))
    )
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return Layout("decoder_only", slots, config.hidden_size, heads, kv_heads, head_dim)
