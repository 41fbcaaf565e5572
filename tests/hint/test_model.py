from __future__ import annotations

import pytest
import torch

from lmadapt.config import HypernetworkConfig
from lmadapt.errors import LmadaptError
from lmadapt.hint.model import HintModel

ALL_KINDS = HypernetworkConfig(
    modules=["adapter", "prefix", "lora"], adapter_size=4, prefix_length=3, lora_rank=2
)


def _batch(kind: str):
    """Two examples with different input, instruction and target lengths (right-padded)."""
    inputs = [[5, 6, 7, 8, 9, 1], [11, 12, 1]]
    instructions = [[20, 21, 22, 23, 1], [30, 31, 1]]
    labels = [[40, 41, 1], [42, 1]] if kind == "seq2seq" else None
    return inputs, instructions, labels


def _pad(rows, value):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def _forward(model, inputs, instructions, labels, index=None):
    ids = _pad(inputs, 0)
    instr = _pad(instructions, 0)
    decoder = None if labels is None else model.prepare_decoder_input_ids_from_labels(_pad(labels, -100))
    return model(
        ids,
        (ids != 0).long(),
        instr,
        (instr != 0).long(),
        instruction_index=index,
        decoder_input_ids=decoder,
    ).logits


def _base_logits(base, inputs, labels):
    ids = _pad(inputs, 0)
    extra = {}
    if labels is not None:
        extra["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(labels=_pad(labels, -100))
    with torch.no_grad():
        return base(input_ids=ids, attention_mask=(ids != 0).long(), **extra).logits


def test_installed_but_inactive_hooks_leave_the_model_exact(make_model, family):
    base = make_model(family)
    inputs, _, labels = _batch("seq2seq" if family == "t5" else "causal")
    expected = _base_logits(base, inputs, labels)
    model = HintModel(base, ALL_KINDS)
    assert model.underlying.config._attn_implementation == "lmadapt_hint_sdpa"
    assert torch.equal(_base_logits(model.underlying, inputs, labels), expected)


def test_zero_adapters_and_lora_give_the_base_model(make_model, family, randomize):
    base = make_model(family)
    kind = "seq2seq" if family == "t5" else "causal"
    inputs, instructions, labels = _batch(kind)
    expected = _base_logits(base, inputs, labels)
    cfg = HypernetworkConfig(modules=["adapter", "lora"], adapter_size=4, lora_rank=2, fusion=False)
    model = HintModel(base, cfg)
    randomize(model.generator)
    with torch.no_grad():
        instr = _pad(instructions, 0)
        modules = model.generate_modules(instr, (instr != 0).long())
        assert all(t.abs().sum() > 0 for t in modules.values())  # the hooks really receive weights
        zero = {name: torch.zeros_like(t) for name, t in modules.items()}
        with model.injection.active(zero):
            got = _base_logits(model.underlying, inputs, labels)
        with model.injection.active(modules):
            changed = _base_logits(model.underlying, inputs, labels)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (changed - expected).abs().max() > 1e-3


def test_gradients_reach_the_generator_and_the_shared_encoder(make_model, family):
    model = HintModel(make_model(family), ALL_KINDS).train()
    inputs, instructions, labels = _batch("seq2seq" if family == "t5" else "causal")
    _forward(model, inputs, instructions, labels).square().mean().backward()
    gen = model.generator
    # Every module is closed by something that starts at zero (adapter up, LoRA B, the prefix gates of
    # every slot and head): those get gradients at once. Everything behind them (adapter down, LoRA A, the
    # prefix keys/values, the generator's queries and cross-attention) only after the first update,
    # exactly as zero-initialised LoRA B blocks LoRA A's gradient.
    assert (gen.prefix_gates.grad.abs() > 0).all()
    at_once = ("adapter_up", "adapter_up_bias", "lora_q_b", "lora_v_b")
    for name, head in gen.heads.items():
        assert (head[-1].weight.grad.abs().sum() > 0) == (name in at_once), name
    assert gen.queries.grad.abs().sum() == 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    _forward(model, inputs, instructions, labels).square().mean().backward()
    for tensor in [gen.queries, gen.attention.q.weight, gen.attention.k.weight, gen.attention.o.weight]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    for name, head in gen.heads.items():
        assert head[-1].weight.grad.abs().sum() > 0, name
    # The instruction is read by the underlying model's own encoder: its first layer learns from both paths.
    first = model.underlying.encoder.block[0] if family == "t5" else model.underlying.model.layers[0]
    assert next(first.parameters()).grad.abs().sum() > 0


def test_mixed_task_batch_equals_each_example_alone(make_model, family, randomize):
    kind = "seq2seq" if family == "t5" else "causal"
    model = HintModel(make_model(family), ALL_KINDS)
    randomize(model.generator, scale=0.2)
    inputs, instructions, labels = _batch(kind)
    with torch.no_grad():
        together = _forward(model, inputs, instructions, labels)
        for i in range(2):
            alone = _forward(
                model,
                inputs[i : i + 1],
                instructions[i : i + 1],
                None if labels is None else labels[i : i + 1],
            )
            length = len(inputs[i]) if labels is None else len(labels[i])
            torch.testing.assert_close(together[i, :length], alone[0, :length], atol=1e-5, rtol=1e-5)
        # Examples sharing an instruction can point at one encoded copy of it.
        shared = _forward(
            model,
            inputs + inputs[:1],
            instructions,
            None if labels is None else labels + labels[:1],
            index=torch.tensor([0, 1, 0]),
        )
        torch.testing.assert_close(shared[:2], together, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shared[2], together[0], atol=1e-5, rtol=1e-5)
    assert model.hypernetwork_passes == 4


def test_separate_encoder_starts_as_a_plain_copy_without_modules(make_model, family):
    torch.manual_seed(3)
    shared = HintModel(make_model(family), ALL_KINDS)
    torch.manual_seed(3)
    separate = HintModel(
        make_model(family), HypernetworkConfig(**{**ALL_KINDS.__dict__, "encoder": "separate"})
    )
    instr = torch.tensor([[20, 21, 22, 1]])
    with torch.no_grad():
        a = shared.generate_modules(instr, torch.ones_like(instr))
        b = separate.generate_modules(instr, torch.ones_like(instr))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    assert any(k.startswith("instruction_encoder.") for k in separate.hypernetwork_state())
    assert not any(k.startswith("instruction_encoder.") for k in shared.hypernetwork_state())


def test_frozen_underlying_model_trains_only_the_hypernetwork(make_model):
    model = HintModel(
        make_model("llama"), HypernetworkConfig(freeze_underlying=True, adapter_size=4, prefix_length=2)
    )
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"generator"}


