"""Data selection: `lmadapt select CONFIG [key=value ...] [--overwrite]`.

Embeds the pool (SFT data sources, streamed, cached per chunk) and the target tasks' query prompts,
searches the pool with FAISS, fills the budget with a strategy, and writes the chosen conversations as
messages JSONL that `lmadapt sft` trains on, with a manifest beside it: one JSON line per output line
saying where the example came from (file, line), its score, the task and query that chose it, and the
method, strategy, model and budget.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import SelectConfig
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.selection.embeddings import embed_pool
from lmadapt.selection.encoders import load_encoder
from lmadapt.selection.index import IndexSettings, build_index, search, set_search_threads
from lmadapt.selection.pool import Pool, chosen_conversations, open_pool
from lmadapt.selection.queries import Query, read_queries
from lmadapt.selection.strategies import Pick, choose, random_picks

log = logging.getLogger("lmadapt")


@dataclass
class SelectResult:
    output: Path
    manifest: Path
    picks: list[Pick]
    pool_size: int


def manifest_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".manifest.jsonl")


def budget_of(cfg: SelectConfig, pool_size: int) -> int:
    sel = cfg.selection
    if sel.count is not None:
        if sel.count > pool_size:
            raise ConfigError(f"selection.count {sel.count} exceeds the pool's {pool_size} examples")
        return sel.count
    return max(1, round(sel.fraction * pool_size))


def run(cfg: SelectConfig) -> SelectResult:
    output, manifest = _outputs(cfg)
    _check_paths(cfg)
    sel = cfg.selection
    if sel.num_threads:
        torch.set_num_threads(sel.num_threads)
        set_search_threads(sel.num_threads)
    queries = read_queries(cfg.queries) if sel.method != "random" else []
    pool = open_pool(cfg.pool, sel.seed)
    budget = budget_of(cfg, pool.size)
    log.info("pool: %d examples from %d sources; budget %d", pool.size, len(cfg.pool), budget)
    if sel.method == "random":
        picks = random_picks(pool.size, budget, sel.seed)
    else:
        picks = _similar(cfg, pool, queries, budget)
    if len(picks) < budget:
        log.warning("only %d examples met the strategy's conditions (budget %d)", len(picks), budget)
    _write(cfg, pool, picks, queries, output, manifest, budget)
    log.info("selected %d examples: %s (manifest %s)", len(picks), output, manifest)
    return SelectResult(output, manifest, picks, pool.size)


def _outputs(cfg: SelectConfig) -> tuple[Path, Path]:
    """The output and manifest paths, refused when they exist (unless overwrite) before any work."""
    if not cfg.output:
        raise ConfigError("output is not set (the JSONL the chosen examples are written to)")
    output = Path(cfg.output)
    manifest = manifest_path(output)
    existing = [str(p) for p in (output, manifest) if p.exists()]
    if existing and not cfg.overwrite:
        raise LmadaptError(f"{' and '.join(existing)} already exist; pass --overwrite to replace them")
    return output, manifest


def _check_paths(cfg: SelectConfig) -> None:
    """Every file the run reads exists, named by its config field, before the (long) embedding starts."""
    paths = [(f"pool.{i}.path", source.path) for i, source in enumerate(cfg.pool)]
    if cfg.selection.method != "random":
        paths += [(f"queries.{i}.path", query.path) for i, query in enumerate(cfg.queries)]
        paths.append(("model.path", cfg.model.path))
    for field_name, path in paths:
        if path and not Path(path).exists():
            raise ConfigError(f"{field_name}: no such file or directory: {path}")


def _similar(cfg: SelectConfig, pool: Pool, queries: list[Query], budget: int) -> list[Pick]:
    sel = cfg.selection
    encoder = load_encoder(cfg)
    vectors = embed_pool(pool, encoder, sel.cache_dir, sel.seed, sel.chunk_size, sel.batch_size)
    query_vectors = encoder.encode([q.messages for q in queries], sel.batch_size)
    index = build_index(vectors, IndexSettings.of(sel))
    del vectors  # the index holds its own copy
    tasks = [q.task for q in queries]
    log.info("%d queries of %d tasks; strategy %s", len(queries), len(set(tasks)), sel.resolved_strategy)
    return choose(
        lambda q, k: search(index, q, k),
        pool.size,
        query_vectors,
        tasks,
        sel.resolved_strategy,
        budget,
        sel.k,
    )


def _write(
    cfg: SelectConfig,
    pool: Pool,
    picks: list[Pick],
    queries: list[Query],
    output: Path,
    manifest: Path,
    budget: int,
) -> None:
    """Both files written beside their place and renamed in (never half-written; the manifest first)."""
    conversations = chosen_conversations(pool, [p.id for p in picks])
    sel = cfg.selection
    settings = {
        "method": sel.method,
        "strategy": sel.resolved_strategy,
        "model": cfg.model.path if sel.method != "random" else None,
        "budget": budget,
        "seed": sel.seed,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for number, pick in enumerate(picks, start=1):
        conversation = conversations[pick.id]
        row = {
            "output_line": number,
            "source": conversation.source,
            "line": conversation.line,
            "score": pick.score,
            "task": pick.task,
            "query": queries[pick.query].origin if pick.query is not None else None,
        }
        if pick.retrievals is not None:
            row["retrievals"] = pick.retrievals
        rows.append(row | settings)
    _write_lines(manifest, rows)
    _write_lines(output, [{"messages": conversations[p.id].messages} for p in picks])


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(staged, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(staged, path)
