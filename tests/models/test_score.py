from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from support import byte_llama
from transformers import LlamaForSequenceClassification

from lmadapt.errors import LmadaptError
from lmadapt.models.score import token_scores


def _reward_model() -> LlamaForSequenceClassification:
    config = byte_llama().config
    config.num_labels, config.pad_token_id = 1, 0
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 9, 14, 20, 7, 1], [5, 11, 8, 1, 0, 0]])  # right-padded with pad id 0
    return ids, (ids != 0).long()


@pytest.mark.parametrize("lora", [False, True])
def test_token_scores_equal_the_pooled_score_at_the_last_token(lora):
    model = _reward_model()
    if lora:  # random (not zero) LoRA weights, so the adapters change the scores
        cfg = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=4, target_modules="all-linear", init_lora_weights=False
        )
        model = get_peft_model(model, cfg)
    ids, mask = _batch()
    scores = token_scores(model, ids, mask)
    assert scores.shape == (2, 6)
    with torch.no_grad():
        pooled = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    torch.testing.assert_close(scores[[0, 1], [5, 3]].detach(), pooled)
    # Each position sees only its prefix: the shorter row's scores equal those of its unpadded run.
    alone = token_scores(model, ids[1:, :4], mask[1:, :4])
    torch.testing.assert_close(scores[1, :4], alone[0])


def test_token_scores_refuse_a_model_without_a_score_head():
    with pytest.raises(LmadaptError, match="no `score` head"):
        token_scores(byte_llama(), *_batch())


def test_token_scores_of_a_left_padded_row_with_position_ids_equal_the_unpadded_row():
    model = _reward_model()
    ids = torch.tensor([[0, 0, 5, 11, 8], [5, 9, 14, 20, 7]])
    mask = (ids != 0).long()
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    scores = token_scores(model, ids, mask, positions)
    torch.testing.assert_close(scores[0, 2:], token_scores(model, ids[:1, 2:], mask[:1, 2:])[0])
