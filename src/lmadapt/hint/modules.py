"""Generated modules: what the hypernetwork emits for every slot, and the shapes they take.

Generated modules are a flat dict of tensors named "<slot>.<kind>" (e.g. "decoder.2.self.adapter_up"),
each with a leading batch dimension: one row per instruction, or a single row shared by a whole batch.
A flat dict of tensors is also the on-disk format of a compiled instruction (one safetensors file).

The generator builds each tensor from `count` vectors of length `width` (one learned query each):

| kind | per slot | vectors x width | tensor |
|---|---|---|---|
| adapter_down | slots with a feed-forward block | r x d | [B, d, r] |
| adapter_down_bias | same | 1 x r | [B, r] |
| adapter_up | same | r x d | [B, r, d] |
| adapter_up_bias | same | 1 x d | [B, d] |
| prefix_keys, prefix_values | every slot | P x (kv_heads * head_dim) | [B, kv_heads, P, head_dim] |
| prefix_gate | every slot | learned, not generated (starts at 0) | [B, heads] |
| lora_<t>_a | every slot, target t | r x d_in | [B, d_in, r] |
| lora_<t>_b | every slot, target t | r x d_out | [B, r, d_out] |

Fusion tensors come from the instruction encoding rather than the generator: "fusion.states" [B, T, d]
and "fusion.mask" [B, T] (encoder-decoder), or "<slot>.fusion_keys"/"fusion_values" [B, kv_heads, T,
head_dim] with "fusion.mask" (decoder-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmadapt.config import HypernetworkConfig
from lmadapt.hint.layout import Layout

GeneratedModules = dict[str, torch.Tensor]

FUSION_STATES = "fusion.states"
FUSION_MASK = "fusion.mask"


@dataclass(frozen=True)
class ComponentKind:
    """One kind of generated tensor: `count` vectors of length `width` in each of `slots`."""

    name: str
    count: int
    width: int
    slots: tuple[str, ...]
    starts_at_zero: bool  # its head's output layer starts at zero, so the module starts as a no-op


def component_kinds(model: Any, layout: Layout, cfg: HypernetworkConfig) -> list[ComponentKind]:
    """The kinds `cfg.modules` asks for, in a fixed order (the order of the generator's queries)."""
    kinds: list[ComponentKind] = []
    d = layout.hidden_size
    if "adapter" in cfg.modules:
        with_ffn = tuple(s.name for s in layout.slots if s.feed_forward is not None)
        r = cfg.adapter_size
        kinds += [
            ComponentKind("adapter_down", r, d, with_ffn, False),
            ComponentKind("adapter_down_bias", 1, r, with_ffn, False),
            ComponentKind("adapter_up", r, d, with_ffn, True),
            ComponentKind("adapter_up_bias", 1, d, with_ffn, True),
        ]
    every = tuple(s.name for s in layout.slots)
    if "prefix" in cfg.modules:
        kinds += [
            ComponentKind("prefix_keys", cfg.prefix_length, layout.kv_width, every, False),
            ComponentKind("prefix_values", cfg.prefix_length, layout.kv_width, every, False),
        ]
    if "lora" in cfg.modules:
        for target in cfg.lora_targets:
            linear = model.get_submodule(layout.slots[0].projections[target])
            kinds += [
                ComponentKind(f"lora_{target}_a", cfg.lora_rank, linear.in_features, every, False),
                ComponentKind(f"lora_{target}_b", cfg.lora_rank, linear.out_features, every, True),
            ]
    return kinds


def assemble(kind: str, vectors: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Shape a slot's generated vectors [B, count, width] into its module tensor (see the module table)."""
    if kind in ("adapter_down", "lora_q_a", "lora_k_a", "lora_v_a", "lora_o_a"):
        return vectors.transpose(1, 2)
    if kind in ("adapter_down_bias", "adapter_up_bias"):
        return vectors[:, 0]
    if kind in ("prefix_keys", "prefix_values"):
        batch, length, _ = vectors.shape
        return vectors.view(batch, length, layout.kv_heads, layout.head_dim).transpose(1, 2)
    return vectors


def select_rows(modules: GeneratedModules, index: torch.Tensor) -> GeneratedModules:
    """Row `index[i]` of every tensor for batch row i: per-example modules from per-instruction ones."""
    return {name: tensor.index_select(0, index) for name, tensor in modules.items()}


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [B, T, d_in], a [B|1, d_in, r], b [B|1, r, d_out] -> x a b [B, T, d_out] (batched matmuls)."""
    return torch.matmul(torch.matmul(x, a.to(x.dtype)), b.to(x.dtype))


def parallel_adapter(
    x: torch.Tensor, down: torch.Tensor, down_bias: torch.Tensor, up: torch.Tensor, up_bias: torch.Tensor
) -> torch.Tensor:
    """W_up gelu(W_down x + b_down) + b_up, per example.

    x [B, T, d]; down [B|1, d, r]; down_bias [B|1, r]; up [B|1, r, d]; up_bias [B|1, d] -> [B, T, d].
    """
    dtype = x.dtype
    hidden = torch.matmul(x, down.to(dtype)) + down_bias.to(dtype).unsqueeze(1)
    return torch.matmul(torch.nn.functional.gelu(hidden), up.to(dtype)) + up_bias.to(dtype).unsqueeze(1)
