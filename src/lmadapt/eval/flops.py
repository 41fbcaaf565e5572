"""Inference compute: analytic FLOPs from a model config, and measured FLOPs from a real forward.

What is counted: matrix multiplications only, at 2 FLOPs per multiply-add (projections, feed-forward,
LM head, attention scores and attention-weighted values). Norms, activations, softmax, position
encodings and embedding lookups are left out: they are small next to the matmuls, and FlopCounterMode
leaves them out too. Attention is counted for every query-key pair the kernel computes: a prefill of
n tokens after c cached ones computes n x (c + n) scores, because the causal mask does not skip work
in the eager or SDPA math kernels. Generation is counted as `model.generate` runs it with a KV cache:
the prompt once, then one token per step, with logits only for the positions that produce a token.

Two ways of processing a task's instruction can be compared (HINT's saving):
- concatenation: every instance's prompt is instruction + input (Tk-Instruct);
- instruction once: the instruction is processed once per task (decoder-only: its KV cache is reused;
  encoder-decoder: it is encoded once and the decoder cross-attends to [instruction; input], as HINT's
  instruction fusion does), and each instance processes only its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmadapt.data.superni import EvalInstance
from lmadapt.data.tasks import encode_instance
from lmadapt.errors import LmadaptError

# Model families whose feed-forward block has three matrices (gate, up, down) rather than two.
_GATED_MLP = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "phi3"}
)
_PLAIN_MLP = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "phi"})


@dataclass(frozen=True)
class ModelShape:
    """The sizes that determine a transformer's matmul FLOPs.

    `num_layers` counts decoder layers (all layers of a decoder-only model); `num_encoder_layers` is 0
    for decoder-only models. `mlp_matrices` is 3 for gated feed-forward blocks (SwiGLU, gated GELU).
    """

    is_encoder_decoder: bool
    hidden_size: int
    num_layers: int
    num_encoder_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    mlp_matrices: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a transformers config: T5-style encoder-decoders and Llama/GPT-2-style decoders."""
        model_type = getattr(config, "model_type", "")
        if getattr(config, "is_encoder_decoder", False):
            if not hasattr(config, "d_kv"):
                raise LmadaptError(f"FLOPs accounting supports T5-style encoder-decoders, not {model_type!r}")
            return cls(
                is_encoder_decoder=True,
                hidden_size=config.d_model,
                num_layers=config.num_decoder_layers,
                num_encoder_layers=config.num_layers,
                num_heads=config.num_heads,
                num_kv_heads=config.num_heads,
                head_dim=config.d_kv,
                intermediate_size=config.d_ff,
                mlp_matrices=3 if config.is_gated_act else 2,
                vocab_size=config.vocab_size,
            )
        if model_type not in _GATED_MLP | _PLAIN_MLP:
            known = ", ".join(sorted(_GATED_MLP | _PLAIN_MLP))
            raise LmadaptError(f"FLOPs accounting does not know model type {model_type!r} (known: {known})")
        hidden, heads = config.hidden_size, config.num_attention_heads
        # Llama-style, GPT-2 (None means 4 x hidden) and OPT names for the feed-forward width.
        sizes = (getattr(config, key, None) for key in ("intermediate_size", "n_inner", "ffn_dim"))
        intermediate = next((size for size in sizes if size), 4 * hidden)
        return cls(
            is_encoder_decoder=False,
            hidden_size=hidden,
            num_layers=config.num_hidden_layers,
            num_encoder_layers=0,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or hidden // heads,
            intermediate_size=intermediate,
            mlp_matrices=3 if model_type in _GATED_MLP else 2,
            vocab_size=config.vocab_size,
        )


# ---------------------------------------------------------------------------------------------
# Pieces: one pass of a stack over some tokens


def _self_attention_projections(shape: ModelShape) -> int:
    """Per token: query and output projections at full width, key and value at the (grouped) KV width."""
    q_width = shape.num_heads * shape.head_dim
    kv_width = shape.num_kv_heads * shape.head_dim
    return 2 * shape.hidden_size * (2 * q_width + 2 * kv_width)


def _attention_scores(shape: ModelShape, queries: int, keys: int) -> int:
    """Q @ K^T and weights @ V for `queries` x `keys` pairs, all heads."""
    return 4 * shape.num_heads * shape.head_dim * queries * keys


def _mlp(shape: ModelShape) -> int:
    return 2 * shape.mlp_matrices * shape.hidden_size * shape.intermediate_size


def lm_head_flops(shape: ModelShape, positions: int) -> int:
    return 2 * shape.hidden_size * shape.vocab_size * positions


