from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from lmadapt.data.collate import collate_causal, collate_packed
from lmadapt.data.tokenize import IGNORE_INDEX, TokenizedExample
from lmadapt.errors import LmadaptError
from lmadapt.losses.lm import token_nll_sum
from lmadapt.models.packing import block_causal_mask, packed_attention_inputs, varlen_kwargs
from lmadapt.models.tiny import tiny_llama
from lmadapt.train.batching import pack_rows
from lmadapt.train.objectives import LanguageModelling

VOCAB = 64
PACK_LENGTH = 48


def _examples(n: int = 9, seed: int = 0) -> list[TokenizedExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 10))]
        answer = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 20))]
        out.append(TokenizedExample(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
    return out


def _llama() -> torch.nn.Module:
    return tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=4)


def _qwen2() -> torch.nn.Module:
    # Grouped-query attention (4 query heads, 2 key/value heads) and q/k/v biases, unlike the Llama.
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return Qwen2ForCausalLM(config)


FAMILIES = {"llama": _llama, "qwen2": _qwen2}


def _model(family: str, impl: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[family]()
    model.set_attn_implementation(impl)
    return model.float().eval()


def _packed(examples: list[TokenizedExample]) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    rows = pack_rows([len(e.input_ids) for e in examples], PACK_LENGTH)
    assert any(len(row) > 1 for row in rows)  # the test packs several examples into a row
    return collate_packed([[examples[i] for i in row] for row in rows], pad_token_id=0), rows


def _isolated_inputs(model, batch):
    return packed_attention_inputs(model.config, batch["position_ids"], torch.float32)


def _per_example_logits(model, examples, rows, batch, inputs_fn) -> dict[int, torch.Tensor]:
    """Logits of each example, cut out of the packed forward pass."""
    logits = model(input_ids=batch["input_ids"], **inputs_fn(model, batch)).logits
    out = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(examples[i].input_ids)
            out[i] = logits[r, start : start + n]
            start += n
    return out


def _assert_packed_equals_unpacked(model, inputs_fn) -> None:
    examples = _examples()
    batch, rows = _packed(examples)
    packed = _per_example_logits(model, examples, rows, batch, inputs_fn)
    for i, example in enumerate(examples):
        alone = model(input_ids=torch.tensor([example.input_ids])).logits[0]
        torch.testing.assert_close(packed[i], alone, atol=1e-5, rtol=1e-5)
        labels = torch.tensor([example.labels])
        packed_loss, n = token_nll_sum(packed[i][None], labels, shift=True)
        alone_loss, n_alone = token_nll_sum(alone[None], labels, shift=True)
        assert n == n_alone
        torch.testing.assert_close(packed_loss, alone_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_logits_and_per_example_losses_equal_unpacked(family, impl):
    with torch.no_grad():
        _assert_packed_equals_unpacked(_model(family, impl), _isolated_inputs)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_gradient_equals_big_unpacked_batch(family, impl):
    examples = _examples()
    objective = LanguageModelling("causal")
    grads, losses, weights = [], [], []
    for batch in (_packed(examples)[0], collate_causal(examples, pad_token_id=0)):
        model = _model(family, impl).train()
        weight = objective.weight(batch)
        loss = objective.loss_sum(model, batch)
        (loss / weight).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        losses.append(loss.detach())
        weights.append(weight)
    assert weights[0] == weights[1]  # the same trained tokens: no label crosses an example boundary
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "leaky_inputs",
    [
        # What transformers does from position_ids alone when the KV cache is on (its default).
        pytest.param(lambda model, batch: {"position_ids": batch["position_ids"]}, id="position_ids+cache"),
        # A padding-style mask: restarted positions, but every token sees the whole row before it.
        pytest.param(
            lambda model, batch: {
                "position_ids": batch["position_ids"],
                "attention_mask": torch.ones_like(batch["input_ids"]),
                "use_cache": False,
            },
            id="2d-mask",
        ),
    ],
)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_equality_check_fails_when_isolation_is_lost(impl, leaky_inputs):
    model = _model("llama", impl)
    with torch.no_grad(), pytest.raises(AssertionError):
        _assert_packed_equals_unpacked(model, leaky_inputs)


def test_block_causal_mask_is_per_example_causal():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    expected = torch.zeros(6, 6, dtype=torch.bool)
    for start, end in ((0, 3), (3, 5), (5, 6)):
        expected[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
    assert torch.equal(block_causal_mask(positions)[0, 0], expected)


def test_flash_varlen_kwargs_mark_every_example_and_padding_tail():
    batch = collate_packed(
        [
            [TokenizedExample([5, 6, 7], [5, 6, 7]), TokenizedExample([8, 9], [8, 9])],
            [TokenizedExample([4], [4])],
        ],
        pad_token_id=0,
    )
    kwargs = varlen_kwargs(batch["position_ids"])
    # Rows flatten to 10 tokens: [3][2] | [1][4 padding].
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 10]
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 4 and isinstance(kwargs["max_length_q"], int)
    config = SimpleNamespace(_attn_implementation="flash_attention_2", sliding_window=None)
    inputs = packed_attention_inputs(config, batch["position_ids"], torch.bfloat16)
    assert "attention_mask" not in inputs and torch.equal(inputs["position_ids"], batch["position_ids"])
    assert inputs["cu_seq_lens_k"].tolist() == [0, 3, 5, 6, 10]


def test_varlen_boundaries_give_the_block_mask_attention():
    """What a varlen kernel computes from cu_seq_lens (attention within each span of the flattened
    tokens) equals masked attention with the block-diagonal mask."""
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 0, 1, 2]])
    q, k, v = (torch.randn(2, 4, 8, 16) for _ in range(3))  # (R, heads, T, head_dim)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(positions))
    cu = varlen_kwargs(positions)["cu_seq_lens_q"].tolist()
    flat = [x.transpose(0, 1).reshape(4, -1, 16) for x in (q, k, v)]  # (heads, R*T, head_dim)
    spans = [
        F.scaled_dot_product_attention(*(x[:, a:b] for x in flat), is_causal=True)
        for a, b in itertools.pairwise(cu)
    ]
    varlen = torch.cat(spans, dim=1).reshape(4, 2, 8, 16).transpose(0, 1)
    torch.testing.assert_close(varlen, masked, atol=1e-6, rtol=1e-6)


def test_unsupported_backend_and_too_long_example_for_window_are_refused():
    positions = torch.tensor([[0, 1, 2, 3]])
    flex = SimpleNamespace(_attn_implementation="flex_attention", sliding_window=None)
    with pytest.raises(LmadaptError, match="flex_attention"):
        packed_attention_inputs(flex, positions, torch.float32)
    windowed = SimpleNamespace(_attn_implementation="sdpa", sliding_window=3)
    with pytest.raises(LmadaptError, match="sliding window"):
        packed_attention_inputs(windowed, positions, torch.float32)
