from __future__ import annotations

import pytest
import torch
from support import byte_llama, byte_t5


@pytest.fixture(scope="module")
def llama():
    """A tiny random Llama over ByT5's byte vocabulary, in eval mode."""
    return byte_llama().eval()


@pytest.fixture(scope="module")
def t5():
    """A tiny random T5 over ByT5's byte vocabulary, in eval mode."""
    model = byte_t5().eval()
    with torch.no_grad():  # untied random T5 logits are in the hundreds: beyond float32's 1e-5 at that size
        model.lm_head.weight.mul_(0.05)
    return model


def _causal_reply_log_prob(model, context: list[int], reply: list[int]) -> float:
    """One row alone, from full float64 log-softmax: sum of log p(reply[j] | everything before it)."""
    with torch.no_grad():
        logits = model(torch.tensor([context + reply])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(log_probs[len(context) - 1 + j, token]) for j, token in enumerate(reply))


@pytest.fixture
def causal_reply_log_prob():
    return _causal_reply_log_prob
