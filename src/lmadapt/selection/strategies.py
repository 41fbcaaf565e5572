"""How the budget is filled from similarities: round_robin, top_mean, union (DEFT), and random.

Each target task gets a stream of picks in its own order of preference; tasks take turns, one pick each,
until the budget is met, so a task with many queries or high similarities cannot crowd out another.
Within a task:
  round_robin  queries take turns; each takes its most similar pool example not chosen yet (RDS+).
  top_mean     examples by mean cosine over the task's queries, best first. With unit vectors the mean of
               the cosines is one inner product with the mean query vector, so it is a single search.
  union        the k nearest examples of every query, pooled; ranked by how many queries retrieved
               them, then by their best cosine (DEFT's cross-task nearest neighbours).
Streams are lazy and skip what another task chose meanwhile. Rankings are fetched from the index in
growing prefixes (k doubled when a query runs out), so no query ranks the whole pool unless it must.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries [Q, d], k) -> scores, ids


@dataclass(frozen=True)
class Pick:
    id: int  # pool id
    score: float | None  # cosine (round_robin), mean cosine (top_mean), best cosine (union); random: None
    task: str | None
    query: int | None = None  # the query (index into all queries) that picked it: round_robin, union
    retrievals: int | None = None  # union: how many of the task's queries retrieved it


class Ranking:
    """One query vector's pool examples, most similar first, fetched from the index as needed."""

    def __init__(self, search: Search, vector: np.ndarray, pool_size: int, first_k: int):
        self.search, self.vector, self.pool_size = search, vector[None, :], pool_size
        self.k, self.position = 0, 0
        self.scores, self.ids = np.empty(0, np.float32), np.empty(0, np.int64)
        self._fetch(max(1, min(first_k, pool_size)))

    def _fetch(self, k: int) -> None:
        scores, ids = self.search(self.vector, k)
        valid = ids[0] >= 0
        self.scores, self.ids, self.k = scores[0][valid], ids[0][valid], k

    def next_unchosen(self, chosen: set[int]) -> tuple[int, float] | None:
        """The best example not in `chosen`, past the ones already returned; None when none is left."""
        while True:
            while self.position < len(self.ids):
                pool_id = int(self.ids[self.position])
                self.position += 1
                if pool_id not in chosen:
                    return pool_id, float(self.scores[self.position - 1])
            if len(self.ids) < self.k or self.k >= self.pool_size:
                return None  # the index has nothing further (all seen, or an approximate index's reach)
            self._fetch(min(2 * self.k, self.pool_size))


def round_robin(
    search: Search,
    queries: np.ndarray,
    numbers: Sequence[int],
    task: str,
    pool_size: int,
    chosen: set[int],
    k: int,
) -> Iterator[Pick]:
    rankings = [
        (number, Ranking(search, vector, pool_size, k))
        for number, vector in zip(numbers, queries, strict=True)
    ]
    while rankings:
        for entry in list(rankings):
            number, ranking = entry
            found = ranking.next_unchosen(chosen)
            if found is None:
                rankings.remove(entry)
                continue
            yield Pick(found[0], found[1], task, number)


def top_mean(
    search: Search, queries: np.ndarray, task: str, pool_size: int, chosen: set[int], k: int
) -> Iterator[Pick]:
    ranking = Ranking(search, queries.mean(axis=0), pool_size, k)
    while (found := ranking.next_unchosen(chosen)) is not None:
        yield Pick(found[0], found[1], task)


def union(
    search: Search, queries: np.ndarray, numbers: Sequence[int], task: str, chosen: set[int], k: int
) -> Iterator[Pick]:
    scores, ids = search(queries, k)
    retrievals: dict[int, int] = {}
    best: dict[int, tuple[float, int]] = {}  # pool id -> (best cosine, the query that gave it)
    for row, number in enumerate(numbers):
        for score, pool_id in zip(scores[row].tolist(), ids[row].tolist(), strict=True):
            if pool_id < 0:
                continue
            retrievals[pool_id] = retrievals.get(pool_id, 0) + 1
            if pool_id not in best or score > best[pool_id][0]:
                best[pool_id] = (score, number)
    for pool_id in sorted(retrievals, key=lambda i: (-retrievals[i], -best[i][0], i)):
        if pool_id not in chosen:
            yield Pick(pool_id, best[pool_id][0], task, best[pool_id][1], retrievals[pool_id])


def take_turns(streams: Sequence[Iterator[Pick]], budget: int, chosen: set[int]) -> list[Pick]:
    """One pick from each stream in turn (skipping exhausted ones) until `budget` picks; adds to `chosen`."""
    picks: list[Pick] = []
    active = list(streams)
    while active and len(picks) < budget:
        for stream in list(active):
            if len(picks) == budget:
                break
            pick = next(stream, None)
            if pick is None:
                active.remove(stream)
                continue
            chosen.add(pick.id)
            picks.append(pick)
    return picks


def choose(
    search: Search,
    pool_size: int,
    queries: np.ndarray,
    tasks: Sequence[str],
    strategy: str,
    budget: int,
    k: int = 0,
) -> list[Pick]:
    """Up to `budget` distinct pool ids for queries [Q, d] of `tasks` (one task name per query).

    Tasks take turns in the order they first appear. k: union's neighbours per query (0 = the budget).
    """
    chosen: set[int] = set()
    order = list(dict.fromkeys(tasks))
    streams = []
    for task in order:
        numbers = [i for i, name in enumerate(tasks) if name == task]
        vectors = queries[numbers]
        first_k = 2 * -(-budget // (len(order) * len(numbers))) + 16  # a query's share, with slack
        if strategy == "round_robin":
            streams.append(round_robin(search, vectors, numbers, task, pool_size, chosen, first_k))
        elif strategy == "top_mean":
            streams.append(top_mean(search, vectors, task, pool_size, chosen, first_k))
        elif strategy == "union":
            streams.append(union(search, vectors, numbers, task, chosen, min(k or budget, pool_size)))
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
    return take_turns(streams, budget, chosen)


def random_picks(pool_size: int, budget: int, seed: int) -> list[Pick]:
    """A seeded uniform sample without replacement (the baseline)."""
    return [Pick(i, None, None) for i in random.Random(seed).sample(range(pool_size), budget)]
