from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer

from lmadapt.config import SourceConfig
from lmadapt.data.mixture import build_mixture
from lmadapt.data.preference import (
    PreferencePair,
    TokenizedPair,
    collate_pairs,
    load_preference_pairs,
    read_preference_source,
    tokenize_pair,
    with_reference,
)
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import IGNORE_INDEX, TokenizedExample, encode_text, tokenize_causal
from lmadapt.errors import ConfigError, DataError

TOK = ByT5Tokenizer()
TULU = get_template("tulu", TOK)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_strings_message_lists_and_ultrafeedback_conversations(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "hi", "chosen": [_user("hi"), _bot("hello")], "rejected": [_user("hi"), _bot("go")]},
            {"messages": [_user("a"), _bot("b"), _user("c")], "chosen": [_bot("d")], "rejected": "e"},
            {"chosen": [_user("q"), _bot("yes")], "rejected": [_user("q"), _bot("no")], "id": 3},
        ],
    )
    assert load_preference_pairs(path) == [
        PreferencePair([_user("2+2?")], "4", "5", str(path), 1),
        PreferencePair([_user("hi")], "hello", "go", str(path), 2),
        PreferencePair([_user("a"), _bot("b"), _user("c")], "d", "e", str(path), 3),
        PreferencePair([_user("q")], "yes", "no", str(path), 4),
    ]


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"prompt": "p", "rejected": "r"}, "chosen", "missing required field"),
        ({"prompt": "p", "chosen": "  ", "rejected": "r"}, "chosen", "content is empty"),
        (
            {"prompt": "p", "chosen": [_bot("c"), _user("u")], "rejected": "r"},
            "chosen[1].role",
            "assistant reply",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": [{"role": "bot", "content": "x"}]},
            "rejected[0].role",
            "bot",
        ),
        (
            {"prompt": "p", "chosen": [_user("other"), _bot("c")], "rejected": "r"},
            "chosen",
            "differs from the prompt",
        ),
        (
            {"chosen": [_user("a"), _bot("c")], "rejected": [_user("b"), _bot("r")]},
            "rejected",
            "differ before",
        ),
        ({"chosen": "c", "rejected": "r"}, "prompt", "missing required field"),
        ({"prompt": "p", "messages": [_user("p")], "chosen": "c", "rejected": "r"}, "messages", "not both"),
        ({"prompt": 3, "chosen": "c", "rejected": "r"}, "prompt", "expected str"),
    ],
)
def test_invalid_records_name_file_line_and_field(tmp_path, record, field, message):
    path = write_lines(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(DataError) as info:
        load_preference_pairs(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 2, field)
    assert message in info.value.message


def test_json_array_errors_count_elements_and_say_so(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    )
    with pytest.raises(DataError, match=r"bad.json:2: field 'rejected'.*\(element 2\)"):
        load_preference_pairs(path)


def test_reply_tokens_are_exactly_the_span_sft_trains():
    prompt = [_user("rev abc"), _bot("cba"), _user("again")]
    pair = PreferencePair(prompt, "cba", "abc!", "mem", 1)
    tokenized, too_long = tokenize_pair(pair, TULU, TOK, max_length=512)
    assert not too_long
    prompt_text = "<|user|>\nrev abc\n<|assistant|>\ncba</s>\n<|user|>\nagain\n<|assistant|>\n"
    prompt_ids = encode_text(prompt_text, TOK)  # ByT5's own encode would eat the newline after </s>
    for side, reply in ((tokenized.chosen, "cba"), (tokenized.rejected, "abc!")):
        reply_ids = [*TOK.encode(reply, add_special_tokens=False), TOK.eos_token_id]
        assert side.input_ids == prompt_ids + reply_ids
        assert side.labels == [IGNORE_INDEX] * len(prompt_ids) + reply_ids  # earlier replies are context
        # SFT on the same conversation trains the same last reply tokens (plus the earlier reply).
        sft = tokenize_causal([*prompt, _bot(reply)], TULU, TOK, 512)
        sft_trained = [t for t, label in zip(sft.input_ids, sft.labels, strict=True) if label != IGNORE_INDEX]
        assert sft_trained[-len(reply_ids) :] == reply_ids


def test_chatml_template_gives_reply_plus_im_end():
    chatml = get_template("chatml", TOK)
    tokenized, _ = tokenize_pair(PreferencePair([_user("q")], "yes", "no", "mem", 1), chatml, TOK, 512)
    trained = [
        t for t, label in zip(tokenized.chosen.input_ids, tokenized.chosen.labels, strict=True) if label >= 0
    ]
    assert TOK.decode(trained) == "yes<|im_end|>"


def test_truncation_cuts_each_side_or_drops_the_pair():
    pair = PreferencePair([_user("x" * 10)], "a" * 30, "b", "mem", 1)
    prompt_len = len(TOK.encode("<|user|>\n" + "x" * 10 + "\n<|assistant|>\n", add_special_tokens=False))
    cut, too_long = tokenize_pair(pair, TULU, TOK, max_length=prompt_len + 5)
    assert too_long
    assert len(cut.chosen.input_ids) == prompt_len + 5 and sum(x >= 0 for x in cut.chosen.labels) == 5
    assert len(cut.rejected.input_ids) == prompt_len + 2  # "b" + eos fits untouched
    assert tokenize_pair(pair, TULU, TOK, prompt_len + 5, "drop") == (None, True)
    assert tokenize_pair(pair, TULU, TOK, prompt_len, "truncate") == (None, True)  # no reply token left
    with pytest.raises(ConfigError, match="truncation"):
        tokenize_pair(pair, TULU, TOK, 100, "clip")


def test_collate_stacks_chosen_then_rejected_padded_to_one_length():
    pairs = [
        TokenizedPair(
            TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([5, 8], [-100, 8]), (-1.0, -2.0)
        ),
        TokenizedPair(
            TokenizedExample([9, 10], [-100, 10]),
            TokenizedExample([9, 11, 12, 13], [-100, 11, 12, 13]),
            (-3.0, -4.0),
        ),
    ]
    batch = collate_pairs(pairs, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [9, 10, 0, 0], [5, 8, 0, 0], [9, 11, 12, 13]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [-100, 6, 7, -100]
    assert batch["ref_logps"].tolist() == [-1.0, -3.0, -2.0, -4.0]
    assert "ref_logps" not in collate_pairs([TokenizedPair(pairs[0].chosen, pairs[0].rejected)], 0)


def test_with_reference_attaches_rows_in_order_and_checks_shape():
    pairs = [TokenizedPair(TokenizedExample([1], [1]), TokenizedExample([2], [2])) for _ in range(2)]
    attached = with_reference(pairs, torch.tensor([[-1.5, -2.5], [-3.5, -4.5]]))
    assert [p.ref_logps for p in attached] == [(-1.5, -2.5), (-3.5, -4.5)]
    assert pairs[0].ref_logps is None
    with pytest.raises(ValueError, match="shape"):
        with_reference(pairs, torch.zeros(3, 2))


def test_preference_sources_mix_like_chat_data(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(4)]
    )
    mixed = build_mixture([SourceConfig(str(path), count=6)], 0, read_preference_source)
    prompts = [p.prompt[0]["content"] for p in mixed]
    assert sorted(prompts.count(f"q{i}") for i in range(4)) == [1, 1, 2, 2]  # all once, 2 sampled again
    with pytest.raises(ConfigError, match="format must be 'auto'"):
        read_preference_source(SourceConfig(str(path), format="messages"))
