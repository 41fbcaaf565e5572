from __future__ import annotations

import logging

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import ByT5Tokenizer, PreTrainedTokenizerFast

from lmadapt.data.formats import Conversation
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import (
    encode_prompt,
    encode_text,
    tokenize_all,
    tokenize_causal,
    tokenize_seq2seq,
)
from lmadapt.errors import ConfigError, DataError

CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Héllo!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]
M = [-100]


def byte_ids(text: str) -> list[int]:
    """ByT5 ids of plain text: UTF-8 bytes shifted past pad/eos/unk."""
    return [b + 3 for b in text.encode()]


@pytest.fixture
def byt5():
    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def bpe():
    """A small byte-level BPE with bos/eos/pad, trained here (no downloads)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(
        ["<|user|>\nHi there\n<|assistant|>\nHello, how are you?</s>\n"] * 20, trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def test_byt5_tulu_labels_are_exactly_the_replies_plus_eos(byt5):
    example = tokenize_causal(CONVERSATION, get_template("tulu", byt5), byt5, max_length=1000)
    prompt1 = byte_ids("<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\n")
    between = byte_ids("\n<|user|>\n2+2?\n<|assistant|>\n")
    reply1, reply2 = [*byte_ids("Héllo!"), 1], [*byte_ids("4"), 1]
    assert example.input_ids == prompt1 + reply1 + between + reply2 + byte_ids("\n")
    assert example.labels == M * len(prompt1) + reply1 + M * len(between) + reply2 + M
    assert [label for label in example.labels if label != -100] == [*byte_ids("Héllo!"), 1, *byte_ids("4"), 1]


def test_byt5_chatml_trains_content_and_im_end_without_eos(byt5):
    example = tokenize_causal(CONVERSATION[1:3], get_template("chatml", byt5), byt5, max_length=1000)
    start, end = byt5.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])  # added as special tokens
    prompt = [start, *byte_ids("user\nHi"), end, *byte_ids("\n"), start, *byte_ids("assistant\n")]
    reply = [*byte_ids("Héllo!"), end]
    assert example.input_ids == prompt + reply + byte_ids("\n")
    assert example.labels == M * len(prompt) + reply + M
    assert 1 not in example.input_ids


def test_encode_text_keeps_whitespace_around_added_tokens(byt5):
    # ByT5's own encode strips the whitespace next to "</s>"
    assert encode_text("a </s> b", byt5) == [*byte_ids("a "), 1, *byte_ids(" b")]


def test_bos_once_and_one_trained_eos_per_reply(bpe):
    template = get_template("tulu", bpe)
    example = tokenize_causal(CONVERSATION, template, bpe, max_length=1000)
    bos, eos = bpe.bos_token_id, bpe.eos_token_id
    assert example.input_ids[0] == bos and example.input_ids.count(bos) == 1
    assert example.labels[0] == -100
    eos_positions = [i for i, token in enumerate(example.input_ids) if token == eos]
    assert len(eos_positions) == 2
    assert all(example.labels[i] == eos for i in eos_positions)
    assert template.render(CONVERSATION).startswith("<s>")  # the saved template reproduces the BOS
    assert bpe.decode(example.input_ids) == template.render(CONVERSATION)
    trained = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    assert bpe.decode(trained) == "Héllo!</s>4</s>"


def test_template_that_emits_bos_gets_no_second_one(bpe):
    bpe_with_template = PreTrainedTokenizerFast(
        tokenizer_object=bpe.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    bpe_with_template.chat_template = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
        "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    )
    template = get_template("tokenizer", bpe_with_template)
    example = tokenize_causal(CONVERSATION[1:], template, bpe_with_template, max_length=1000)
    assert example.input_ids[0] == bpe.bos_token_id
    assert example.input_ids.count(bpe.bos_token_id) == 1
    assert example.input_ids.count(bpe.eos_token_id) == 2
    assert bpe.decode(example.input_ids) == "<s>[INST] Hi [/INST] Héllo!</s>[INST] 2+2? [/INST] 4</s>"


def test_encode_prompt_matches_the_training_prefix(bpe):
    template = get_template("tulu", bpe)
    example = tokenize_causal(CONVERSATION[:3], template, bpe, max_length=1000)
    prompt = encode_prompt(CONVERSATION[:2], template, bpe)
    first_trained = next(i for i, label in enumerate(example.labels) if label != -100)
    assert prompt == example.input_ids[:first_trained]


SHORT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "abcdef"}]
SHORT_PROMPT = len(byte_ids("<|user|>\nHi\n<|assistant|>\n"))
SHORT_LENGTH = SHORT_PROMPT + 6 + 1 + 1  # reply, eos, newline


def test_truncate_cuts_from_the_right(byt5):
    template = get_template("tulu", byt5)
    full = tokenize_causal(SHORT, template, byt5, max_length=SHORT_LENGTH)
    assert len(full.input_ids) == SHORT_LENGTH
    cut = tokenize_causal(SHORT, template, byt5, max_length=SHORT_PROMPT + 2)
    assert cut.input_ids == full.input_ids[: SHORT_PROMPT + 2]
    assert cut.labels == M * SHORT_PROMPT + byte_ids("ab")
    assert tokenize_causal(SHORT, template, byt5, max_length=SHORT_PROMPT) is None  # nothing trained left


def test_drop_drops_only_longer_examples(byt5):
    template = get_template("tulu", byt5)
    assert tokenize_causal(SHORT, template, byt5, SHORT_LENGTH, truncation="drop") is not None
    assert tokenize_causal(SHORT, template, byt5, SHORT_LENGTH - 1, truncation="drop") is None


def test_tokenize_all_counts_and_logs(byt5, caplog):
    template = get_template("tulu", byt5)
    long_prompt = [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]
    conversations = [Conversation(m, "d.jsonl", i + 1) for i, m in enumerate([SHORT, SHORT, long_prompt])]
    with caplog.at_level(logging.INFO, logger="lmadapt"):
        examples, stats = tokenize_all(conversations, template, byt5, max_length=SHORT_LENGTH - 1)
    assert (stats.total, stats.truncated, stats.dropped) == (3, 2, 1)
    assert [len(e.input_ids) for e in examples] == [SHORT_LENGTH - 1] * 2
    assert "2 truncated, 1 dropped" in caplog.text
    examples, stats = tokenize_all(conversations, template, byt5, max_length=SHORT_LENGTH, truncation="drop")
    assert (stats.total, stats.truncated, stats.dropped) == (3, 0, 1)
    assert len(examples) == 2


def test_tokenize_all_names_the_record_when_the_template_fails(byt5):
    byt5.chat_template = "{{ raise_exception('unsupported') }}"
    template = get_template("tokenizer", byt5)
    with pytest.raises(DataError) as error:
        tokenize_all([Conversation(SHORT, "d.jsonl", 4)], template, byt5, max_length=100)
    assert (error.value.path, error.value.line) == ("d.jsonl", 4)
    assert "unsupported" in str(error.value)


def test_bad_options_are_config_errors(byt5):
    template = get_template("tulu", byt5)
    with pytest.raises(ConfigError, match="truncation"):
        tokenize_causal(SHORT, template, byt5, 10, truncation="left")
    with pytest.raises(ConfigError, match="kind"):
        tokenize_all([], template, byt5, 10, kind="encoder")


def test_seq2seq_source_is_the_prompt_and_labels_the_last_reply(byt5):
    template = get_template("tulu", byt5)
    example = tokenize_seq2seq(CONVERSATION, template, byt5, max_source_length=1000, max_target_length=100)
    prompt = "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\nHéllo!</s>\n<|user|>\n2+2?\n<|assistant|>\n"
    head, tail = prompt.split("</s>")
    assert example.input_ids == [*byte_ids(head), 1, *byte_ids(tail), 1]
    assert example.labels == [*byte_ids("4"), 1]


def test_seq2seq_truncates_source_from_the_left_and_target_from_the_right(byt5):
    template = get_template("tulu", byt5)
    example = tokenize_seq2seq(SHORT, template, byt5, max_source_length=6, max_target_length=3)
    assert example.input_ids == [*byte_ids("<|user|>\nHi\n<|assistant|>\n")[-5:], 1]
    assert example.labels == byte_ids("abc")
    examples, stats = tokenize_all(
        [Conversation(SHORT, "d", 1)], template, byt5, max_length=6, kind="seq2seq", max_target_length=3
    )
    assert examples == [example] and (stats.truncated, stats.dropped) == (1, 0)
    assert tokenize_seq2seq(SHORT, template, byt5, 6, 100, truncation="drop") is None
    assert tokenize_seq2seq(SHORT, template, byt5, 100, 3, truncation="drop") is None
    assert tokenize_seq2seq(SHORT, template, byt5, SHORT_PROMPT + 1, 7, truncation="drop") is not None


def test_seq2seq_with_bos_tokenizer_adds_bos_and_eos_once(bpe):
    template = get_template("tulu", bpe)
    example = tokenize_seq2seq(SHORT, template, bpe, max_source_length=5, max_target_length=100)
    assert example.input_ids[0] == bpe.bos_token_id and example.input_ids[-1] == bpe.eos_token_id
    assert len(example.input_ids) == 5
    assert example.input_ids[1:-1] == encode_text("<|user|>\nHi\n<|assistant|>\n", bpe)[-3:]
    assert example.labels == [*encode_text("abcdef", bpe), bpe.eos_token_id]
    assert encode_prompt(SHORT[:1], template, bpe, kind="seq2seq")[-4:] == example.input_ids[-4:]
