from __future__ import annotations

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lmadapt.hint.attention import (
    IMPLEMENTATIONS,
    PREFIX_LOOKUP,
    GatedPrefix,
    Prefix,
    SlotPrefixes,
    register,
    use_prefix_attention,
)


def reference_attention(q, k, v, prefixes, allowed, bias, scale):
    """softmax(q [Kj; K]^T * scale + [0; bias], masked) [Vj; V] + tanh(g) softmax(q Kp^T * scale) Vp,
    written out with plain tensor ops (Kj, Vj: the joint prefix; Kp, Vp, g: the gated one).

    q [B, H, q, hd]; k, v [B, Hkv, k, hd]; allowed [B, q, k] bool; bias None or [1, H, q, k].
    Returns [B, q, H, hd] like the transformers kernels.
    """
    batch, heads, q_len, _ = q.shape
    repeat = heads // k.shape[1]

    def per_head(x):
        return x.expand(batch, -1, -1, -1).repeat_interleave(repeat, dim=1)

    joint = prefixes.joint or Prefix(k[:, :, :0], v[:, :, :0])
    keys = per_head(torch.cat([joint.keys.expand(batch, -1, -1, -1), k], dim=2))
    values = per_head(torch.cat([joint.values.expand(batch, -1, -1, -1), v], dim=2))
    p_len = joint.keys.shape[2]
    scores = q @ keys.transpose(2, 3) * scale
    if bias is not None:
        scores = scores + torch.cat([torch.zeros(*bias.shape[:-1], p_len), bias], dim=-1)
    p_allowed = torch.ones(batch, q_len, p_len, dtype=torch.bool)
    if joint.mask is not None:
        p_allowed = p_allowed & joint.mask[:, None, :]
    mask = torch.cat([p_allowed, allowed], dim=-1)[:, None]
    out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ values
    if prefixes.gated is not None:
        gated = prefixes.gated
        gated_scores = q @ per_head(gated.keys).transpose(2, 3) * scale
        gate = torch.tanh(gated.gate).expand(batch, -1)[:, :, None, None]
        out = out + gate * (gated_scores.softmax(-1) @ per_head(gated.values))
    return out.transpose(1, 2)


def _attention_module(make_model, family):
    model = make_model(family)
    if family == "llama":
        return model.model.layers[0].self_attn, model.config.num_key_value_heads, 0.125**0.5
    return model.decoder.block[0].layer[0].SelfAttention, 4, 1.0


@pytest.mark.parametrize("base", ["sdpa", "eager"])
@pytest.mark.parametrize("case", ["causal_no_mask", "decode_step", "padding_mask"])
@pytest.mark.parametrize("present", ["joint", "gated", "both"])
def test_prefix_attention_matches_reference(make_model, family, base, case, present):
    register()
    module, kv_heads, scale = _attention_module(make_model, family)
    gen = torch.Generator().manual_seed(0)
    batch, heads, hd, p_len = 2, 4, 8, 3
    q_len, k_len = {"causal_no_mask": (5, 5), "decode_step": (1, 6), "padding_mask": (4, 4)}[case]
    q = torch.randn(batch, heads, q_len, hd, generator=gen)
    k = torch.randn(batch, kv_heads, k_len, hd, generator=gen)
    v = torch.randn(batch, kv_heads, k_len, hd, generator=gen)
    joint = Prefix(
        torch.randn(1, kv_heads, p_len, hd, generator=gen),  # one row shared by the batch
        torch.randn(1, kv_heads, p_len, hd, generator=gen),
        torch.tensor([[True, True, False], [True, False, True]]),
    )
    gated = GatedPrefix(  # a row per example, and a gate per head
        torch.randn(batch, kv_heads, p_len + 1, hd, generator=gen),
        torch.randn(batch, kv_heads, p_len + 1, hd, generator=gen),
        torch.randn(1, heads, generator=gen),
    )
    prefixes = SlotPrefixes(joint if present != "gated" else None, gated if present != "joint" else None)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len).expand(batch, -1, -1).clone()
    if base == "eager" and prefixes.joint is None:
        # Without a joint prefix the call is the stock kernel's, and eager is causal only through a mask
        # (which transformers always passes it).
        allowed[:] = True
    mask = None
    if case == "padding_mask":
        allowed[1, :, -1] = False  # the second row's last key is padding
        mask = (
            allowed[:, None]
            if base == "sdpa"
            else torch.where(allowed[:, None], 0.0, torch.finfo(q.dtype).min)
        )
    bias = torch.randn(1, heads, q_len, k_len, generator=gen) if family == "t5" else None
    extra = {"position_bias": bias} if bias is not None else {}
    module.__dict__[PREFIX_LOOKUP] = lambda: prefixes
    out, _ = ALL_ATTENTION_FUNCTIONS[IMPLEMENTATIONS[base]](module, q, k, v, mask, scaling=scale, **extra)
    expected = reference_attention(q, k, v, prefixes, allowed, bias, scale)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_unbound_module_passes_straight_to_the_stock_kernel(make_model):
    register()
    module = make_model("llama").model.layers[0].self_attn
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 3, 8, generator=gen) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    wrapped, _ = ALL_ATTENTION_FUNCTIONS["lmadapt_hint_sdpa"](module, q, k, v, None, scaling=0.3)
    stock, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, None, scaling=0.3)
    assert torch.equal(wrapped, stock)


def test_llama_prefixes_are_added_after_rotary_embedding_and_are_not_rotated(make_model):
    model = make_model("llama")
    use_prefix_attention(model)
    attn = model.model.layers[0].self_attn
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 32, generator=gen)
    positions = torch.arange(5)[None]
    cos, sin = model.model.rotary_emb(x, positions)
    prefixes = SlotPrefixes(
        Prefix(torch.randn(1, 2, 3, 8, generator=gen), torch.randn(1, 2, 3, 8, generator=gen)),
        GatedPrefix(
            torch.randn(1, 2, 2, 8, generator=gen), torch.randn(1, 2, 2, 8, generator=gen), torch.ones(1, 4)
        ),
    )
    attn.__dict__[PREFIX_LOOKUP] = lambda: prefixes
    with torch.no_grad():
        out, _ = attn(x, position_embeddings=(cos, sin), attention_mask=None)
        q = attn.q_proj(x).view(1, 5, 4, 8).transpose(1, 2)
        k = attn.k_proj(x).view(1, 5, 2, 8).transpose(1, 2)
        v = attn.v_proj(x).view(1, 5, 2, 8).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        causal = torch.ones(5, 5, dtype=torch.bool).tril()[None]
        expected = attn.o_proj(
            reference_attention(q, k, v, prefixes, causal, None, 8**-0.5).reshape(1, 5, 32)
        )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_switching_implementation_keeps_the_kernel_family(make_model):
    model = make_model("t5")
    model.set_attn_implementation("eager")
    use_prefix_attention(model)
    assert model.config._attn_implementation == "lmadapt_hint_eager"
    use_prefix_attention(model, "sdpa")
    assert model.decoder.config._attn_implementation == "lmadapt_hint_sdpa"
