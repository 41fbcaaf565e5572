from __future__ import annotations

import math
import random

import pytest

from lmadapt.eval import winrate
from lmadapt.eval.winrate import length_controlled_win_rate, win_rate_metrics


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_win_rate_counts_draws_as_half_and_uses_the_sample_standard_error() -> None:
    preferences = [1.0, 0.5, 0.0, 0.75, 0.5]
    metrics = win_rate_metrics(preferences)
    # mean 2.75/5 = 0.55; deviations .45 -.05 -.55 .2 -.05: squares sum .2025+.0025+.3025+.04+.0025 = .55
    assert metrics["win_rate"] == pytest.approx(55.0)
    assert metrics["standard_error"] == pytest.approx(100 * math.sqrt(0.55 / 4) / math.sqrt(5))
    # wins: 1.0 and 0.75; draws: the two 0.5; discrete (2 + 2/2)/5
    assert (metrics["n_wins"], metrics["n_losses"], metrics["n_draws"], metrics["n_total"]) == (2, 1, 2, 5)
    assert metrics["discrete_win_rate"] == pytest.approx(60.0)
    assert win_rate_metrics([0.8])["standard_error"] is None


def test_length_control_on_two_symmetric_groups_has_a_closed_form() -> None:
    """With length differences +-d the model is saturated: sigma(a +- b t) equals each group's mean
    preference, so a = (logit p+ + logit p-)/2, and the sandwich variance of a is the sum of the groups'
    delta-method variances of logit(mean) over 4."""
    longer, shorter = [0.9, 0.7, 0.8, 0.6], [0.3, 0.5, 0.2]
    preferences = longer + shorter
    differences = [40.0] * len(longer) + [-40.0] * len(shorter)
    result = length_controlled_win_rate(preferences, differences)

    def group(values: list[float]) -> tuple[float, float]:
        mean = sum(values) / len(values)
        var_mean = sum((v - mean) ** 2 for v in values) / len(values) ** 2
        return logit(mean), var_mean / (mean * (1 - mean)) ** 2

    (eta_plus, var_plus), (eta_minus, var_minus) = group(longer), group(shorter)
    a = (eta_plus + eta_minus) / 2
    s = 1 / (1 + math.exp(-a))
    assert result["intercept"] == pytest.approx(a, abs=1e-9)
    assert result["length_controlled_win_rate"] == pytest.approx(100 * s, abs=1e-7)
    assert result["lc_standard_error"] == pytest.approx(
        100 * s * (1 - s) * math.sqrt((var_plus + var_minus) / 4), rel=1e-7
    )
    t = math.tanh(40 / result["length_scale"])
    assert result["length_coefficient"] == pytest.approx((eta_plus - eta_minus) / (2 * t), abs=1e-9)
    # The raw win rate favours the longer outputs' group (4 of 7); the controlled one weighs them equally.
    assert win_rate_metrics(preferences)["win_rate"] == pytest.approx(100 * 4 / 7)


def test_length_control_matches_sklearn_with_alpacaevals_soft_label_trick() -> None:
    """AlpacaEval fits soft labels by duplicating each row as label 1 (weight p) and label 0 (weight 1-p);
    unpenalised, that is the same likelihood."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    differences = [rng.gauss(0, 300) for _ in range(60)]
    preferences = [min(max(0.35 + d / 900 + rng.gauss(0, 0.2), 0.01), 0.99) for d in differences]
    result = length_controlled_win_rate(preferences, differences)

    scale = float(np.std(differences, ddof=1))
    x = np.tanh(np.array(differences) / scale)[:, None]
    model = sklearn.LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)  # no penalty
    weights = np.concatenate([preferences, 1 - np.array(preferences)])
    model.fit(np.vstack([x, x]), np.r_[np.ones(60), np.zeros(60)], sample_weight=weights)
    assert result["intercept"] == pytest.approx(model.intercept_[0], abs=1e-6)
    assert result["length_coefficient"] == pytest.approx(model.coef_[0, 0], abs=1e-6)
    assert result["length_coefficient"] > 0  # longer model outputs were preferred in this sample


def test_a_length_biased_judge_moves_the_win_rate_but_not_the_controlled_figure() -> None:
    """Preferences that are exactly the model's form with no quality difference (a = 0) and a strong taste
    for longer outputs: a verbose model's raw win rate is far above 50, the controlled figure is 50."""
    rng = random.Random(0)
    differences = [rng.gauss(250, 300) for _ in range(400)]  # the model writes longer outputs
    mean = sum(differences) / len(differences)
    scale = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
    preferences = [1 / (1 + math.exp(-2.0 * math.tanh(d / scale))) for d in differences]
    assert win_rate_metrics(preferences)["win_rate"] > 65  # 68.3
    result = length_controlled_win_rate(preferences, differences)
    assert result["length_controlled_win_rate"] == pytest.approx(50.0, abs=1e-6)
    assert result["length_coefficient"] == pytest.approx(2.0, abs=1e-6)


def test_fit_is_the_maximum_of_the_likelihood() -> None:
    """Brute force: no point of a fine grid around the fit has a higher log-likelihood."""
    x = [-0.9, -0.4, 0.1, 0.5, 0.95, 0.3]
    p = [0.2, 0.6, 0.4, 0.7, 0.9, 0.5]
    a, b, _ = winrate.fit_logistic(x, p)
    best = winrate._log_likelihood(a, b, x, p)
    for i in range(-20, 21):
        for j in range(-20, 21):
            assert winrate._log_likelihood(a + i * 0.01, b + j * 0.01, x, p) <= best + 1e-12


def test_length_control_says_why_when_it_has_no_figure() -> None:
    assert "fewer than two" in length_controlled_win_rate([0.7], [3.0])["why"]
    constant = length_controlled_win_rate([0.7, 0.2], [5.0, 5.0])
    assert constant["length_controlled_win_rate"] is None and "same" in constant["why"]
    # Hard labels that length separates perfectly: the likelihood grows without bound.
    separated = length_controlled_win_rate([1.0, 1.0, 0.0, 0.0], [10.0, 20.0, -10.0, -20.0])
    assert separated["length_controlled_win_rate"] is None and "no finite fit" in separated["why"]
