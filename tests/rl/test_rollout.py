from __future__ import annotations

import torch
from support import byte_llama
from transformers import ByT5Tokenizer

from lmadapt.config import RolloutConfig
from lmadapt.rl.experience import completion_logps, from_rollouts
from lmadapt.rl.rollout import TransformersRollout, completion_mask, left_pad

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


def _sample(model, seed: int, **settings) -> tuple:
    cfg = RolloutConfig(num_generations=3, max_new_tokens=6, temperature=0.8, **settings)
    return TransformersRollout(ByT5Tokenizer()).generate(model, PROMPTS, cfg, seed)


def test_g_completions_per_prompt_with_the_samplers_log_probs():
    model = byte_llama()
    rollouts = _sample(model, seed=1, batch_size=4)  # 9 rows in generate calls of 4, 4 and 1
    assert len(rollouts) == 9 and rollouts.group_size == 3
    for row in range(9):
        real = rollouts.prompt_ids[row][rollouts.prompt_mask[row] == 1].tolist()
        assert real == PROMPTS[row // 3]  # prompt-major, left-padded
    # The sampler's log-probs (KV cache, padded batches) are the policy's at the sampling temperature.
    logps, _ = completion_logps(model, from_rollouts(rollouts), temperature=0.8)
    mask = rollouts.completion_mask.bool()
    torch.testing.assert_close(rollouts.sampling_logps[mask], logps[mask].detach(), atol=1e-5, rtol=0)
    assert (rollouts.sampling_logps[~mask] == 0).all()
    # Completions within a group differ: they are samples, not copies.
    assert len({tuple(rollouts.completion_ids[r].tolist()) for r in range(3)}) > 1


def test_sampling_is_a_function_of_the_seed_and_leaves_the_global_rng_alone():
    model = byte_llama()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = _sample(model, seed=7)
    assert torch.equal(torch.rand(1), before)
    again, other = _sample(model, seed=7), _sample(model, seed=8)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert torch.equal(first.sampling_logps, again.sampling_logps)
    assert not torch.equal(first.completion_ids, other.completion_ids)


def test_tiny_top_p_samples_the_argmax_with_probability_one():
    model = byte_llama()
    rollouts = _sample(model, seed=0, top_p=1e-6)
    logps, _ = completion_logps(model, from_rollouts(rollouts), temperature=0.8)
    assert (rollouts.completion_ids[:, 0] == rollouts.completion_ids[0, 0]).sum() >= 3
    assert rollouts.sampling_logps.abs().max() < 1e-6  # the nucleus holds one token
    assert logps.max() < -1  # which the unrestricted policy finds far from certain


def test_completion_mask_ends_at_the_first_eos():
    completion = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [2, 5, 5, 5]])
    mask, ended = completion_mask(completion, eos_ids=[1, 2])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_left_pad():
    ids, mask = left_pad([[3, 4], [5]], pad_id=0)
    assert ids.tolist() == [[3, 4], [0, 5]] and mask.tolist() == [[1, 1], [0, 1]]
