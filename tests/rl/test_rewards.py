from __future__ import annotations

import pytest

from lmadapt.config import VerifiableRewardConfig
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.rl.rewards import build_reward, score_completions


def test_gsm8k_reward_compares_the_last_number():
    reward = build_reward(VerifiableRewardConfig(kind="gsm8k"))
    assert reward("so 3 + 4 = 7, the answer is $1,234.", ["1234"]) == 1.0
    assert reward("The answer is 72.0", ["72"]) == 1.0
    assert reward("72 apples, then 5", ["72"]) == 0.0
    assert reward("no number here", ["72"]) == 0.0


def test_exact_match_uses_superni_normalisation_and_any_reference():
    reward = build_reward(VerifiableRewardConfig(kind="exact_match"))
    assert reward("  The Cat!", ["the cat"]) == 1.0  # case, punctuation, whitespace
    assert reward("cat", ["the cat"]) == 0.0  # articles are kept, as SuperNI keeps them
    assert reward("dog", ["cat", "Dog."]) == 1.0


def test_rouge_l_reward_is_the_superni_metric_over_one():
    reward = build_reward(VerifiableRewardConfig(kind="rouge_l"))
    assert reward("the cat sat", ["the cat sat"]) == pytest.approx(1.0)
    # LCS "the cat" of 3 and 2 tokens: P = 2/3, R = 1, F = 0.8
    assert reward("the cat sat", ["the cat"]) == pytest.approx(0.8)
    assert reward("", ["x"]) == 0.0


def test_a_user_verifier_by_module_and_function(graded_verifier):
    reward = build_reward(VerifiableRewardConfig(kind="verifier", verifier=graded_verifier))
    assert reward("\x07\x0e", ["ignored"]) == 0.0
    assert score_completions(reward, ["\x06"], [["x"]]) == [pytest.approx(6 / 7)]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (VerifiableRewardConfig(kind="verifier"), "needs reward.verifier"),
        (VerifiableRewardConfig(kind="verifier", verifier="no_colon"), "must look like 'module:function'"),
        (VerifiableRewardConfig(kind="verifier", verifier="no_such_module_xyz:f"), "cannot import"),
        (VerifiableRewardConfig(kind="verifier", verifier="math:no_such_function"), "has no function"),
        (VerifiableRewardConfig(kind="gsm8k", verifier="math:sqrt"), "set kind: verifier"),
    ],
)
def test_verifier_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_reward(cfg)


def test_a_verifier_returning_a_non_number_is_named():
    with pytest.raises(LmadaptError, match="returned 'yes' for completion 1"):
        score_completions(lambda c, t: 1.0 if c == "a" else "yes", ["a", "b"], [["x"], ["x"]])
    assert score_completions(lambda c, t: c == "a", ["a", "b"], [["x"], ["x"]]) == [1.0, 0.0]