def encoder_flops(shape: ModelShape, tokens: int) -> int:
    """One encoder pass over `tokens` tokens (bidirectional attention)."""
    per_token = _self_attention_projections(shape) + _mlp(shape)
    return shape.num_encoder_layers * (tokens * per_token + _attention_scores(shape, tokens, tokens))


def cross_kv_flops(shape: ModelShape, encoder_tokens: int) -> int:
    """Key and value projections of the encoder states, for every decoder layer (computed once, cached)."""
    return shape.num_layers * encoder_tokens * 2 * 2 * shape.hidden_size * shape.num_heads * shape.head_dim


def decoder_flops(
    shape: ModelShape,
    new_tokens: int,
    past_tokens: int = 0,
    logit_tokens: int | None = None,
    cross_tokens: int = 0,
) -> int:
    """One decoder pass over `new_tokens` tokens after `past_tokens` cached ones, with logits for
    `logit_tokens` positions (default: all new tokens). `cross_tokens` encoder states are cross-attended
    (encoder-decoder only; their key/value projections are `cross_kv_flops`)."""
    per_token = _self_attention_projections(shape) + _mlp(shape)
    attention = _attention_scores(shape, new_tokens, past_tokens + new_tokens)
    if shape.is_encoder_decoder:
        q_and_out = 2 * 2 * shape.hidden_size * shape.num_heads * shape.head_dim
        per_token += q_and_out
        attention += _attention_scores(shape, new_tokens, cross_tokens)
    logits = new_tokens if logit_tokens is None else logit_tokens
    return shape.num_layers * (new_tokens * per_token + attention) + lm_head_flops(shape, logits)


def forward_flops(shape: ModelShape, tokens: int, decoder_tokens: int = 1) -> int:
    """A plain `model(input_ids)` call without cache, logits everywhere: what `count_forward_flops` measures.

    Encoder-decoder: `tokens` encoder tokens and `decoder_tokens` decoder tokens.
    """
    if not shape.is_encoder_decoder:
        return decoder_flops(shape, tokens)
    encoder = encoder_flops(shape, tokens) + cross_kv_flops(shape, tokens)
    return encoder + decoder_flops(shape, decoder_tokens, cross_tokens=tokens)


# ---------------------------------------------------------------------------------------------
# Generation


def _decode_steps(shape: ModelShape, steps: int, past_before: int, cross_tokens: int) -> int:
    """`steps` one-token decoder passes; the first sees `past_before` cached tokens, each next one more.

    Closed form of the sum of `decoder_flops(shape, 1, past_before + s, 1, cross_tokens)` over s.
    """
    if steps <= 0:
        return 0
    one = decoder_flops(shape, 1, past_before, 1, cross_tokens)
    # Each later step attends to one more key than the one before: 4 * heads * head_dim per layer.
    growth = shape.num_layers * _attention_scores(shape, 1, 1)
    return steps * one + growth * steps * (steps - 1) // 2


def prefix_flops(shape: ModelShape, tokens: int) -> int:
    """Processing a shared prefix (the instruction) once, to be reused by every instance of a task.

    Decoder-only: a prefill that fills the KV cache (no logits). Encoder-decoder: encoding it and
    projecting its states to cross-attention keys and values.
    """
    if tokens <= 0:
        return 0
    if shape.is_encoder_decoder:
        return encoder_flops(shape, tokens) + cross_kv_flops(shape, tokens)
    return decoder_flops(shape, tokens, logit_tokens=0)


