"""Per-position outputs of a scalar-head model (a reward model's head read at every token: a value model).

A Hugging Face sequence-classification model pools its head's output at the last non-pad token; PPO's
value model needs it at every position. `token_scores` runs the same backbone and head without the
pooling, so at the position the pooling picks it equals the model's own score.
"""

from __future__ import annotations

import torch

from lmadapt.errors import LmadaptError


def token_scores(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The scalar head applied to every position's final hidden state. ids, mask: [B, L] -> [B, L].

    position_ids [B, L]: needed for left-padded rows (the backbone otherwise counts padding as positions).

    `model` is a transformers *ForSequenceClassification with one label and a `score` head (Llama,
    Mistral, Qwen, GPT-2...), or a PEFT wrapper of one.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(inner, "score", None)
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    if not isinstance(head, torch.nn.Module) or backbone is None:
        raise LmadaptError(
            f"{type(inner).__name__} has no `score` head over a backbone; a value model needs one"
        )
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return head(hidden).squeeze(-1)
