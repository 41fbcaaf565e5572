from __future__ import annotations

import pytest
import torch

from lmadapt.hint.generator import MIN_SOFTMAX_ROW, CrossAttention


def _reference(attention: CrossAttention, queries, states, mask) -> torch.Tensor:
    """Row by row over the real tokens only, in float64: no masking or padding tricks."""
    heads, out = attention.num_heads, []
    w = {name: getattr(attention, name) for name in ("q", "k", "v", "o")}
    for b in range(states.shape[0]):
        real = states[b][mask[b]].double()
        q = torch.nn.functional.linear(queries[b].double(), w["q"].weight.double(), w["q"].bias.double())
        k = torch.nn.functional.linear(real, w["k"].weight.double(), w["k"].bias.double())
        v = torch.nn.functional.linear(real, w["v"].weight.double(), w["v"].bias.double())
        split = [x.view(x.shape[0], heads, -1).transpose(0, 1) for x in (q, k, v)]
        weights = (split[0] @ split[1].transpose(1, 2) / split[0].shape[-1] ** 0.5).softmax(-1)
        mixed = (weights @ split[2]).transpose(0, 1).reshape(q.shape[0], -1)
        out.append(torch.nn.functional.linear(mixed, w["o"].weight.double(), w["o"].bias.double()))
    return torch.stack(out).float()


@pytest.mark.parametrize("length", [3, MIN_SOFTMAX_ROW - 1, MIN_SOFTMAX_ROW + 5])
def test_cross_attention_matches_a_row_by_row_reference(length):
    gen = torch.Generator().manual_seed(length)
    attention = CrossAttention(16, 12, num_heads=4)
    queries = torch.randn(5, 16, generator=gen)  # learned queries, shared by every row
    states = torch.randn(3, length, 12, generator=gen)
    mask = torch.ones(3, length, dtype=torch.bool)
    mask[1, length // 2 :] = False  # a padded instruction
    got = attention(queries, states, mask)
    expected = _reference(attention, queries.expand(3, -1, -1), states, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # Per-row queries give the same result as shared ones.
    torch.testing.assert_close(attention(queries.expand(3, -1, -1), states, mask), got)
