from __future__ import annotations

import torch

from lmadapt.selection.pooling import l2_normalize, mean_pool, position_weighted_mean


def _loop_weighted_mean(hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Straight from the definition: token t (1-based) of n real tokens weighs t / (1 + 2 + ... + n)."""
    rows = []
    for states, n in zip(hidden, lengths, strict=True):
        total = sum(range(1, n + 1))
        rows.append(sum((t + 1) / total * states[t] for t in range(n)))
    return torch.stack(rows)


def test_position_weighted_mean_equals_the_definition_and_ignores_right_padding():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    torch.testing.assert_close(position_weighted_mean(hidden, mask), _loop_weighted_mean(hidden, lengths))


def test_position_weighted_mean_counts_positions_from_the_first_real_token_under_left_padding():
    torch.manual_seed(1)
    states = torch.randn(1, 3, 4)
    right = torch.cat([states, torch.randn(1, 2, 4)], dim=1)
    left = torch.cat([torch.randn(1, 2, 4), states], dim=1)
    got_right = position_weighted_mean(right, torch.tensor([[1, 1, 1, 0, 0]]))
    got_left = position_weighted_mean(left, torch.tensor([[0, 0, 1, 1, 1]]))
    torch.testing.assert_close(got_left, got_right)
    # later tokens weigh more: not the plain mean
    assert not torch.allclose(got_right, states.mean(dim=1))


def test_mean_pool_and_normalisation_match_a_loop():
    torch.manual_seed(2)
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    expected = torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)
    unit = l2_normalize(expected)
    for row, original in zip(unit, expected, strict=True):
        torch.testing.assert_close(row.norm(), torch.tensor(1.0))
        torch.testing.assert_close(row * original.norm(), original)
