from __future__ import annotations

import pytest
from transformers import ByT5Tokenizer

from lmadapt.data.tasks import (
    Demonstration,
    Instance,
    PromptEncoding,
    Task,
    encode_instance,
    encode_instruction,
)
from lmadapt.data.tokenize import IGNORE_INDEX, encode_text
from lmadapt.errors import DataError
from lmadapt.hint.data import (
    HintExample,
    collate_hint,
    instance_prompt,
    instance_template,
    read_documents,
    split_documents,
    task_dataset,
    tokenize_instruction,
)

TOK = ByT5Tokenizer()


def _task(name: str, n: int) -> Task:
    instances = [Instance(f"{name}-{i}", f"x{i}", [f"y{i}"]) for i in range(n)]
    return Task(name, f"do {name}", [Demonstration("a", "b")], [], instances, ["cat"])


def test_collate_encodes_each_distinct_instruction_once():
    instructions = [[1, 2, 3], [4, 5], [6]]
    examples = [HintExample(2, [7, 8], [9]), HintExample(0, [7], [9, 9]), HintExample(2, [8, 8, 8], [9])]
    batch = collate_hint(examples, instructions, pad_token_id=0)
    assert batch["instruction_ids"].tolist() == [[6, 0, 0], [1, 2, 3]]
    assert batch["instruction_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["instruction_index"].tolist() == [0, 1, 0]
    assert batch["input_ids"].tolist() == [[7, 8, 0], [7, 0, 0], [8, 8, 8]]
    assert batch["labels"].tolist() == [[9, IGNORE_INDEX], [9, 9], [9, IGNORE_INDEX]]


def test_task_dataset_keeps_instruction_and_instance_apart():
    encoding = PromptEncoding.parse("def+1pos")
    template = instance_template("none", TOK)
    data = task_dataset([_task("a", 2), _task("b", 1)], encoding, TOK, template, "causal", 64, 64, 16, "tk")
    assert [x.instruction for x in data.examples] == [0, 0, 1]
    assert data.instructions[1] == encode_text(encode_instruction(_task("b", 1), encoding), TOK)
    first = data.examples[0]
    prompt = encode_text(encode_instance("x0"), TOK)
    assert first.input_ids == prompt + encode_text("y0", TOK) + [TOK.eos_token_id]
    assert first.labels == [IGNORE_INDEX] * len(prompt) + encode_text("y0", TOK) + [TOK.eos_token_id]
    assert instance_prompt("x0", TOK, template, "causal", "tk", encoding) == prompt
    assert instance_prompt("x0", TOK, template, "causal", "raw", encoding) == encode_text("x0", TOK)
    framed = instance_prompt("x0", TOK, template, "causal", "compact", encoding)
    assert framed == encode_text("Input: x0.\nOutput: ", TOK)
    seq2seq = task_dataset([_task("a", 1)], encoding, TOK, template, "seq2seq", 64, 64, 16, "tk")
    assert seq2seq.examples[0].input_ids == [*prompt, TOK.eos_token_id]
    assert seq2seq.examples[0].labels == [*encode_text("y0", TOK), TOK.eos_token_id]


def test_instruction_is_cut_from_the_right_keeping_eos():
    ids = tokenize_instruction("abcdefgh", TOK, "seq2seq", max_length=4)
    assert ids == [*encode_text("abc", TOK), TOK.eos_token_id]


def test_documents_split_into_a_b_c_deterministically(tmp_path):
    docs = ["the quick brown fox jumps", "ab", "over the lazy dog"]
    data = split_documents(docs, TOK, "causal", 0, 100, 100, 100)
    again = split_documents(docs, TOK, "causal", 0, 100, 100, 100)
    assert [x.input_ids for x in data.examples] == [x.input_ids for x in again.examples]
    assert len(data.examples) == 2  # "ab" has two tokens, too few to cut into three parts
    kept = [docs[0], docs[2]]
    for doc, example, instruction in zip(kept, data.examples, data.instructions, strict=True):
        ids = encode_text(doc, TOK)
        trained = [t for t in example.labels if t != IGNORE_INDEX]
        b = example.input_ids[: len(example.input_ids) - len(trained)]
        assert instruction + b + trained == ids and instruction and b and trained


def test_reading_documents_names_the_bad_line(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("one\n\ntwo\n")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": 1}\n')
    assert read_documents([good]) == ["one", "two"]
    with pytest.raises(DataError) as err:
        read_documents([good, bad])
    assert err.value.line == 2 and err.value.field == "text"


def test_collated_batch_holds_each_instruction_once_and_maps_examples_to_it():
    examples = [
        HintExample(1, [5, 6, 7], [IGNORE_INDEX, 6, 7]),
        HintExample(0, [8], [8]),
        HintExample(1, [9], [9]),
    ]
    batch = collate_hint(examples, [[1, 2], [3, 4, 4]], pad_token_id=0)
    assert batch["instruction_ids"].tolist() == [[3, 4, 4], [1, 2, 0]]  # in order of first use, padded
    assert batch["instruction_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["instruction_index"].tolist() == [0, 1, 0]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, 6, 7],
        [8, IGNORE_INDEX, IGNORE_INDEX],
        [9, IGNORE_INDEX, IGNORE_INDEX],
    ]
