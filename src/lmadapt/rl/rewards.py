"""Verifiable rewards: pure functions of (completion text, ground truth) -> float.

Ground truth is a list of accepted answers (a prompt file's `ground_truth`, or a SuperNI instance's
outputs). The built-in rewards reuse the evaluation code, so a reward means what the matching
evaluation scores: GSM8K's final-number match (eval/gsm8k.py), SuperNI's normalised exact match and
ROUGE-L (eval/metrics.py). A user verifier is any `module:function` importable from the working
directory, called as function(completion, ground_truth) and returning a number.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lmadapt.config import VerifiableRewardConfig
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval.gsm8k import extract_answer, normalize_number
from lmadapt.eval.metrics import exact_match, rouge_l

RewardFn = Callable[[str, Sequence[str]], float]


def gsm8k_reward(completion: str, ground_truth: Sequence[str]) -> float:
    """1.0 when the completion's last number equals any reference number (both normalised), else 0.0."""
    answer = extract_answer(completion)
    return float(answer is not None and any(answer == normalize_number(ref) for ref in ground_truth))


def exact_match_reward(completion: str, ground_truth: Sequence[str]) -> float:
    """1.0 when the completion equals a reference after SuperNI normalisation, else 0.0."""
    return exact_match(completion, list(ground_truth))


def rouge_l_reward(completion: str, ground_truth: Sequence[str]) -> float:
    """SuperNI's ROUGE-L F-measure in [0, 1], the best over references."""
    return rouge_l(completion, list(ground_truth))


BUILTIN: dict[str, RewardFn] = {
    "exact_match": exact_match_reward,
    "gsm8k": gsm8k_reward,
    "rouge_l": rouge_l_reward,
}


def load_verifier(spec: str) -> RewardFn:
    """The function named by "package.module:function" (the working directory is importable)."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ConfigError(f"reward.verifier: {spec!r} must look like 'module:function'")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"reward.verifier: cannot import module {module_name!r}: {e}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"reward.verifier: module {module_name!r} has no function {function_name!r}")
    return function


def build_reward(cfg: VerifiableRewardConfig) -> RewardFn:
    if cfg.kind == "verifier":
        if not cfg.verifier:
            raise ConfigError("reward.kind=verifier needs reward.verifier: 'module:function'")
        return load_verifier(cfg.verifier)
    if cfg.verifier:
        raise ConfigError(f"reward.verifier is set but reward.kind is {cfg.kind!r}; set kind: verifier")
    return BUILTIN[cfg.kind]


def score_completions(
    reward: RewardFn, completions: Sequence[str], ground_truths: Sequence[Sequence[str]]
) -> list[float]:
    """reward(completion, ground truth) for each pair; a verifier returning a non-number or a non-finite
    value is a user error naming the completion."""
    scores = []
    for i, (completion, truth) in enumerate(zip(completions, ground_truths, strict=True)):
        value = reward(completion, truth)
        if not isinstance(value, int | float) or not math.isfinite(value):  # bools count as 1/0
            raise LmadaptError(
                f"reward function returned {value!r} for completion {i}; expected a finite number"
            )
        scores.append(float(value))
    return scores
