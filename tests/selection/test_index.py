from __future__ import annotations

import numpy as np
import pytest

from lmadapt.selection.index import IndexSettings, build_index, search


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_equals_brute_force_numpy():
    rng = np.random.default_rng(0)
    pool, queries = _unit(rng, 500, 16), _unit(rng, 7, 16)
    scores, ids = search(build_index(pool, IndexSettings("flat")), queries, 10)
    similarity = queries @ pool.T
    expected_ids = np.argsort(-similarity, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(
        scores, np.take_along_axis(similarity, expected_ids, axis=1), rtol=1e-5, atol=1e-6
    )


def test_search_asks_for_no_more_than_the_pool():
    pool = _unit(np.random.default_rng(1), 5, 4)
    _, ids = search(build_index(pool, IndexSettings("flat")), pool[:2], 50)
    assert ids.shape == (2, 5) and sorted(ids[0].tolist()) == list(range(5))


@pytest.mark.parametrize("settings", [IndexSettings("ivf", ivf_lists=16, ivf_probe=4), IndexSettings("hnsw")])
def test_approximate_indexes_find_most_exact_neighbours(settings):
    rng = np.random.default_rng(2)
    centers = _unit(rng, 20, 16)
    pool = centers[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 16)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[:50]
    _, exact = search(build_index(pool, IndexSettings("flat")), queries, 10)
    _, approx = search(build_index(pool, settings), queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9, recall
