"""On-disk cache of tokenized datasets, so preprocessing runs once and survives crashes and restarts.

An entry is a directory <cache_dir>/<key>/ holding examples.safetensors (flat int32 token arrays plus
int64 offsets; no pickle) and meta.json (format version, key, count, sha256 of the tensor file). It is
written in a temporary directory and renamed into place, so a crash never leaves a complete-looking
entry; an entry that fails any check on load is rebuilt. The key hashes everything the tokens depend on:
the data files' bytes, the tokenizer, the template, lengths, mixture, seed, model kind and truncation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

from lmadapt.data.tokenize import TokenizedExample

# Bump when tokenisation or the entry layout changes, so old entries stop matching.
FORMAT_VERSION = 1

logger = logging.getLogger("lmadapt")


def content_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of every file (relative path + bytes) under a directory."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


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
    mixture: MixtureSource objects or their dicts, in order; None when a single file is read whole.
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


def _write(entry: Path, key: str, examples: list[TokenizedExample]) -> None:
    inputs, labels = [e.input_ids for e in examples], [e.labels for e in examples]
    tensors = {
        "input_ids": _flat(inputs),
        "input_offsets": _offsets(inputs),
        "labels": _flat(labels),
        "label_offsets": _offsets(labels),
    }
    save_file(tensors, entry / "examples.safetensors")
    sha = hashlib.sha256((entry / "examples.safetensors").read_bytes()).hexdigest()
    meta = {"version": FORMAT_VERSION, "key": key, "count": len(examples), "sha256": sha}
    (entry / "meta.json").write_text(json.dumps(meta, indent=2))


def _read(entry: Path, key: str) -> list[TokenizedExample]:
    """The entry's examples; ValueError/OSError/SafetensorError when it is missing, partial or corrupt."""
    meta = json.loads((entry / "meta.json").read_text())
    data = (entry / "examples.safetensors").read_bytes()
    if meta.get("version") != FORMAT_VERSION or meta.get("key") != key:
        raise ValueError("written by another format version or for another key")
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise ValueError("tensor file does not match its checksum")
    tensors = load(data)
    input_offsets, label_offsets = tensors["input_offsets"].tolist(), tensors["label_offsets"].tolist()
    if not len(input_offsets) == len(label_offsets) == meta["count"] + 1:
        raise ValueError("example count does not match meta.json")
    inputs, labels = tensors["input_ids"].tolist(), tensors["labels"].tolist()
    return [
        TokenizedExample(
            inputs[input_offsets[i] : input_offsets[i + 1]], labels[label_offsets[i] : label_offsets[i + 1]]
        )
        for i in range(meta["count"])
    ]


def load_or_build(
    cache_dir: str | Path, key: str, build_fn: Callable[[], list[TokenizedExample]]
) -> tuple[list[TokenizedExample], bool]:
    """(examples, hit): the cached entry for `key` if it is intact, else build_fn()'s result, stored."""
    entry = Path(cache_dir) / key
    if entry.exists():
        try:
            examples = _read(entry, key)
            logger.info("tokenized data: cache hit %s (%d examples)", entry, len(examples))
            return examples, True
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            logger.warning("tokenized data: cache entry %s unusable (%s); rebuilding", entry, e)
    examples = build_fn()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key}.tmp-"))
    try:
        _write(staging, key, examples)
        shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:  # another process stored the same entry in between: theirs is as good
            logger.info("tokenized data: %s was written concurrently; keeping that copy", entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("tokenized data: cached %d examples in %s", len(examples), entry)
    return examples, False
