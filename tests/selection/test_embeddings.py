from __future__ import annotations

import numpy as np
import pytest

from lmadapt.selection.embeddings import embed_pool
from lmadapt.selection.encoders import load_encoder
from lmadapt.selection.pool import open_pool


class Killed(Exception):
    pass


def _counting(encoder, die_after: int | None = None):
    """Wrap `encoder.encode` to count calls (one per chunk built) and die before call `die_after` + 1."""
    calls = []
    encode = encoder.encode

    def wrapped(prompts, batch_size):
        if die_after is not None and len(calls) == die_after:
            raise Killed
        calls.append(len(prompts))
        return encode(prompts, batch_size)

    encoder.encode = wrapped
    return calls


def test_a_killed_embedding_run_resumes_from_its_finished_chunks(tmp_path, select_config):
    cfg = select_config("selection.chunk_size=16")
    pool = open_pool(cfg.pool, 0)  # 120 examples: 8 chunks (7 of 16, one of 8)
    reference = embed_pool(pool, load_encoder(cfg), tmp_path / "fresh", 0, 16, 8)
    assert reference.shape[0] == 120
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)

    encoder = load_encoder(cfg)
    calls = _counting(encoder, die_after=3)
    with pytest.raises(Killed):
        embed_pool(pool, encoder, tmp_path / "cache", 0, 16, 8)
    assert calls == [16, 16, 16]

    encoder = load_encoder(cfg)
    calls = _counting(encoder)
    resumed = embed_pool(pool, encoder, tmp_path / "cache", 0, 16, 8)
    assert calls == [16, 16, 16, 16, 8]  # only the chunks the killed run had not finished
    np.testing.assert_array_equal(resumed, reference)

    calls = _counting(encoder := load_encoder(cfg))
    np.testing.assert_array_equal(embed_pool(pool, encoder, tmp_path / "cache", 0, 16, 8), reference)
    assert calls == []


def test_other_pool_contents_or_seed_do_not_reuse_chunks(tmp_path, select_config, pool_file):
    cfg = select_config("selection.chunk_size=64", "pool.0.count=100")
    encoder = load_encoder(cfg)
    embed_pool(open_pool(cfg.pool, 0), encoder, tmp_path / "cache", 0, 64, 8)
    calls = _counting(encoder)
    embed_pool(open_pool(cfg.pool, 1), encoder, tmp_path / "cache", 1, 64, 8)  # another sample of 100
    assert calls == [64, 36]
    pool_file.write_text(pool_file.read_text().replace("reverse", "invert"))
    embed_pool(open_pool(cfg.pool, 1), encoder, tmp_path / "cache", 1, 64, 8)
    assert calls == [64, 36, 64, 36]
