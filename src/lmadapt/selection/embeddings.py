"""Embed a whole pool in chunks, each chunk a content-addressed store entry: a rerun (or a run killed
midway and started again) reuses every finished chunk and loses at most the one being embedded.

A chunk's key hashes the encoder's fingerprint (model bytes, tokenizer, template, lengths), the pool's
fingerprint (files' bytes, amounts, seed), the chunk size and the chunk's number. The entry holds the
vectors and the source line of every row, checked against the pool on reading.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from lmadapt.data.formats import prompt_part
from lmadapt.eval.progress import Progress
from lmadapt.selection.encoders import Encoder
from lmadapt.selection.pool import Pool, PoolItem
from lmadapt.store import CorruptEntry, Entry, load_or_build

log = logging.getLogger("lmadapt")

KIND = "selection-embeddings"
VERSION = 1
FILE = "embeddings.safetensors"


def chunk_key(encoder_fingerprint: str, pool_fingerprint: str, chunk_size: int, number: int) -> str:
    text = f"{encoder_fingerprint}/{pool_fingerprint}/{chunk_size}/{number}"
    return hashlib.sha256(text.encode()).hexdigest()


def _chunks(pool: Pool, size: int) -> Iterator[list[PoolItem]]:
    chunk: list[PoolItem] = []
    for item in pool.items():
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def embed_pool(
    pool: Pool, encoder: Encoder, cache_dir: str | Path, seed: int, chunk_size: int, batch_size: int
) -> np.ndarray:
    """[pool.size, hidden] float32 unit vectors in pool-id order, computed or read chunk by chunk."""
    pool_fingerprint = pool.fingerprint(seed)
    out: np.ndarray | None = None  # filled chunk by chunk (no second copy of the pool's vectors)
    computed = 0
    start = time.perf_counter()
    with Progress(pool.size, f"embedding {pool.size} pool examples ({encoder.method})") as progress:
        for number, chunk in enumerate(_chunks(pool, chunk_size)):
            lines = np.array([item.conversation.line for item in chunk], dtype=np.int64)
            messages = [prompt_part(item.conversation.messages) for item in chunk]
            key = chunk_key(encoder.fingerprint, pool_fingerprint, chunk_size, number)

            def build(messages: list[Any] = messages) -> np.ndarray:
                return encoder.encode(messages, batch_size)

            def save(vectors: np.ndarray, directory: Path, lines: np.ndarray = lines) -> dict[str, Any]:
                save_file({"vectors": vectors, "lines": lines}, str(directory / FILE))
                return {"rows": len(lines)}

            def load(entry: Entry, lines: np.ndarray = lines) -> np.ndarray:
                tensors = load_file(str(entry.path / FILE))
                if not np.array_equal(tensors["lines"], lines):
                    raise CorruptEntry(f"{entry.path}: rows do not match the pool's records")
                return tensors["vectors"]

            vectors, hit = load_or_build(Path(cache_dir) / key, KIND, VERSION, build, save, load)
            computed += 0 if hit else len(chunk)
            if out is None:
                out = np.empty((pool.size, vectors.shape[1]), dtype=np.float32)
            first = number * chunk_size
            out[first : first + len(chunk)] = vectors
            progress.update(len(chunk))
    seconds = time.perf_counter() - start
    if computed:
        log.info("embedded %d examples in %.1f s (%.1f examples/s)", computed, seconds, computed / seconds)
    log.info("%d of %d pool embeddings read from the cache", pool.size - computed, pool.size)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
