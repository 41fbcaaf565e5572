from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval.ifeval import (
    IFEvalPrompt,
    check_prompt,
    ifeval_metrics,
    load_prompts,
    loose_variants,
    read_responses,
)


def write_input(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


RECORDS = [
    {
        "key": 1000,
        "prompt": "Write a poem. No commas. End with 'Bye.'",
        "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
        "kwargs": [{}, {"end_phrase": "Bye."}],
    },
    {
        "key": 1001,
        "prompt": "Answer in at least 3 words.",
        "instruction_id_list": ["length_constraints:number_words"],
        # The Hugging Face copy names every kwarg in every dict; unused ones are null.
        "kwargs": [{"num_words": 3, "relation": "at least", "keyword": None, "num_sentences": None}],
    },
]


def test_loader_reads_the_official_layout(tmp_path: Path) -> None:
    write_input(tmp_path / "input_data.jsonl", RECORDS)
    prompts = load_prompts(tmp_path)  # the directory holding input_data.jsonl
    assert [p.id for p in prompts] == ["1000", "1001"]
    assert prompts[0].instruction_ids == ["punctuation:no_comma", "startend:end_checker"]
    assert prompts[1].kwargs == [{"num_words": 3, "relation": "at least"}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "7"}, "key"),
        ({"instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]}, "instruction_id_list[0]"),
        ({"kwargs": [{}]}, "kwargs"),
        ({"kwargs": [{}, {"end_phrase": None}]}, "kwargs[1].end_phrase"),
    ],
)
def test_malformed_records_are_named(tmp_path: Path, change: dict, field: str) -> None:
    path = write_input(tmp_path / "in.jsonl", [RECORDS[1], {**RECORDS[0], **change}])
    with pytest.raises(DataError) as raised:
        load_prompts(path)
    assert (raised.value.line, raised.value.field) == (2, field)
    assert raised.value.path.endswith("in.jsonl")


def test_loose_variants_drop_first_and_last_lines_and_asterisks() -> None:
    variants = loose_variants("Sure!\n**Body**\nBye")
    assert variants == [
        "Sure!\n**Body**\nBye",
        "**Body**\nBye",
        "Sure!\n**Body**",
        "**Body**",
        "Sure!\nBody\nBye",
        "Body\nBye",
        "Sure!\nBody",
        "Body",
    ]


def test_loose_differs_from_strict_on_a_preamble() -> None:
    prompt = IFEvalPrompt(1, "p", ["startend:quotation", "punctuation:no_comma"], [{}, {}])
    # The quotation is right once the chatty first line is dropped; the comma is there in every variant.
    strict, loose = check_prompt(prompt, 'Here you go, friend:\n"Quoted, answer"')
    assert strict == [False, False]
    assert loose == [True, False]
    strict, loose = check_prompt(prompt, 'Here you go:\n"Quoted answer"')
    assert (strict, loose) == ([False, True], [True, True])


def test_metrics_by_hand() -> None:
    prompts = [
        IFEvalPrompt(1, "a", ["punctuation:no_comma", "startend:quotation"], [{}, {}]),
        IFEvalPrompt(2, "b", ["punctuation:no_comma"], [{}]),
        IFEvalPrompt(
            3, "c", ["startend:quotation", "detectable_format:title", "punctuation:no_comma"], [{}] * 3
        ),
    ]
    strict = [[True, False], [True], [False, False, True]]
    loose = [[True, True], [True], [True, False, True]]
    metrics = ifeval_metrics(prompts, strict, loose)
    assert metrics["overall"] == {
        "num_prompts": 3,
        "num_instructions": 6,
        "prompt_level_strict": round(100 / 3, 4),  # only prompt 2 follows all
        "instruction_level_strict": 50.0,  # 3 of 6
        "prompt_level_loose": round(200 / 3, 4),  # prompts 1 and 2
        "instruction_level_loose": round(500 / 6, 4),  # 5 of 6
    }
    assert metrics["strict"]["per_instruction"]["startend:quotation"] == {
        "num_instructions": 2,
        "accuracy": 0.0,
    }
    assert metrics["loose"]["per_instruction"]["startend:quotation"] == {
        "num_instructions": 2,
        "accuracy": 100.0,
    }
    assert metrics["strict"]["per_category"]["punctuation"] == {"num_instructions": 3, "accuracy": 100.0}
    assert metrics["loose"]["per_category"]["detectable_format"] == {"num_instructions": 1, "accuracy": 0.0}


def test_loader_reads_the_hugging_face_parquet_copy(tmp_path: Path) -> None:
    """Parquet stores one struct type for every kwargs dict: each holds every name, unused ones null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    prompts = load_prompts(path)
    assert [p.kwargs for p in prompts] == [
        [{}, {"end_phrase": "Bye."}],
        [{"num_words": 3, "relation": "at least"}],
    ]


def test_responses_in_either_layout(tmp_path: Path) -> None:
    prompts = load_prompts(write_input(tmp_path / "input_data.jsonl", RECORDS))
    ours = write_input(tmp_path / "ours.jsonl", [{"id": "1001", "prediction": "three words here"}])
    assert read_responses(ours, prompts) == [None, "three words here"]
    official = [
        {"prompt": RECORDS[1]["prompt"], "response": "b"},
        {"prompt": RECORDS[0]["prompt"], "response": "a"},
    ]
    assert read_responses(write_input(tmp_path / "official.jsonl", official), prompts) == ["a", "b"]
    stray = write_input(tmp_path / "stray.jsonl", [*official, {"prompt": "Another prompt", "response": "c"}])
    with pytest.raises(DataError) as raised:
        read_responses(stray, prompts)
    assert (raised.value.line, raised.value.field) == (3, "prompt")
