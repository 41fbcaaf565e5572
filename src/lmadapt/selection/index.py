"""Nearest-neighbour search over unit vectors with FAISS: exact (flat inner product) or approximate.

Inner product on unit vectors is cosine similarity. `flat` compares a query with every pool vector
(exact; the default). For pools of millions, `ivf` searches the `ivf_probe` nearest of `ivf_lists`
k-means cells, and `hnsw` walks a navigable small-world graph; both trade a little recall (measured by
benchmarks/select_scale.py) for far fewer comparisons.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lmadapt.config import SelectionConfig

IVF_TRAIN_PER_LIST = 50  # k-means training points per cell (FAISS warns below 39; more costs time)


@dataclass(frozen=True)
class IndexSettings:
    kind: str = "flat"  # flat | ivf | hnsw
    ivf_lists: int = 0  # 0 = sqrt(N)
    ivf_probe: int = 32
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    seed: int = 0

    @classmethod
    def of(cls, cfg: SelectionConfig) -> IndexSettings:
        return cls(cfg.index, cfg.ivf_lists, cfg.ivf_probe, cfg.hnsw_m, cfg.hnsw_ef_search, cfg.seed)


def _faiss():
    # FAISS logs at INFO which CPU build it tried to load; the CLI logs INFO to the console.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def build_index(vectors: np.ndarray, settings: IndexSettings):
    """A FAISS index over `vectors` [N, d] (float32) searched by inner product."""
    faiss = _faiss()

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings.hnsw_ef_search
    else:
        lists = settings.ivf_lists or max(1, round(math.sqrt(n)))
        lists = min(lists, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(settings.seed)
        sample = vectors[rng.choice(n, min(n, lists * IVF_TRAIN_PER_LIST), replace=False)]
        index.cp.seed = settings.seed
        index.train(sample)
        index.nprobe = min(settings.ivf_probe, lists)
    index.add(vectors)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k] float32, ids [Q, k] int64), best first; id -1 where fewer than k were found."""
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def set_search_threads(threads: int) -> None:
    _faiss().omp_set_num_threads(threads)
