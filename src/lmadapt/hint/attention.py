"""Prefix keys/values inside Hugging Face attention, through transformers' public attention registry.

The underlying model's attention implementation is switched to a registered wrapper
("lmadapt_hint_sdpa" or "lmadapt_hint_eager") around the stock kernel. An attention module bound to a
slot may receive two kinds of extra keys/values, both added after rotary embeddings and the KV cache, so
neither ever sees them:

- a joint `Prefix` (decoder-only instruction fusion: the instruction's own keys/values) is prepended to
  the module's keys/values under the same softmax, with the attention mask (and T5's relative position
  bias, with zeros) extended to cover it: exactly a KV cache holding the instruction;
- a `GatedPrefix` (the generated HINT prefix) is attended under its own softmax and added to the output
  per head with weight tanh(gate): out = attention(q, K, V) + tanh(g) * softmax(q K_p^T * scale) V_p.

The gate is what makes HINT start exactly at its baseline. Under a joint softmax any prefix, even a
zero one, takes attention mass from the module's own keys; a separate softmax mixed in with tanh(g),
g = 0 at start (as in LLaMA-Adapter's zero-init attention), adds exactly nothing whatever the generator
emits, while d out / d g = softmax(q K_p^T * scale) V_p is not zero, so the gate opens from the first
step; once it has, the prefix keys/values receive gradients too (d out / d V_p carries a factor
tanh(g)), as LoRA's A does once B has moved. Both at once is impossible for any exact construction:
what makes the prefix's contribution zero for every input also zeroes the gradient of what it
multiplies. Every call without extras passes through untouched, so the swap alone changes no output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

log = logging.getLogger("lmadapt")

# Attribute set on an attention module: a zero-argument callable returning its SlotPrefixes or None.
PREFIX_LOOKUP = "_lmadapt_hint_prefix"
IMPLEMENTATIONS = {"sdpa": "lmadapt_hint_sdpa", "eager": "lmadapt_hint_eager"}


@dataclass(frozen=True)
class Prefix:
    """Keys/values joined to the module's own under one softmax.

    keys/values [B|1, kv_heads, P, head_dim]; mask [B|1, P] (True = attend) or None for all.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class GatedPrefix:
    """Keys/values attended under their own softmax, added per head with weight tanh(gate).

    keys/values [B|1, kv_heads, P, head_dim] (never padded); gate [B|1, heads].
    """

    keys: torch.Tensor
    values: torch.Tensor
    gate: torch.Tensor


@dataclass(frozen=True)
class SlotPrefixes:
    """What a slot's attention adds to its own keys/values (either may be None)."""

    joint: Prefix | None
    gated: GatedPrefix | None


