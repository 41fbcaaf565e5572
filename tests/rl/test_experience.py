from __future__ import annotations

import torch
from support import byte_llama

from lmadapt.rl.experience import completion_logps, micro_batches, select_rows


def _grouped_batch() -> dict[str, torch.Tensor]:
    """2 prompts (one left-padded) x 3 completions with ragged lengths, prompt-major."""
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 250, (2, 4), generator=gen)
    prompt_mask = torch.ones(2, 4, dtype=torch.long)
    prompt_mask[1, :2] = 0
    completion_mask = torch.ones(6, 5, dtype=torch.long)
    completion_mask[0, 3:] = 0
    completion_mask[4, 1:] = 0
    return {
        "prompt_ids": prompts.repeat_interleave(3, dim=0),
        "prompt_mask": prompt_mask.repeat_interleave(3, dim=0),
        "completion_ids": torch.randint(3, 250, (6, 5), generator=gen),
        "completion_mask": completion_mask,
        "group": torch.arange(6) // 3,
    }


def test_one_prompt_pass_per_group_scores_and_differentiates_like_full_sequences():
    model = byte_llama()
    batch = _grouped_batch()
    full_batch = {k: v for k, v in batch.items() if k != "group"}
    shared, entropy = completion_logps(model, batch, temperature=0.7, with_entropy=True)
    full, full_entropy = completion_logps(model, full_batch, temperature=0.7, with_entropy=True)
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(shared[mask], full[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[mask], full_entropy[mask], atol=1e-5, rtol=0)
    (shared * mask).sum().backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (full * mask).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(shared_grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_micro_batches_trim_padding_and_keep_rows_aligned():
    batch = {**_grouped_batch(), "advantages": torch.arange(6.0), "old_logps": torch.arange(30.0).view(6, 5)}
    parts = micro_batches(batch, range(6), 4)
    assert [len(p["group"]) for p in parts] == [4, 2]
    last = parts[1]  # rows 4 and 5: both of prompt 1 (2 real tokens), completions of 1 and 5 tokens
    assert last["prompt_ids"].shape == (2, 2) and last["completion_ids"].shape == (2, 5)
    assert last["advantages"].tolist() == [4.0, 5.0]
    only_short = select_rows(batch, [4])
    assert only_short["completion_ids"].shape == (1, 1) and only_short["old_logps"].tolist() == [[20.0]]
