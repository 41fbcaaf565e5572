from __future__ import annotations

import shutil

import pytest
from transformers import ByT5Tokenizer

from lmadapt.config import SourceConfig
from lmadapt.data.cache import cache_key, cached_examples
from lmadapt.data.templates import CHATML_JINJA, TULU_JINJA
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.store import MANIFEST, content_digest

EXAMPLES = [
    TokenizedExample([5, 6, 7, 1], [-100, -100, 7, 1]),
    TokenizedExample([9, 1], [4, 4, 4, 1]),  # seq2seq-shaped: labels longer than inputs
    TokenizedExample([300, 301], [-100, 301]),
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "completion": "c"}\n')
    return path


def key_of(data, **changes):
    arguments = {
        "files": [data],
        "tokenizer": ByT5Tokenizer(),
        "template": TULU_JINJA,
        "max_lengths": 128,
        "mixture": [SourceConfig(str(data), count=1)],
        "seed": 0,
        "kind": "causal",
        "truncation": "truncate",
    }
    return cache_key(**{**arguments, **changes})


def test_key_is_stable_and_content_addressed(data, tmp_path):
    key = key_of(data)
    assert len(key) == 64 and key == key_of(data)
    copy = tmp_path / "elsewhere.jsonl"
    shutil.copy(data, copy)
    assert key_of(data, files=[copy]) == key  # the bytes matter, not the path


def test_every_input_changes_the_key(data):
    base = key_of(data)
    tokenizer_with_token = ByT5Tokenizer()
    tokenizer_with_token.add_tokens(["<|user|>"])
    tokenizer_with_template = ByT5Tokenizer()
    tokenizer_with_template.chat_template = CHATML_JINJA
    variants = {
        "tokenizer vocab": key_of(data, tokenizer=tokenizer_with_token),
        "tokenizer template": key_of(data, tokenizer=tokenizer_with_template),
        "template": key_of(data, template=CHATML_JINJA),
        "max length": key_of(data, max_lengths=256),
        "max lengths": key_of(data, max_lengths=(128, 64)),
        "mixture": key_of(data, mixture=[SourceConfig(str(data), fraction=2.0)]),
        "mixture as dicts": key_of(data, mixture=[{"path": str(data), "count": 2}]),
        "seed": key_of(data, seed=1),
        "kind": key_of(data, kind="seq2seq"),
        "truncation": key_of(data, truncation="drop"),
    }
    data.write_text('{"prompt": "p", "completion": "C"}\n')
    variants["data content"] = key_of(data)
    keys = [base, *variants.values()]
    assert len(set(keys)) == len(keys), variants


def test_saved_dataset_directory_digest_covers_every_file(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}]).save_to_disk(str(tmp_path / "saved"))
    before = content_digest(tmp_path / "saved")
    state = tmp_path / "saved" / "state.json"
    state.write_text(state.read_text() + " ")
    assert content_digest(tmp_path / "saved") != before


def test_second_call_hits_and_returns_the_same_examples(counting_build, tmp_path):
    build = counting_build(EXAMPLES)
    assert cached_examples(tmp_path / "cache", "k", build) == (EXAMPLES, False)
    assert cached_examples(tmp_path / "cache", "k", build) == (EXAMPLES, True)
    assert build.calls == 1
    # no staged directories left; the lock file that serialises builds stays
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".k.lock", "k"]
    assert sorted(p.name for p in (tmp_path / "cache" / "k").iterdir()) == ["examples.safetensors", MANIFEST]


def test_empty_dataset_round_trips(counting_build, tmp_path):
    cached_examples(tmp_path, "k", counting_build([]))
    assert cached_examples(tmp_path, "k", counting_build([])) == ([], True)


# Damage, crashes and concurrent builders: tests/test_store.py.


def test_tokenizer_fingerprint_survives_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    from lmadapt.data.cache import tokenizer_fingerprint

    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = TULU_JINJA
    tokenizer.save_pretrained(tmp_path / "tok")
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tmp_path / "tok")) == tokenizer_fingerprint(
        tokenizer
    )
