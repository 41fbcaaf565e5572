from __future__ import annotations

import pytest
from transformers import ByT5Tokenizer

from lmadapt.data.superni import eval_instances
from lmadapt.data.tasks import Demonstration, Instance, PromptEncoding, Task, encode_prompt
from lmadapt.data.templates import TULU_JINJA, get_template
from lmadapt.data.tokenize import encode_prompt as encode_chat_prompt
from lmadapt.data.tokenize import tokenize_causal, tokenize_seq2seq
from lmadapt.errors import ConfigError
from lmadapt.eval.prompts import (
    PromptEncoder,
    chat_template_for,
    fit_demonstrations,
    fit_superni_prompts,
)
from lmadapt.models.tiny import word_level_tokenizer

WORDS = "Definition : say yes or no . Positive Negative Example 1 2 - Input Output Now complete the following"
WORDS += " example a b c d e f g h yes no"


@pytest.fixture(scope="module")
def words():
    """One token per word or punctuation mark, with BOS "<s>" and the tulu chat template."""
    tok = word_level_tokenizer([WORDS])
    tok.chat_template = TULU_JINJA
    return tok


def names(tok, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids)


def test_chat_template_modes(words) -> None:
    assert chat_template_for(words, "auto").jinja == TULU_JINJA
    assert chat_template_for(words, "on").jinja == TULU_JINJA
    assert chat_template_for(words, "off") is None
    byt5 = ByT5Tokenizer()
    assert chat_template_for(byt5, "auto") is None
    with pytest.raises(ConfigError, match="has none"):
        chat_template_for(byt5, "on")
    with pytest.raises(ConfigError, match="expected one of auto, on, off"):
        chat_template_for(words, "yes")


def test_chat_prompt_is_the_training_prompt_encoding(words) -> None:
    encoder = PromptEncoder(words, "causal", chat_template_for(words))
    text = "say yes or no . Input : a b"
    ids = encoder.encode(text)
    messages = [{"role": "user", "content": text}]
    assert ids == encode_chat_prompt(messages, get_template("tulu", words), words, "causal")
    assert names(words, ids) == ["<s>", "<|user|>", *text.split(), "<|assistant|>"]
    # Training puts exactly these ids in front of the reply.
    trained = tokenize_causal(
        [*messages, {"role": "assistant", "content": "yes"}], encoder.template, words, 99
    )
    assert trained.input_ids[: len(ids)] == ids


def test_plain_prompts_are_the_tokenizer_encoding() -> None:
    byt5 = ByT5Tokenizer()
    assert PromptEncoder(byt5, "causal").encode("ab") == [ord("a") + 3, ord("b") + 3]  # no trailing EOS
    assert PromptEncoder(byt5, "seq2seq").encode("ab") == [ord("a") + 3, ord("b") + 3, 1]


def test_cut_keeps_the_frame_and_the_end_for_decoder_only(words) -> None:
    encoder = PromptEncoder(words, "causal", chat_template_for(words))
    ids = encoder.encode("a b c d e f")
    assert names(words, encoder.cut(ids, 6)) == ["<s>", "<|user|>", "d", "e", "f", "<|assistant|>"]
    assert encoder.cut(ids, len(ids)) == ids
    with pytest.raises(ConfigError, match="leaves no room"):
        encoder.cut(ids, 3)


def test_cut_keeps_the_start_and_eos_for_encoder_decoder() -> None:
    byt5 = ByT5Tokenizer()
    seq2seq = PromptEncoder(byt5, "seq2seq")
    assert seq2seq.cut(seq2seq.encode("abcdef"), 4) == [*(ord(c) + 3 for c in "abc"), 1]
    causal = PromptEncoder(byt5, "causal")  # no BOS: the end of the text is all that is kept
    assert causal.cut(causal.encode("abcdef"), 4) == [ord(c) + 3 for c in "cdef"]


def test_reply_encoding_with_and_without_template(words) -> None:
    chat = PromptEncoder(words, "causal", chat_template_for(words))
    context, reply = chat.encode_with_reply("a b", "yes no")
    assert context == chat.encode("a b")  # the reply follows the exact generation prompt
    assert names(words, reply) == ["yes", "no"]  # the closing EOS is not part of the answer

    seq2seq = PromptEncoder(words, "seq2seq", chat_template_for(words))
    messages = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "yes"}]
    expected = tokenize_seq2seq(messages, seq2seq.template, words, 99, 99)
    assert seq2seq.encode_with_reply("a b", "yes") == (expected.input_ids, expected.labels[:-1])

    byt5 = ByT5Tokenizer()
    plain = PromptEncoder(byt5, "causal")
    assert plain.encode_with_reply("Q:", "ab") == ([ord(c) + 3 for c in "Q:"], [ord(c) + 3 for c in " ab"])
    assert PromptEncoder(byt5, "seq2seq").encode_with_reply("Q:", "ab") == (
        [ord("Q") + 3, ord(":") + 3, 1],
        [ord("a") + 3, ord("b") + 3],
    )