def extend_with_prefix(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_bias: torch.Tensor | None,
    prefix: Prefix,
    is_causal: bool,
    boolean_mask: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keys, values, mask and position bias with the prefix in front.

    query [B, H, q, hd]; key/value [B, kv_heads, k, hd]; attention_mask None, or [B|1, 1|H, q, k] boolean
    (True = attend) or additive float; position_bias None or [B|1, H, q, k]. A missing mask becomes an
    explicit one (causal aligned to the last query when `is_causal`), because a kernel's built-in causal
    flag would misalign once the key axis is longer than the query axis. `boolean_mask` says which mask
    type to build when none is given (SDPA: boolean, eager: additive).
    Returns key/value [B, kv_heads, P + k, hd], mask [B, *, q, P + k], bias [*, H, q, P + k] or None.
    """
    batch, q_len, k_len = query.shape[0], query.shape[2], key.shape[2]
    p_keys = prefix.keys.to(key.dtype).expand(batch, -1, -1, -1)
    p_values = prefix.values.to(value.dtype).expand(batch, -1, -1, -1)
    p_len = p_keys.shape[2]
    if attention_mask is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        if is_causal:
            allowed = allowed.tril(diagonal=k_len - q_len)
        attention_mask = allowed if boolean_mask else _additive(allowed, query.dtype)
        attention_mask = attention_mask[None, None]
    heads = attention_mask.shape[1]
    prefix_allowed = torch.ones(batch, p_len, dtype=torch.bool, device=query.device)
    if prefix.mask is not None:
        prefix_allowed = prefix_allowed & prefix.mask.to(device=query.device, dtype=torch.bool)
    prefix_allowed = prefix_allowed[:, None, None, :].expand(batch, heads, q_len, p_len)
    if attention_mask.dtype != torch.bool:
        prefix_allowed = _additive(prefix_allowed, attention_mask.dtype)
    attention_mask = attention_mask.expand(batch, heads, q_len, k_len)
    mask = torch.cat([prefix_allowed, attention_mask], dim=-1)
    if position_bias is not None:
        zeros = position_bias.new_zeros((*position_bias.shape[:-1], p_len))
        position_bias = torch.cat([zeros, position_bias], dim=-1)
    return torch.cat([p_keys, key], dim=2), torch.cat([p_values, value], dim=2), mask, position_bias


def gated_prefix_attention(
    query: torch.Tensor, prefix: GatedPrefix, scaling: float, dropout: float = 0.0
) -> torch.Tensor:
    """tanh(gate_h) * softmax(q_h K_p^T * scaling) V_p for every query head h, in plain matmuls.

    query [B, H, q, hd]; prefix keys/values [B|1, kv_heads, P, hd], gate [B|1, H]; `dropout` on the
    attention weights (training only, as the stock kernels get it). Returns [B, q, H, hd], the layout of
    the kernels' outputs. Query heads that share a key/value head (grouped-query attention) are adjacent,
    so they are folded into the query axis instead of repeating the prefix.
    """
    batch, heads, q_len, head_dim = query.shape
    kv_heads = prefix.keys.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads * q_len, head_dim)
    scores = torch.matmul(grouped, prefix.keys.to(query.dtype).transpose(2, 3)) * scaling
    weights = torch.nn.functional.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
    attended = torch.matmul(weights, prefix.values.to(query.dtype)).view(batch, heads, q_len, head_dim)
    gate = torch.tanh(prefix.gate.to(query.dtype))[:, :, None, None]
    return (gate * attended).transpose(1, 2)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _stock_kernel(base: str, module: torch.nn.Module) -> Callable[..., Any]:
    if base == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    # Each model family defines its own eager kernel next to its attention class (T5's adds position bias).
    kernel = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if kernel is None:
        raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward to wrap")
    return kernel


def _wrapper(base: str) -> Callable[..., Any]:
    def attention(module, query, key, value, attention_mask, **kwargs):
        lookup = module.__dict__.get(PREFIX_LOOKUP)
        prefixes: SlotPrefixes | None = lookup() if lookup is not None else None
        if prefixes is not None and prefixes.joint is not None:
            key, value, attention_mask, bias = extend_with_prefix(
                query,
                key,
                value,
                attention_mask,
                kwargs.get("position_bias"),
                prefixes.joint,
                is_causal=bool(kwargs.get("is_causal", getattr(module, "is_causal", False))),
                boolean_mask=base == "sdpa",
            )
            if bias is not None:
                kwargs["position_bias"] = bias
        out, weights = _stock_kernel(base, module)(module, query, key, value, attention_mask, **kwargs)
        if prefixes is not None and prefixes.gated is not None:
            scaling = kwargs.get("scaling")
            scaling = query.shape[-1] ** -0.5 if scaling is None else scaling  # the kernels' default
            out = out + gated_prefix_attention(query, prefixes.gated, scaling, kwargs.get("dropout", 0.0))
        return out, weights

    return attention


def register() -> None:
    """Register the wrappers and their mask builders (idempotent)."""
    for base, name in IMPLEMENTATIONS.items():
        AttentionInterface.register(name, _wrapper(base))
        AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)


def use_prefix_attention(model: Any, base: str | None = None) -> None:
    """Switch `model` (and its sub-models) to the wrapper around `base` ("sdpa" or "eager").

    `base` None keeps the kernel the model uses now. Flash and flex attention are not wrapped: such
    models fall back to the SDPA wrapper.
    """
    register()
    current = model.config._attn_implementation
    if base is None:
        wrapped = {name: kernel for kernel, name in IMPLEMENTATIONS.items()}
        base = wrapped.get(current, current)
        if base not in IMPLEMENTATIONS:
            log.warning("HINT prefixes need sdpa or eager attention; switching %s to sdpa", current)
            base = "sdpa"
    model.set_attn_implementation(IMPLEMENTATIONS[base])
