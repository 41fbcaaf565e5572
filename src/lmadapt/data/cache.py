"""The token cache: tokenized datasets stored once, so preprocessing survives crashes and restarts.

An entry (see lmadapt.store: staged, fsynced, checksummed, atomically renamed) is <cache_dir>/<key>/
holding examples.safetensors: flat int32 token arrays plus int64 offsets, no pickle. The key hashes
everything the tokens depend on: the data files' bytes, the tokenizer, the template, lengths, mixture,
seed, data kind and truncation. A damaged entry is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from lmadapt.data.tokenize import TokenizedExample
from lmadapt.store import CorruptEntry, Entry, content_digest, load_or_build

# Bump when tokenisation or the entry layout changes, so old entries stop matching.
FORMAT_VERSION = 2
KIND = "token-cache"
EXAMPLES_FILE = "examples.safetensors"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over what decides how a tokenizer maps text to ids (not where it was loaded from)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    description = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "added": sorted(tokenizer.get_added_vocab().items()),
        "special": {name: str(token) for name, token in tokenizer.special_tokens_map.items()},
        "chat_template": tokenizer.chat_template,
        "backend": backend.to_str() if backend is not None else None,  # normaliser, merges, ...
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def cache_key(
    files: Sequence[str | Path],
    tokenizer: Any,
    template: str,
    max_lengths: int | Sequence[int],
    mixture: Sequence[Any] | None,
    seed: int,
    kind: str,
    truncation: str,
) -> str:
    """sha256 hex key of a tokenized dataset.

    template: the template's Jinja string (preferred: it changes when the template does) or its name.
    mixture: SourceConfig objects or their dicts, in order; None when a single file is read whole.
    """
    description = {
        "version": FORMAT_VERSION,
        "files": [content_digest(file) for file in files],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "template": template,
        "max_lengths": [max_lengths] if isinstance(max_lengths, int) else list(max_lengths),
        "mixture": [s if isinstance(s, dict) else dataclasses.asdict(s) for s in mixture or []],
        "seed": seed,
        "kind": kind,
        "truncation": truncation,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _offsets(rows: list[list[int]]) -> np.ndarray:
    return np.cumsum([0] + [len(row) for row in rows], dtype=np.int64)


def _flat(rows: list[list[int]]) -> np.ndarray:
    return np.fromiter((token for row in rows for token in row), dtype=np.int32)


def _save(examples: list[TokenizedExample], directory: Path) -> dict[str, Any]:
    inputs, labels = [e.input_ids for e in examples], [e.labels for e in examples]
    tensors = {
        "input_ids": _flat(inputs),
        "input_offsets": _offsets(inputs),
        "labels": _flat(labels),
        "label_offsets": _offsets(labels),
    }
    save_file(tensors, str(directory / EXAMPLES_FILE))
    return {"count": len(examples)}


def _load(entry: Entry) -> list[TokenizedExample]:
    tensors = load_file(str(entry.path / EXAMPLES_FILE))
    input_offsets, label_offsets = tensors["input_offsets"].tolist(), tensors["label_offsets"].tolist()
    count = entry.meta["count"]
    if not len(input_offsets) == len(label_offsets) == count + 1:
        raise CorruptEntry(f"{entry.path}: example count does not match the manifest")
    inputs, labels = tensors["input_ids"].tolist(), tensors["labels"].tolist()
    return [
        TokenizedExample(
            inputs[input_offsets[i] : input_offsets[i + 1]], labels[label_offsets[i] : label_offsets[i + 1]]
        )
        for i in range(count)
    ]


def cached_examples(
    cache_dir: str | Path, key: str, build: Callable[[], list[TokenizedExample]]
) -> tuple[list[TokenizedExample], bool]:
    """(examples, hit): the intact cached entry for `key`, else build()'s result, stored."""
    return load_or_build(Path(cache_dir) / key, KIND, FORMAT_VERSION, build, _save, _load)