def task_with_demos(long_input: str) -> Task:
    return Task(
        name="t1",
        definition="say yes or no",
        positive_examples=[Demonstration("a b c", "yes"), Demonstration("d e f", "no")],
        negative_examples=[Demonstration("g h", "no")],
        instances=[Instance("t1-0", "a", ["yes"]), Instance("t1-1", long_input, ["no"])],
        categories=["Textual Entailment"],
    )


def test_demonstrations_are_kept_while_they_fit(words) -> None:
    task = task_with_demos("a b")
    encoding = PromptEncoding.parse("def+2pos+1neg")
    encoder = PromptEncoder(words, "causal")  # plain text: one id per word or mark, nothing added

    def length(spec: str) -> int:
        return len(words.tokenize(encode_prompt(task, "a", PromptEncoding.parse(spec))))

    instance = eval_instances([task], encoding)[0]
    for spec in ("def", "def+1pos", "def+2pos", "def+2pos+1neg"):
        # A limit that fits exactly this many demonstrations keeps exactly them.
        fitted = fit_demonstrations(task, instance, encoding, encoder, length(spec))
        assert fitted.prompt == encode_prompt(task, "a", PromptEncoding.parse(spec))
        assert fitted.instruction_text + "Now complete" in fitted.prompt
    # The second positive example does not fit, yet the (shorter) negative one is still tried, and fits.
    assert length("def+1pos+1neg") < length("def+2pos")
    fitted = fit_demonstrations(task, instance, encoding, encoder, length("def+1pos+1neg"))
    assert fitted.prompt == encode_prompt(task, "a", PromptEncoding.parse("def+1pos+1neg"))


def test_fit_superni_prompts_counts_what_it_shortened(words) -> None:
    task = task_with_demos("a b c d e f g h " * 10)
    encoding = PromptEncoding.parse("def+2pos")
    instances = eval_instances([task], encoding)
    encoder = PromptEncoder(words, "causal", chat_template_for(words))
    limit = len(encoder.encode(instances[0].prompt))  # the short instance fits with both examples
    fitted, ids, stats = fit_superni_prompts(instances, {"t1": task}, encoding, encoder, limit)
    assert (stats.demonstrations_dropped, stats.truncated) == (1, 1)
    assert fitted[0] == instances[0] and ids[0] == encoder.encode(instances[0].prompt)
    assert fitted[1].prompt == encode_prompt(task, task.instances[1].input, PromptEncoding.parse("def"))
    assert ids[1] == encoder.cut(encoder.encode(fitted[1].prompt), limit) and len(ids[1]) == limit
    assert names(words, ids[1])[:2] == ["<s>", "<|user|>"]
    assert names(words, ids[1])[-5:] == ["h", ".", "Output", ":", "<|assistant|>"]

    whole, ids, stats = fit_superni_prompts(instances, {"t1": task}, encoding, encoder, None)
    assert whole == instances and (stats.demonstrations_dropped, stats.truncated) == (0, 0)
    assert ids[1] == encoder.encode(instances[1].prompt)


def test_reply_start_follows_the_assistant_header() -> None:
    """Tulu's chat-format evaluations begin the reply ("The answer is:"), after a space unless the
    assistant header ends in whitespace; a plain prompt is encoded as it is."""
    byt5 = ByT5Tokenizer()
    assert PromptEncoder(byt5, "causal").encode_with_reply_start("Q?", "A:") == [b + 3 for b in b"Q?"]

    byt5.chat_template = TULU_JINJA
    encoder = PromptEncoder(byt5, "causal", chat_template_for(byt5))
    ids = encoder.encode_with_reply_start("Q?", "The answer is:")
    assert ids[: len(encoder.encode("Q?"))] == encoder.encode("Q?")
    assert byt5.decode(ids) == "<|user|>\nQ?\n<|assistant|>\nThe answer is:"

    byt5.chat_template = (
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    encoder = PromptEncoder(byt5, "causal", chat_template_for(byt5))
    assert byt5.decode(encoder.encode_with_reply_start("Q?", "A:")) == "[Q?]> A:"
    with pytest.raises(ConfigError, match="decoder-only"):
        PromptEncoder(byt5, "seq2seq", chat_template_for(byt5)).encode_with_reply_start("Q?", "A:")


def test_reply_after_a_reply_start_is_what_the_start_does_not_cover() -> None:
    byt5 = ByT5Tokenizer()
    with pytest.raises(ConfigError, match="chat template"):
        PromptEncoder(byt5, "causal").encode_after_reply_start("Q?", "A:", "yes")
    byt5.chat_template = TULU_JINJA
    encoder = PromptEncoder(byt5, "causal", chat_template_for(byt5))
    prompt, reply = encoder.encode_after_reply_start("Q?", "A:", "yes")
    assert prompt == encoder.encode_with_reply_start("Q?", "A:")
    assert byt5.decode(reply) == " yes"
