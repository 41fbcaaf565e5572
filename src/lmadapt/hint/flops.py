"""Inference FLOPs of HINT, on the conventions of `lmadapt.eval.flops` (matmuls only, 2 per multiply-add,
greedy generation with a KV cache).

Per task, once: the hypernetwork pass (instruction encoder over the instruction, then the generator's
cross-attention and heads; the prefix gates are parameters, not generated). A pretrained encoder
(`hint.encoder: DIR`, BERT-style: four attention projections and two feed-forward matrices per layer)
reads the instruction in its own tokens; with fusion the underlying model also prefills it in its own.
Per instance: generating from the instance input alone, plus what the generated modules add for every
token that passes a slot: prefix attention (scores against P keys and their weighted values, 4 heads
head_dim P; its own softmax and the per-head gate are elementwise and count nothing, like every softmax
and mask here), parallel adapters (4 d r) and LoRA (2 r (d_in + d_out) per target). Instruction fusion
makes the instruction's states extra keys: decoder-only models attend to them like cached tokens;
encoder-decoders cross-attend to them and project them to cross-attention keys/values for every instance
(they are not cached across batches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from lmadapt.eval.flops import (
    InstanceTokens,
    ModelShape,
    cross_kv_flops,
    decoder_flops,
    encoder_flops,
    evaluation_flops,
    generation_flops,
)
from lmadapt.hint.model import HintModel


def _shape(model: HintModel) -> ModelShape:
    return ModelShape.from_config(model.underlying.config)


def pretrained_encoder_shape(config: Any) -> ModelShape:
    """The matmul sizes of a BERT-style encoder config (bidirectional, plain two-matrix feed-forward)."""
    heads = config.num_attention_heads
    return ModelShape(
        is_encoder_decoder=True,
        hidden_size=config.hidden_size,
        num_layers=0,
        num_encoder_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=config.hidden_size // heads,
        intermediate_size=config.intermediate_size,
        mlp_matrices=2,
        vocab_size=config.vocab_size,
    )


def hypernetwork_flops(model: HintModel, instruction_tokens: int, encoder_tokens: int = 0) -> int:
    """One hypernetwork pass over an instruction of `instruction_tokens` tokens (the underlying model's
    tokenizer) or, with a pretrained encoder, `encoder_tokens` of its tokenizer."""
    shape, t = _shape(model), instruction_tokens
    encode = encoder_flops(shape, t) if shape.is_encoder_decoder else decoder_flops(shape, t, logit_tokens=0)
    if model.pretrained_encoder is not None:
        own = encode if model.cfg.fusion else 0  # the fused states/keys are the underlying model's own
        t = encoder_tokens
        encode = own + encoder_flops(pretrained_encoder_shape(model.pretrained_encoder.config), t)
    gen = model.generator
    dim, n_queries = model.layout.hidden_size, gen.num_queries
    source = gen.attention.k.in_features
    attention = 2 * 2 * n_queries * dim * dim + 2 * 2 * t * source * dim + 4 * n_queries * t * dim
    heads = sum(len(k.slots) * k.count * 2 * (dim * dim + dim * k.width) for k in gen.kinds)
    return encode + attention + heads


def module_flops(
    model: HintModel, encoder_tokens: int, decoder_tokens: int, cross_key_tokens: int = 0
) -> int:
    """What the generated modules add to the underlying model's own FLOPs.

    `encoder_tokens`/`decoder_tokens` pass the encoder/decoder slots; `cross_key_tokens` encoder states
    go through the cross-attention key/value projections (LoRA on "k"/"v" of cross slots).
    """
    shape, cfg = _shape(model), model.cfg
    prefix = cfg.prefix_length if "prefix" in cfg.modules else 0
    total = 0
    for slot in model.layout.slots:
        tokens = encoder_tokens if slot.stack == "encoder" else decoder_tokens
        total += 4 * shape.num_heads * shape.head_dim * tokens * prefix  # scores and weighted values
        if "adapter" in cfg.modules and slot.feed_forward is not None:
            total += tokens * 4 * model.layout.hidden_size * cfg.adapter_size
        if "lora" not in cfg.modules:
            continue
        for target in cfg.lora_targets:
            linear = model.underlying.get_submodule(slot.projections[target])
            through = cross_key_tokens if slot.kind == "cross" and target in ("k", "v") else tokens
            total += through * 2 * cfg.lora_rank * (linear.in_features + linear.out_features)
    return total


def instance_flops(model: HintModel, instruction_tokens: int, input_tokens: int, output_tokens: int) -> int:
    """Generating `output_tokens` tokens from an instance input with the task's modules already compiled."""
    if output_tokens <= 0:
        return 0
    shape = _shape(model)
    fused = instruction_tokens if model.cfg.fusion else 0
    base = generation_flops(shape, input_tokens, output_tokens, cached_tokens=fused)
    if shape.is_encoder_decoder:
        base += cross_kv_flops(shape, fused)
        return base + module_flops(model, input_tokens, output_tokens, cross_key_tokens=fused + input_tokens)
    return base + module_flops(model, 0, input_tokens + output_tokens - 1)


def evaluation_report(
    model: HintModel,
    hint_tokens: Sequence[InstanceTokens],
    concatenated_tokens: Sequence[InstanceTokens],
    encoder_tokens: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """HINT's inference FLOPs for a set of instances next to concatenation's on the same underlying model.

    `hint_tokens`: instruction = hypernetwork input, input = the instance prompt, output = generated tokens.
    `concatenated_tokens`: the same instances as a concatenation model reads them. `encoder_tokens`: a
    pretrained encoder's token count of each task's instruction (keyed like `InstanceTokens.task`).
    """
    n = len(hint_tokens)
    longest: dict[str, int] = {}
    for x in hint_tokens:
        longest[x.task] = max(longest.get(x.task, 0), x.instruction)
    encoder_tokens = encoder_tokens or {}
    per_task = sum(hypernetwork_flops(model, t, encoder_tokens.get(task, 0)) for task, t in longest.items())
    per_instance = sum(instance_flops(model, x.instruction, x.input, x.output) for x in hint_tokens)
    concatenation = evaluation_flops(_shape(model), concatenated_tokens, instruction_once=False)
    hint_total = per_task + per_instance
    return {
        "num_instances": n,
        "num_tasks": len(longest),
        "hint": {
            "total": hint_total,
            "hypernetwork": per_task,
            "per_instance": hint_total / n,
            "hypernetwork_per_task": per_task / max(1, len(longest)),
        },
        "concatenation": asdict(concatenation),
        "concatenation_over_hint": concatenation.total / max(1, hint_total),
    }