def generation_flops(
    shape: ModelShape, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> int:
    """Greedy generation of `output_tokens` tokens for a prompt of `prompt_tokens` tokens.

    `cached_tokens` were processed before (`prefix_flops`): a decoder-only model attends to them from its
    KV cache; an encoder-decoder's decoder cross-attends to them next to the encoded prompt.
    """
    if output_tokens <= 0:
        return 0
    if shape.is_encoder_decoder:
        encoder = encoder_flops(shape, prompt_tokens) + cross_kv_flops(shape, prompt_tokens)
        # The decoder starts from its start token: one step per output token.
        return encoder + _decode_steps(shape, output_tokens, 0, cached_tokens + prompt_tokens)
    prefill = decoder_flops(shape, prompt_tokens, cached_tokens, logit_tokens=1)
    # The last output token is never fed back.
    return prefill + _decode_steps(shape, output_tokens - 1, cached_tokens + prompt_tokens, 0)


@dataclass(frozen=True)
class InstanceTokens:
    """Token counts of one evaluation instance: its task's instruction, its own input, its output."""

    task: str
    instruction: int
    input: int
    output: int


@dataclass(frozen=True)
class ComputeCost:
    """Inference FLOPs of an evaluation; `instruction` is the part spent once per task."""

    mode: str
    total: int
    instruction: int
    per_instance: float


def evaluation_flops(
    shape: ModelShape, instances: Sequence[InstanceTokens], instruction_once: bool
) -> ComputeCost:
    """Total FLOPs to generate every instance's output.

    instruction_once=False: each prompt is instruction + input (concatenation). True: each task's
    instruction is processed once (`prefix_flops`, with the task's longest instruction length) and each
    instance then processes only its input.
    """
    if not instances:
        raise LmadaptError("evaluation_flops: no instances")
    instruction = 0
    if instruction_once:
        longest: dict[str, int] = {}
        for x in instances:
            longest[x.task] = max(longest.get(x.task, 0), x.instruction)
        instruction = sum(prefix_flops(shape, tokens) for tokens in longest.values())
        per_instance = [
            generation_flops(shape, x.input, x.output, cached_tokens=x.instruction) for x in instances
        ]
    else:
        per_instance = [generation_flops(shape, x.instruction + x.input, x.output) for x in instances]
    total = instruction + sum(per_instance)
    mode = "instruction_once" if instruction_once else "concatenation"
    return ComputeCost(mode=mode, total=total, instruction=instruction, per_instance=total / len(instances))


def compare_instruction_handling(shape: ModelShape, instances: Sequence[InstanceTokens]) -> dict[str, Any]:
    """Concatenation vs instruction-once costs of the same instances, and their ratio."""
    concatenation = evaluation_flops(shape, instances, instruction_once=False)
    once = evaluation_flops(shape, instances, instruction_once=True)
    n = len(instances)
    return {
        "model": asdict(shape),
        "num_instances": n,
        "mean_tokens": {
            "instruction": sum(x.instruction for x in instances) / n,
            "input": sum(x.input for x in instances) / n,
            "output": sum(x.output for x in instances) / n,
        },
        "concatenation": asdict(concatenation),
        "instruction_once": asdict(once),
        "instruction_once_over_concatenation": once.total / concatenation.total,
    }


# ---------------------------------------------------------------------------------------------
# Measurement


def count_forward_flops(model: torch.nn.Module, input_ids: torch.Tensor, decoder_tokens: int = 1) -> int:
    """Matmul FLOPs of one `model(input_ids)` forward, counted by torch's FlopCounterMode.

    input_ids: (batch, seq). The count runs with eager attention: FlopCounterMode does not see the CPU
    SDPA kernel. Encoder-decoders get `decoder_tokens` decoder input tokens.
    """
    config = model.config
    previous = config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    kwargs = {}
    if config.is_encoder_decoder:
        # Token values do not change the count; 0 is in every vocabulary.
        shape = (input_ids.shape[0], decoder_tokens)
        kwargs["decoder_input_ids"] = torch.zeros(shape, dtype=torch.long, device=input_ids.device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(input_ids=input_ids, **kwargs)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------
# A SuperNI evaluation's compute


def instance_tokens(
    tokenizer: Any, instances: Sequence[EvalInstance], predictions: Sequence[str | None], max_new_tokens: int
) -> list[InstanceTokens]:
    """Token counts of each instance's instruction, instance part (`encode_instance`) and output.

    Parts are tokenised separately without special tokens, so the concatenated prompt counts their sum.
    The output counts the prediction's tokens plus the EOS that ended it, capped at `max_new_tokens`.
    """

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    instruction_of: dict[str, int] = {}
    out = []
    for instance, prediction in zip(instances, predictions, strict=True):
        if instance.task not in instruction_of:
            instruction_of[instance.task] = count(instance.instruction_text)
        output = min(count(prediction or "") + 1, max_new_tokens)
        tokens = InstanceTokens(
            instance.task,
            instruction_of[instance.task],
            count(encode_instance(instance.instance_input)),
            output,
        )
        out.append(tokens)
    return out


def superni_flops(
    model: torch.nn.Module,
    tokenizer: Any,
    instances: Sequence[EvalInstance],
    predictions: Sequence[str | None],
    max_new_tokens: int,
    check_tokens: int = 256,
) -> dict[str, Any]:
    """`compare_instruction_handling` for an evaluation, plus a check of the analytic count against
    FlopCounterMode on one forward over the first prompt (at most `check_tokens` tokens)."""
    shape = ModelShape.from_config(model.config)
    result = compare_instruction_handling(
        shape, instance_tokens(tokenizer, instances, predictions, max_new_tokens)
    )
    ids = tokenizer(instances[0].prompt, return_tensors="pt")["input_ids"][:, :check_tokens]
    counted = count_forward_flops(model, ids.to(next(model.parameters()).device))
    result["check"] = {
        "tokens": ids.shape[1],
        "analytic": forward_flops(shape, ids.shape[1]),
        "counted": counted,
    }
    return result
