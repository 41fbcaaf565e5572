"""Win rates from pairwise preferences, and a length-controlled win rate (AlpacaEval's idea, simplified).

A preference is a number in [0, 1]: how strongly the judge prefers the evaluated model's output over the
reference output of the same instruction (1: the model's wins, 0: the reference's, 0.5: a draw).

`win_rate_metrics` reports what AlpacaEval reports: the win rate (mean preference x100) with its standard
error (x100, ddof 1), the counts of wins (> 0.5), losses (< 0.5) and draws (exactly 0.5), and the
discrete win rate (wins + draws/2 over all, x100).

`length_controlled_win_rate` answers "what would the win rate be if both outputs had the same length?"
with the two-parameter logistic model

    logit P(model's output preferred on instruction i) = a + b * tanh(d_i / s)

where d_i is the model's output length minus the reference's (characters) and s the sample standard
deviation (ddof 1) of the d_i. It is fitted by maximum likelihood with the preferences as soft labels
(each instruction contributes p log sigma + (1 - p) log(1 - sigma)), by Newton's method with step
halving; the figure is 100 sigma(a), the predicted preference at zero length difference. Its standard
error is the delta method on a sandwich (HC0) covariance of (a, b), which does not assume the soft labels
are Bernoulli.

How this differs from AlpacaEval 2.0's length-controlled GLM (alpaca_eval.metrics.glm_winrate): the
official model also has an instruction-difficulty term (a per-instruction covariate estimated once from
the whole leaderboard, times a per-model weight), fits with an L1 penalty chosen by 5-fold
cross-validation, and is regularised towards fits on deliberately verbose and concise versions of the
baseline; its figure is the mean over instructions of the prediction at zero length difference. None of
those extra parts can be estimated from one model's annotations, so this figure removes the linear
(tanh) length effect only, and it is not comparable to leaderboard numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NEWTON_TOLERANCE = 1e-10
NEWTON_MAX_ITERATIONS = 100
# A fitted |coefficient| past this means the likelihood has no finite maximum (hard labels that the
# length separates): the figure would be 0 or 100 by construction, so none is reported.
DIVERGED = 30.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _sample_std(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def win_rate_metrics(preferences: Sequence[float]) -> dict[str, Any]:
    """Win rate, standard error (None for fewer than 2), counts and discrete win rate (module docstring)."""
    if not preferences:
        raise ValueError("win_rate_metrics needs at least one preference")
    n = len(preferences)
    wins = sum(p > 0.5 for p in preferences)
    draws = sum(p == 0.5 for p in preferences)
    return {
        "win_rate": 100 * _mean(preferences),
        "standard_error": 100 * _sample_std(preferences) / math.sqrt(n) if n > 1 else None,
        "discrete_win_rate": 100 * (wins + draws / 2) / n,
        "n_wins": wins,
        "n_losses": n - wins - draws,
        "n_draws": draws,
        "n_total": n,
    }


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _log_likelihood(a: float, b: float, x: Sequence[float], p: Sequence[float]) -> float:
    """Soft-label Bernoulli log-likelihood of logit = a + b x, computed stably."""
    total = 0.0
    for xi, pi in zip(x, p, strict=True):
        eta = a + b * xi
        log_sigma = -math.log1p(math.exp(-eta)) if eta >= 0 else eta - math.log1p(math.exp(eta))
        total += pi * log_sigma + (1 - pi) * (log_sigma - eta)  # log(1 - sigma) = log sigma - eta
    return total


def _inverse_2x2(m: tuple[float, float, float]) -> tuple[float, float, float]:
    """Inverse of the symmetric matrix [[m0, m1], [m1, m2]], as the same triple."""
    det = m[0] * m[2] - m[1] * m[1]
    return m[2] / det, -m[1] / det, m[0] / det


def _sums(
    a: float, b: float, x: Sequence[float], p: Sequence[float]
) -> tuple[tuple[float, float], tuple[float, float, float], tuple[float, float, float]]:
    """(gradient, information A = sum w z z^T, score outer products B = sum r^2 z z^T) at (a, b),
    z = (1, x); each matrix as its upper triangle (m00, m01, m11)."""
    g0 = g1 = a00 = a01 = a11 = b00 = b01 = b11 = 0.0
    for xi, pi in zip(x, p, strict=True):
        s = sigmoid(a + b * xi)
        r, w = pi - s, s * (1 - s)
        g0, g1 = g0 + r, g1 + r * xi
        a00, a01, a11 = a00 + w, a01 + w * xi, a11 + w * xi * xi
        b00, b01, b11 = b00 + r * r, b01 + r * r * xi, b11 + r * r * xi * xi
    return (g0, g1), (a00, a01, a11), (b00, b01, b11)


def fit_logistic(x: Sequence[float], p: Sequence[float]) -> tuple[float, float, int] | None:
    """(a, b, Newton iterations) maximising the soft-label log-likelihood of logit = a + b x; None when it
    has no finite maximum or Newton does not converge. x must not be constant."""
    a = b = 0.0
    current = _log_likelihood(a, b, x, p)
    for iteration in range(1, NEWTON_MAX_ITERATIONS + 1):
        (g0, g1), info, _ = _sums(a, b, x, p)
        inv = _inverse_2x2(info)
        step_a, step_b = inv[0] * g0 + inv[1] * g1, inv[1] * g0 + inv[2] * g1
        scale = 1.0
        while _log_likelihood(a + scale * step_a, b + scale * step_b, x, p) < current and scale > 1e-8:
            scale /= 2  # a full Newton step can overshoot far from the optimum
        a, b = a + scale * step_a, b + scale * step_b
        current = _log_likelihood(a, b, x, p)
        if max(abs(a), abs(b)) > DIVERGED:
            return None
        if max(abs(scale * step_a), abs(scale * step_b)) < NEWTON_TOLERANCE:
            return a, b, iteration
    return None


def length_controlled_win_rate(
    preferences: Sequence[float], length_differences: Sequence[float]
) -> dict[str, Any]:
    """The length-controlled win rate (module docstring) with the fitted model, or a "why" when none can
    be given: fewer than two instructions, constant length differences, or no finite fit."""
    none: dict[str, Any] = {"length_controlled_win_rate": None, "lc_standard_error": None}
    if len(preferences) < 2:
        return {**none, "why": "fewer than two judged instructions"}
    scale = _sample_std(length_differences)
    if scale == 0:
        return {**none, "why": "every length difference is the same, so length effects cannot be told apart"}
    x = [math.tanh(d / scale) for d in length_differences]
    fit = fit_logistic(x, preferences)
    if fit is None:
        return {**none, "why": "the regression has no finite fit (hard preferences that length separates)"}
    a, b, iterations = fit
    _, info, outer = _sums(a, b, x, preferences)
    inv = _inverse_2x2(info)
    # Sandwich covariance A^-1 B A^-1; only its (a, a) entry is needed: row_a^T B row_a, row_a = A^-1[0].
    var_a = inv[0] * inv[0] * outer[0] + 2 * inv[0] * inv[1] * outer[1] + inv[1] * inv[1] * outer[2]
    s = sigmoid(a)
    return {
        "length_controlled_win_rate": 100 * s,
        "lc_standard_error": 100 * s * (1 - s) * math.sqrt(var_a),
        "intercept": a,
        "length_coefficient": b,
        "length_scale": scale,
        "iterations": iterations,
    }
