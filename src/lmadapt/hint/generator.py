"""The parameter generator: learned component queries cross-attend to the encoded instruction, and one
small MLP head per component kind turns each attended query into a vector of a module weight.

Queries are laid out kind by kind, then slot by slot, then component by component, so each kind's
queries are one contiguous block. As in HINT, the cross-attention has no layer norm and every output
is scaled by 1/sqrt(dim). The heads of kinds that close a module (adapter up-projection and its bias,
LoRA's B) start at zero, so adapters and LoRA start as no-ops. Prefixes are closed by a learned gate
instead (one per slot and attention head, the same for every instruction, starting at zero; see
`hint.attention`), emitted with the generated modules as "<slot>.prefix_gate".

Cost: the learned queries do not depend on the instruction, so they are projected once per pass, not
once per instruction row; and attention rows shorter than `MIN_SOFTMAX_ROW` are padded with masked
columns, because PyTorch's CPU softmax falls back to a scalar loop below one vector width (measured
3-13x slower per element at 14 columns than at 16 here; see benchmarks/hint_step_cost.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmadapt.hint.layout import Layout
from lmadapt.hint.modules import ComponentKind, GeneratedModules, assemble

MIN_SOFTMAX_ROW = 16  # AVX-512 floats per vector; shorter softmax rows take PyTorch's slow scalar path


class CrossAttention(nn.Module):
    """Multi-head attention of `dim`-wide queries over `source_dim`-wide states (plain matmuls)."""

    def __init__(self, dim: int, source_dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"generator width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(source_dim, dim)
        self.v = nn.Linear(source_dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """queries [Q, dim] (shared by every row) or [B, Q, dim], states [B, T, source_dim], mask [B, T]
        (True = real token) -> [B, Q, dim]."""
        batch, length = states.shape[:2]
        dim = self.q.out_features
        head_dim = dim // self.num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], -1, self.num_heads, head_dim).transpose(1, 2)

        q, k, v = heads(self.q(queries).expand(batch, -1, -1)), heads(self.k(states)), heads(self.v(states))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        pad = max(0, MIN_SOFTMAX_ROW - length)  # masked columns: exp(min - max) is exactly 0
        weights = F.pad(scores, (0, pad), value=torch.finfo(scores.dtype).min).softmax(dim=-1)
        mixed = torch.matmul(weights[..., :length], v)
        return self.o(mixed.transpose(1, 2).reshape(batch, -1, dim))


class ParameterGenerator(nn.Module):
    def __init__(self, kinds: list[ComponentKind], layout: Layout, source_dim: int, num_heads: int):
        super().__init__()
        dim = layout.hidden_size
        self.kinds = kinds
        self.layout = layout
        self.scale = 1.0 / math.sqrt(dim)
        total = sum(len(kind.slots) * kind.count for kind in kinds)
        self.queries = nn.Parameter(torch.randn(total, dim) * 0.02)
        self.attention = CrossAttention(dim, source_dim, num_heads)
        self.heads = nn.ModuleDict(
            {
                kind.name: nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, kind.width))
                for kind in kinds
            }
        )
        for kind in kinds:
            if kind.starts_at_zero:
                nn.init.zeros_(self.heads[kind.name][-1].weight)
                nn.init.zeros_(self.heads[kind.name][-1].bias)
        self.prefix_slots = next((kind.slots for kind in kinds if kind.name == "prefix_keys"), ())
        self.prefix_gates = (
            nn.Parameter(torch.zeros(len(self.prefix_slots), layout.num_heads)) if self.prefix_slots else None
        )

    @property
    def num_queries(self) -> int:
        return self.queries.shape[0]

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> GeneratedModules:
        """states [B, T, source_dim], mask [B, T] -> {"<slot>.<kind>": tensor with batch B}."""
        batch = states.shape[0]
        attended = self.attention(self.queries.to(states.dtype), states, mask)
        modules: GeneratedModules = {}
        start = 0
        for kind in self.kinds:
            n = len(kind.slots) * kind.count
            vectors = self.heads[kind.name](attended[:, start : start + n]) * self.scale
            vectors = vectors.view(batch, len(kind.slots), kind.count, kind.width)
            for j, slot in enumerate(kind.slots):
                modules[f"{slot}.{kind.name}"] = assemble(kind.name, vectors[:, j], self.layout)
            start += n
        for j, slot in enumerate(self.prefix_slots):
            modules[f"{slot}.prefix_gate"] = self.prefix_gates[j].to(states.dtype).expand(batch, -1)
        return modules
