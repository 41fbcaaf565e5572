from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmadapt.config import HypernetworkConfig
from lmadapt.eval.flops import (
    InstanceTokens,
    ModelShape,
    cross_kv_flops,
    decoder_flops,
    encoder_flops,
    generation_flops,
)
from lmadapt.hint.attention import use_prefix_attention
from lmadapt.hint.flops import evaluation_report, hypernetwork_flops, instance_flops, module_flops
from lmadapt.hint.model import HintModel

CFG = HypernetworkConfig(modules=["adapter", "prefix", "lora"], adapter_size=4, prefix_length=3, lora_rank=2)


def _counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _model(make_model, family, randomize) -> HintModel:
    model = HintModel(make_model(family), CFG)
    randomize(model.generator, scale=0.1)
    use_prefix_attention(model.underlying, "eager")  # FlopCounterMode does not see the CPU SDPA kernel
    # FlopCounterMode's module tracker trips over no-grad views of parameters that require grad.
    return model.requires_grad_(False)


def test_hypernetwork_pass_matches_counted_flops(make_model, family, randomize):
    model = _model(make_model, family, randomize)
    ids = torch.arange(10, 17)[None]
    counted = _counted(lambda: model.generate_modules(ids, torch.ones_like(ids)))
    assert counted == hypernetwork_flops(model, 7)


def test_forward_with_modules_and_fusion_matches_counted_flops(make_model, family, randomize):
    model = _model(make_model, family, randomize)
    shape = ModelShape.from_config(model.underlying.config)
    instruction = torch.arange(10, 16)[None]  # 6 tokens
    with torch.no_grad():
        modules = model.generate_modules(instruction, torch.ones_like(instruction))
    ids = torch.arange(20, 25)[None]  # 5 tokens
    if family == "llama":
        expected = decoder_flops(shape, 5, past_tokens=6) + module_flops(model, 0, 5)
        run = lambda: model.underlying(input_ids=ids)  # noqa: E731
    else:
        decoder_ids = torch.zeros(1, 3, dtype=torch.long)
        expected = (
            encoder_flops(shape, 5)
            + cross_kv_flops(shape, 6 + 5)
            + decoder_flops(shape, 3, cross_tokens=6 + 5)
            + module_flops(model, 5, 3, cross_key_tokens=6 + 5)
        )
        run = lambda: model.underlying(input_ids=ids, decoder_input_ids=decoder_ids)  # noqa: E731
    with model.injection.active(modules):
        assert _counted(run) == expected
    assert module_flops(model, 0, 5) > 0


def test_generation_with_compiled_modules_matches_counted_flops(make_model, family, randomize):
    model = _model(make_model, family, randomize)
    instruction = torch.arange(10, 16)[None]
    with torch.no_grad():
        modules = model.generate_modules(instruction, torch.ones_like(instruction))
    ids = torch.arange(20, 25)[None]
    with model.injection.active(modules):
        counted = _counted(
            lambda: model.underlying.generate(
                input_ids=ids, min_new_tokens=4, max_new_tokens=4, do_sample=False
            )
        )
    assert counted == instance_flops(model, 6, 5, 4)


def test_report_compares_with_concatenation_and_amortises_the_hypernetwork(make_model, randomize):
    model = _model(make_model, "llama", randomize)
    shape = ModelShape.from_config(model.underlying.config)
    hint = [InstanceTokens("a", 40, 8, 3), InstanceTokens("a", 40, 6, 2), InstanceTokens("b", 30, 5, 1)]
    concat = [InstanceTokens(x.task, x.instruction - 1, x.input, x.output) for x in hint]
    report = evaluation_report(model, hint, concat)
    once = hypernetwork_flops(model, 40) + hypernetwork_flops(model, 30)
    per_instance = sum(instance_flops(model, x.instruction, x.input, x.output) for x in hint)
    assert report["hint"]["hypernetwork"] == once
    assert report["hint"]["per_instance"] == (once + per_instance) / 3
    concatenated = sum(generation_flops(shape, x.instruction + x.input, x.output) for x in concat)
    assert report["concatenation"]["total"] == concatenated
    assert report["concatenation_over_hint"] == concatenated / (once + per_instance)
