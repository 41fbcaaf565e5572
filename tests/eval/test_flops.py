from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    ByT5Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from lmadapt.data.superni import EvalInstance
from lmadapt.errors import LmadaptError
from lmadapt.eval.flops import (
    InstanceTokens,
    ModelShape,
    _decode_steps,
    compare_instruction_handling,
    count_forward_flops,
    decoder_flops,
    evaluation_flops,
    forward_flops,
    generation_flops,
    instance_tokens,
    prefix_flops,
)

VOCAB = 300


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: K/V projections are narrower
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_t5() -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=VOCAB,
        d_model=48,
        d_kv=16,  # heads x d_kv != d_model, as in T5 v1.1 XL
        d_ff=80,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
    )
    return GPT2LMHeadModel(config).eval()


def relative_error(analytic: int, counted: int) -> float:
    return abs(analytic - counted) / counted


@pytest.mark.parametrize("build", [tiny_llama, tiny_t5, tiny_gpt2])
def test_analytic_forward_matches_flop_counter(build) -> None:
    torch.manual_seed(0)
    model = build()
    shape = ModelShape.from_config(model.config)
    input_ids = torch.randint(3, VOCAB, (1, 57))
    counted = count_forward_flops(model, input_ids, decoder_tokens=5)
    assert relative_error(forward_flops(shape, 57, decoder_tokens=5), counted) < 0.10
    assert model.config._attn_implementation == "sdpa"  # restored after counting with eager attention


@pytest.mark.parametrize("build", [tiny_llama, tiny_t5])
def test_analytic_generation_matches_flop_counter(build) -> None:
    torch.manual_seed(0)
    model = build()
    model.set_attn_implementation("eager")  # FlopCounterMode does not see the CPU SDPA kernel
    shape = ModelShape.from_config(model.config)
    input_ids = torch.randint(3, VOCAB, (1, 40))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.generate(input_ids, max_new_tokens=9, min_new_tokens=9, do_sample=False, pad_token_id=0)
    assert relative_error(generation_flops(shape, 40, 9), counter.get_total_flops()) < 0.10


def test_decoder_flops_by_hand() -> None:
    shape = ModelShape(False, 4, 1, 0, 1, 1, 4, 8, 3, 10)
    # Per token: projections 2*4*(4+4+4+4) = 128, MLP 2*3*4*8 = 192. Attention: 2 queries x 5 keys x
    # 4 (QK and AV, 2 FLOPs each) x head_dim 4 = 160. Logits: 2*4*10 per position.
    assert decoder_flops(shape, 2, past_tokens=3) == 2 * 320 + 160 + 2 * 80
    assert decoder_flops(shape, 2, past_tokens=3, logit_tokens=0) == 2 * 320 + 160
    assert prefix_flops(shape, 2) == decoder_flops(shape, 2, logit_tokens=0)


def test_decode_steps_closed_form_equals_the_sum() -> None:
    for shape in (ModelShape.from_config(tiny_llama().config), ModelShape.from_config(tiny_t5().config)):
        looped = sum(decoder_flops(shape, 1, 7 + s, 1, cross_tokens=5) for s in range(6))
        assert _decode_steps(shape, 6, 7, 5) == looped
        assert _decode_steps(shape, 0, 7, 5) == 0


def test_instruction_once_saves_the_repeated_instruction() -> None:
    shape = ModelShape.from_config(tiny_llama().config)
    tokens = [InstanceTokens(task, 200, 20, 5) for task in ("a", "b") for _ in range(10)]
    concat = evaluation_flops(shape, tokens, instruction_once=False)
    once = evaluation_flops(shape, tokens, instruction_once=True)
    assert concat.instruction == 0
    assert concat.total == 20 * generation_flops(shape, 220, 5)
    assert once.instruction == 2 * prefix_flops(shape, 200)
    assert once.total == once.instruction + 20 * generation_flops(shape, 20, 5, cached_tokens=200)
    assert once.per_instance == once.total / 20
    # Without attention terms this is HINT's N*n*(t+i) vs N*(t+n*i); attention keeps it near that.
    ratio = compare_instruction_handling(shape, tokens)["instruction_once_over_concatenation"]
    assert ratio == once.total / concat.total
    assert 0.1 < ratio < 0.3
    no_instruction = [InstanceTokens("a", 0, 20, 5)] * 3
    assert (
        evaluation_flops(shape, no_instruction, True).total
        == evaluation_flops(shape, no_instruction, False).total
    )


def test_encoder_decoder_instruction_once_cross_attends_to_the_instruction() -> None:
    shape = ModelShape.from_config(tiny_t5().config)
    with_instruction = generation_flops(shape, 20, 5, cached_tokens=200)
    assert generation_flops(shape, 20, 5) < with_instruction < generation_flops(shape, 220, 5)


def test_model_shapes_from_configs() -> None:
    llama = ModelShape.from_config(tiny_llama().config)
    assert (llama.num_heads, llama.num_kv_heads, llama.head_dim, llama.mlp_matrices) == (4, 2, 16, 3)
    t5 = ModelShape.from_config(tiny_t5().config)
    assert (t5.is_encoder_decoder, t5.num_encoder_layers, t5.head_dim, t5.mlp_matrices) == (True, 2, 16, 3)
    gpt2 = ModelShape.from_config(tiny_gpt2().config)
    assert (gpt2.intermediate_size, gpt2.mlp_matrices, gpt2.num_kv_heads) == (128, 2, 4)
    with pytest.raises(LmadaptError, match="does not know model type 'bert'"):
        ModelShape.from_config(type("Cfg", (), {"model_type": "bert", "is_encoder_decoder": False})())


def test_instance_tokens_count_each_part() -> None:
    tokenizer = ByT5Tokenizer()  # one token per byte
    instance = EvalInstance("a-0", "a", "Cat", "default", "Definition: x.\n\n", "hi", "unused", ["ok"])
    counts = instance_tokens(tokenizer, [instance, instance], ["four", None], max_new_tokens=3)
    input_part = len("Now complete the following example -\nInput: hi.\nOutput: ")
    assert counts[0] == InstanceTokens("a", len("Definition: x.\n\n"), input_part, 3)  # 4 + EOS, capped at 3
    assert counts[1].output == 1  # an empty prediction still generated EOS