# Fresh HINT with fusion must be the fused baseline: every module kind starts as a no-op.
AT_INIT = {
    "default": HypernetworkConfig(adapter_size=4, prefix_length=3),  # adapters + prefixes
    "all": ALL_KINDS,
}


def _fused_context(base, instruction: list[int], inputs: list[int]) -> dict:
    """How the plain model reads `instruction` as cached context for `inputs` (unpadded, batch 1):
    decoder-only, [instruction; input] as one sequence; T5, the decoder cross-attending over [encoded
    instruction; encoded input]."""
    if not base.config.is_encoder_decoder:
        return {"input_ids": torch.tensor([instruction + inputs])}
    from transformers.modeling_outputs import BaseModelOutput

    encode = lambda ids: base.encoder(input_ids=torch.tensor([ids])).last_hidden_state  # noqa: E731
    states = torch.cat([encode(instruction), encode(inputs)], dim=1)
    return {
        "encoder_outputs": BaseModelOutput(last_hidden_state=states),
        "attention_mask": torch.ones(states.shape[:2], dtype=torch.long),
    }


def _fused_baseline_logits(base, instruction, inputs, labels):
    """Logits of the input positions (decoder-only) or of the target positions (T5)."""
    context = _fused_context(base, instruction, inputs)
    if labels is None:
        return base(**context).logits[0, len(instruction) :]
    decoder = base.prepare_decoder_input_ids_from_labels(labels=torch.tensor([labels]))
    return base(**context, decoder_input_ids=decoder).logits[0]


