"""Tiny models built from configs, for tests and the demo (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    tokenizer: PreTrainedTokenizerBase | None = None,
    tie_word_embeddings: bool = False,
) -> LlamaForCausalLM:
    """A randomly initialised Llama; special-token ids are copied from `tokenizer` when given."""
    special = _special_ids(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_word_embeddings,
        **special,
    )
    return LlamaForCausalLM(config)


def tiny_t5(
    vocab_size: int,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 v1.1-style encoder-decoder (gated GELU, untied head)."""
    special = _special_ids(tokenizer)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=special.get("pad_token_id", 0),
        **special,
    )
    return T5ForConditionalGeneration(config)


def _special_ids(tokenizer: PreTrainedTokenizerBase | None) -> dict[str, int]:
    if tokenizer is None:
        return {}
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return {k: v for k, v in ids.items() if v is not None}


def word_level_tokenizer(
    corpus: Iterable[str], extra_special_tokens: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on `corpus`: one id per word or punctuation mark.

    Tiny models trained from scratch learn instructions far faster when every word is one token
    (a character-level prompt is 5-6x longer). Decoding joins tokens with single spaces, which
    SuperNI's normalised exact match ignores for single-space-separated answers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<pad>", "<unk>", "<s>", "</s>", *extra_special_tokens]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=list(extra_special_tokens),
    )
