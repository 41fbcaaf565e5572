from __future__ import annotations

import numpy as np

from lmadapt.selection.index import IndexSettings, build_index, search
from lmadapt.selection.strategies import Ranking, choose, random_picks


def _searcher(pool: np.ndarray):
    index = build_index(pool, IndexSettings("flat"))
    return lambda queries, k: search(index, queries, k)


# A hand-made pool on the unit circle at these angles (degrees); query A at 0°, query B at 90°.
ANGLES = [0, 10, 20, 84, 95, 180, 45]
POOL = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in ANGLES], dtype=np.float32)
QUERIES = np.array([[1, 0], [0, 1]], dtype=np.float32)


def _at(degrees: float) -> list[float]:
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


def test_round_robin_order_on_a_hand_made_case():
    # A ranks 0°, 10°, 20°, 45°, ...; B ranks 95° (5° away), 84° (6°), 45°, ...
    # A: 0°, B: 95°, A: 10°, B: 84°, A: 20°, B: 45°.
    picks = choose(_searcher(POOL), len(POOL), QUERIES, ["t", "t"], "round_robin", budget=6)
    assert [p.id for p in picks] == [0, 4, 1, 3, 2, 6]
    assert [p.query for p in picks] == [0, 1, 0, 1, 0, 1]
    np.testing.assert_allclose([p.score for p in picks], np.cos(np.radians([0, 5, 10, 6, 20, 45])), rtol=1e-5)


def test_top_mean_on_a_hand_made_case():
    # Mean cosine to A and B = (cos a + sin a) / 2 = cos(a - 45°) / sqrt(2): by distance from 45°.
    picks = choose(_searcher(POOL), len(POOL), QUERIES, ["t", "t"], "top_mean", budget=7)
    assert [p.id for p in picks] == [6, 2, 1, 3, 0, 4, 5]
    expected = [np.cos(np.radians(ANGLES[p.id] - 45)) / np.sqrt(2) for p in picks]
    np.testing.assert_allclose([p.score for p in picks], expected, rtol=1e-5, atol=1e-6)
    assert all(p.query is None for p in picks)


def test_union_ranks_by_retrieval_count_then_best_cosine():
    # k=3: A retrieves 0°, 10°, 20°; B 95°, 84°, 45°; C (32°) 20°, 45°, 10°.
    queries = np.array([*QUERIES.tolist(), _at(32)], dtype=np.float32)
    picks = choose(_searcher(POOL), len(POOL), queries, ["t"] * 3, "union", budget=10, k=3)
    assert {p.id: p.retrievals for p in picks} == {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 6: 2}
    # twice retrieved first, by best cosine: 10° (10° from A), 20° (12° from C), 45° (13° from C);
    # then once retrieved: 0° (0° from A), 95° (5° from B), 84° (6° from B)
    assert [p.id for p in picks] == [1, 2, 6, 0, 4, 3]
    assert [p.query for p in picks] == [0, 2, 2, 0, 1, 1]


def _naive(similarity: np.ndarray, tasks: list[str], budget: int) -> list[int]:
    """Round robin written the obvious way on the full similarity matrix [Q, N]."""
    order = list(dict.fromkeys(tasks))
    rankings = {q: list(np.argsort(-similarity[q], kind="stable")) for q in range(len(tasks))}
    turn = {t: 0 for t in order}
    chosen: list[int] = []
    exhausted: set[str] = set()
    while len(chosen) < budget and len(exhausted) < len(order):
        for task in order:
            if len(chosen) == budget or task in exhausted:
                continue
            members = [q for q in range(len(tasks)) if tasks[q] == task]
            picked = None
            for _ in range(len(members)):
                q = members[turn[task] % len(members)]
                turn[task] += 1
                rest = [int(i) for i in rankings[q] if int(i) not in chosen]
                if rest:
                    picked = rest[0]
                    break
            if picked is None:
                exhausted.add(task)
            else:
                chosen.append(picked)
    return chosen


def test_round_robin_over_tasks_matches_a_naive_implementation():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((300, 8)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[rng.choice(300, 5, replace=False)] + 0.1 * rng.standard_normal((5, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    tasks = ["a", "b", "a", "a", "b"]
    picks = choose(_searcher(pool), len(pool), queries, tasks, "round_robin", budget=120)
    assert [p.id for p in picks] == _naive(queries @ pool.T, tasks, 120)
    # tasks alternate, whatever their number of queries
    assert [p.task for p in picks[:6]] == ["a", "b"] * 3
    assert len({p.id for p in picks}) == 120


def test_random_picks_depend_only_on_the_seed():
    first = [p.id for p in random_picks(1000, 50, seed=3)]
    assert first == [p.id for p in random_picks(1000, 50, seed=3)]
    assert first != [p.id for p in random_picks(1000, 50, seed=4)]
    assert len(set(first)) == 50


def test_a_ranking_fetches_longer_prefixes_until_the_pool_is_exhausted():
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((50, 4)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    calls = []
    searcher = _searcher(pool)

    def counting(queries, k):
        calls.append(k)
        return searcher(queries, k)

    ranking = Ranking(counting, pool[0], len(pool), first_k=1)
    chosen = {3, 7}
    order = []
    while (found := ranking.next_unchosen(chosen)) is not None:
        order.append(found[0])
    expected = [int(i) for i in np.argsort(-(pool @ pool[0]), kind="stable") if i not in chosen]
    assert order == expected
    assert calls == [1, 2, 4, 8, 16, 32, 50]