def _greedy(model, n: int, **inputs) -> torch.Tensor:
    """Exactly `n` new greedy tokens [n] (EOS suppressed)."""
    tokens = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)[0]
    return tokens[1:] if model.config.is_encoder_decoder else tokens[inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("modules", sorted(AT_INIT))
def test_fresh_hint_with_fusion_is_the_fused_baseline(make_model, family, modules):
    """Logits (a padded, mixed-instruction batch through HintModel.forward) and greedy generation of a
    freshly built HINT model equal the plain model's with the instruction as cached context."""
    base = make_model(family)
    kind = "seq2seq" if family == "t5" else "causal"
    inputs, instructions, labels = _batch(kind)
    with torch.no_grad():
        expected_logits = [
            _fused_baseline_logits(base, i, x, None if labels is None else labels[row])
            for row, (i, x) in enumerate(zip(instructions, inputs, strict=True))
        ]
        expected_tokens = [
            _greedy(base, 4, **_fused_context(base, i, x)) for i, x in zip(instructions, inputs, strict=True)
        ]
    model = HintModel(base, AT_INIT[modules])
    with torch.no_grad():
        got = _forward(model, inputs, instructions, labels)
        instr = _pad(instructions, 0)
        generated = model.generate_modules(instr, (instr != 0).long())
    prefixes = [t for name, t in generated.items() if name.endswith(("prefix_keys", "prefix_values"))]
    assert prefixes and all(t.abs().min() > 0 for t in prefixes)  # the prefixes are there, not zero
    for row, expected in enumerate(expected_logits):
        torch.testing.assert_close(got[row, : expected.shape[0]], expected, atol=1e-5, rtol=1e-5)
    # Greedy generation through the KV cache, one instruction at a time.
    for instruction, x, expected in zip(instructions, inputs, expected_tokens, strict=True):
        ids, instr = torch.tensor([x]), torch.tensor([instruction])
        with torch.no_grad():
            one = model.generate_modules(instr, torch.ones_like(instr))
            with model.injection.active(one):
                assert torch.equal(_greedy(model.underlying, 4, input_ids=ids), expected)


def test_decoder_only_fusion_generates_like_the_concatenated_prompt(make_model):
    """Through the inference path (lmadapt's generate: a left-padded batch) with fresh adapters + prefixes."""
    from transformers import ByT5Tokenizer

    from lmadapt.eval.generate import generate

    base, tok = make_model("llama"), ByT5Tokenizer()
    instruction, inputs = [20, 21, 22, 23, 24], [[5, 6, 7], [8, 9, 10, 11, 12]]
    expected = generate(base, tok, [instruction + x for x in inputs], max_new_tokens=5, batch_size=2)
    model = HintModel(base, AT_INIT["default"])
    instr = torch.tensor([instruction])
    with torch.no_grad():
        modules = model.generate_modules(instr, torch.ones_like(instr))
    with model.injection.active(modules):
        got = generate(model.underlying, tok, inputs, max_new_tokens=5, batch_size=2)  # left-padded batch
    assert got == expected and any(got)


def test_once_the_gates_move_the_prefixes_change_the_output(make_model, family):
    base = make_model(family)
    inputs, instructions, labels = _batch("seq2seq" if family == "t5" else "causal")
    model = HintModel(base, HypernetworkConfig(modules=["prefix"], prefix_length=3))
    with torch.no_grad():
        closed = _forward(model, inputs, instructions, labels)
        model.generator.prefix_gates.fill_(0.5)
        opened = _forward(model, inputs, instructions, labels)
        model.generator.heads["prefix_values"][-1].bias.add_(1.0)
        other = _forward(model, inputs, instructions, labels)
    assert (opened - closed).abs().max() > 1e-3
    assert (other - opened).abs().max() > 1e-3  # and what they add depends on the generated prefix


def test_cached_decoding_with_open_gates_matches_a_full_forward(make_model, family, randomize):
    """With the gates open, greedy generation through the KV cache picks, at every step, the argmax of
    one uncached forward pass over the whole sequence: the gated prefix is added on both paths alike."""
    model = HintModel(make_model(family), HypernetworkConfig(modules=["prefix"], prefix_length=3))
    randomize(model.generator, scale=0.3)
    assert model.generator.prefix_gates.abs().min() > 0
    instr, ids = torch.tensor([[20, 21, 22, 23, 1]]), torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        modules = model.generate_modules(instr, torch.ones_like(instr))
        with model.injection.active(modules):
            new = _greedy(model.underlying, 5, input_ids=ids)
            if family == "t5":
                start = torch.tensor([[model.underlying.config.decoder_start_token_id]])
                decoder = torch.cat([start, new[None, :-1]], dim=1)
                logits = model.underlying(input_ids=ids, decoder_input_ids=decoder).logits[0]
            else:
                sequence = torch.cat([ids, new[None, :-1]], dim=1)
                logits = model.underlying(input_ids=sequence).logits[0, ids.shape[1] - 1 :]
    logits[:, model.underlying.generation_config.eos_token_id] = float("-inf")  # as min_new_tokens does
    assert torch.equal(logits.argmax(-1), new)


def test_modules_with_a_prefix_but_no_gate_are_refused(make_model):
    model = HintModel(make_model("llama"), HypernetworkConfig(modules=["prefix"], prefix_length=2))
    instr = torch.tensor([[20, 21, 1]])
    with torch.no_grad():
        modules = model.generate_modules(instr, torch.ones_like(instr))
    ungated = {name: t for name, t in modules.items() if not name.endswith("prefix_gate")}
    with pytest.raises(LmadaptError, match="no prefix_gate"), model.injection.active(ungated):
        model.underlying(input_ids=torch.tensor([[5, 6]]))


def test_a_model_takes_one_injection(make_model):
    base = make_model("llama")
    HintModel(base, ALL_KINDS)
    with pytest.raises(LmadaptError, match="already carries"):
        HintModel(base, ALL_KINDS)
