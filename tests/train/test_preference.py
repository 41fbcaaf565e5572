from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lmadapt.config import LoraConfig, PreferenceLossConfig, TrainConfig
from lmadapt.data.preference import TokenizedPair, collate_pairs, with_reference
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.losses.dpo import sequence_log_probs
from lmadapt.models.load import apply_lora
from lmadapt.models.tiny import tiny_llama
from lmadapt.store import MANIFEST
from lmadapt.train.distributed import setup_accelerator
from lmadapt.train.loop import accumulate_gradients
from lmadapt.train.preference import (
    BradleyTerryReward,
    DirectPreference,
    PairStats,
    adapters_off_reference,
    compute_reference_logps,
    frozen_reference,
    load_or_compute_reference,
    reference_cache_key,
    reply_log_probs,
)

VOCAB = 40


def _pairs(n: int, seed: int = 0) -> list[TokenizedPair]:
    """Pairs with a shared prompt and replies of different lengths."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 9))]
        sides = []
        for _ in range(2):
            reply = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 8))]
            sides.append(TokenizedExample(prompt + reply, [-100] * len(prompt) + reply))
        pairs.append(TokenizedPair(*sides))
    return pairs


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=4)


def _naive_logps(model: torch.nn.Module, example: TokenizedExample) -> float:
    """Log-prob of one sequence's labelled tokens, from full logits, one sequence at a time."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].log_softmax(-1)
    return sum(logits[t - 1, label].item() for t, label in enumerate(example.labels) if t and label >= 0)


def test_reply_log_probs_of_one_concatenated_pass_match_sequences_one_by_one():
    model, pairs = _model().eval(), _pairs(3)
    calls = []
    model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    batch = collate_pairs(pairs, pad_token_id=0)
    with torch.no_grad():
        logps, lengths = reply_log_probs(model, batch)
    assert len(calls) == 1 and calls[0]["input_ids"].shape[0] == 6  # chosen and rejected in one forward
    assert 0 < calls[0]["logits_to_keep"] < batch["input_ids"].size(1)  # the shared prompt is skipped
    sides = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    for i, side in enumerate(sides):
        assert logps[i].item() == pytest.approx(_naive_logps(model, side), abs=1e-4)
        assert lengths[i].item() == sum(label >= 0 for label in side.labels)


def test_dpo_objective_weight_is_pairs_and_loss_is_log2_against_itself():
    model, pairs = _model(), _pairs(4)
    ref = compute_reference_logps(model, pairs, 0, batch_size=3, device=torch.device("cpu"))
    batch = collate_pairs(with_reference(pairs, ref), 0)
    objective = DirectPreference(PreferenceLossConfig(beta=0.1))
    assert objective.weight(batch) == 4 and objective.unit == "pairs"
    # Trained tokens are the reply tokens of both sides, not pairs.
    replies = [x >= 0 for p in pairs for side in (p.chosen, p.rejected) for x in side.labels]
    assert objective.trained_tokens(batch) == sum(replies)
    loss = objective.loss_sum(model.train(), batch)
    assert loss.item() == pytest.approx(4 * math.log(2), abs=1e-5)
    metrics = objective.pop_metrics("train")
    assert sorted(metrics) == ["rewards/accuracies", "rewards/chosen", "rewards/margins", "rewards/rejected"]
    assert [metrics[f"rewards/{k}"] for k in ("chosen", "rejected", "margins")] == pytest.approx(
        [0, 0, 0], abs=1e-5
    )
    assert objective.pop_metrics("train") == {} and objective.pop_metrics("eval") == {}


def test_reference_pass_restores_pair_order_and_mode():
    model, pairs = _model().train(), _pairs(5, seed=1)
    ref = compute_reference_logps(model, pairs, 0, batch_size=2, device=torch.device("cpu"))
    assert model.training
    for i, pair in enumerate(pairs):
        assert ref[i, 0].item() == pytest.approx(_naive_logps(model, pair.chosen), abs=1e-4)
        assert ref[i, 1].item() == pytest.approx(_naive_logps(model, pair.rejected), abs=1e-4)


def test_gradient_accumulation_over_pairs_is_exact():
    pairs = _pairs(8, seed=2)
    accelerator = setup_accelerator(TrainConfig(num_threads=1))
    cfg = PreferenceLossConfig(loss="dpo", beta=0.5)
    ref = compute_reference_logps(_model(1), pairs, 0, 8, torch.device("cpu"))  # another model: margins != 0
    pairs = with_reference(pairs, ref)
    grads, losses = [], []
    for micro in (8, 2):
        model = _model()
        batches = [collate_pairs(pairs[i : i + micro], 0) for i in range(0, 8, micro)]
        loss, weight, _ = accumulate_gradients(model, DirectPreference(cfg), batches, accelerator)
        assert weight == 8
        losses.append(loss)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] != pytest.approx(8 * math.log(2))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss", ["dpo_norm", "ipo", "simpo"])
def test_variants_use_reply_lengths(loss):
    model, pairs = _model(), _pairs(3, seed=3)
    ref = compute_reference_logps(_model(1), pairs, 0, 3, torch.device("cpu"))
    batch = collate_pairs(with_reference(pairs, ref), 0)
    cfg = PreferenceLossConfig(loss=loss, beta=0.2, gamma=0.3)
    got = DirectPreference(cfg).loss_sum(model, batch).item()
    with torch.no_grad():
        logps, lengths = reply_log_probs(model, batch)
    pc, pr = logps.chunk(2)
    rc, rr = ref[:, 0], ref[:, 1]
    lc, lr = lengths.chunk(2)
    if loss == "simpo":
        expected = -torch.nn.functional.logsigmoid(0.2 * pc / lc - 0.2 * pr / lr - 0.3).sum()
    elif loss == "ipo":
        expected = (((pc - rc) / lc - (pr - rr) / lr - 1 / 0.4) ** 2).sum()
    else:
        expected = -torch.nn.functional.logsigmoid(0.2 * ((pc - rc) / lc - (pr - rr) / lr)).sum()
    assert got == pytest.approx(expected.item(), rel=1e-5)


def test_online_references_disabled_adapters_and_frozen_copy():
    base, pairs = _model(), _pairs(3, seed=4)
    batch = collate_pairs(pairs, 0)
    with torch.no_grad():
        expected = reply_log_probs(base, batch)[0]
    frozen = frozen_reference(_model())
    torch.testing.assert_close(frozen(base, batch), expected)

    policy = apply_lora(_model(), LoraConfig(enabled=True, r=2), "causal", seed=0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_()  # a trained adapter
        assert (reply_log_probs(policy, batch)[0] - expected).abs().max() > 1e-3
    torch.testing.assert_close(adapters_off_reference(policy, batch), expected)
    # Two forwards of one model per step: the policy and, adapters off, the reference.
    calls = []
    policy.register_forward_hook(lambda *_: calls.append(1))
    DirectPreference(PreferenceLossConfig(), adapters_off_reference).loss_sum(policy, batch)
    assert len(calls) == 2


def test_reference_cache_computes_once_and_rebuilds_corrupt_entries(tmp_path, caplog):
    computed = []

    def compute():
        computed.append(1)
        return torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])

    logps, hit = load_or_compute_reference(tmp_path, "k1", 2, compute)
    assert not hit and computed == [1]
    again, hit = load_or_compute_reference(tmp_path, "k1", 2, compute)
    assert hit and computed == [1] and torch.equal(again, logps)
    files = sorted(p.name for p in (tmp_path / "reference" / "k1").iterdir())
    assert files == [MANIFEST, "ref_logps.safetensors"]
    (tmp_path / "reference" / "k1" / "ref_logps.safetensors").write_bytes(b"garbage")
    caplog.set_level("WARNING", logger="lmadapt")
    _, hit = load_or_compute_reference(tmp_path, "k1", 2, compute)
    assert not hit and computed == [1, 1] and "unusable" in caplog.text
    _, hit = load_or_compute_reference(tmp_path, "k1", 3, lambda: torch.zeros(3, 2))  # other count
    assert not hit


def test_reference_key_tracks_weights_precision_and_data(tmp_path):
    model_dir = tmp_path / "m"
    _model().save_pretrained(model_dir)
    key = reference_cache_key(model_dir, "torch.float32/no", "data1")
    assert key == reference_cache_key(model_dir, "torch.float32/no", "data1")
    assert key != reference_cache_key(model_dir, "torch.bfloat16/no", "data1")
    assert key != reference_cache_key(model_dir, "torch.float32/no", "data2")
    _model(seed=1).save_pretrained(model_dir)
    assert key != reference_cache_key(model_dir, "torch.float32/no", "data1")


def test_pair_stats_average_over_pairs():
    stats = PairStats()
    stats.add(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    stats.add(torch.tensor([3.0]), torch.tensor([1.0]))
    assert stats.pop("x_") == {
        "x_rewards/chosen": pytest.approx(4 / 3),
        "x_rewards/rejected": pytest.approx(2 / 3),
        "x_rewards/margins": pytest.approx(2 / 3),
        "x_rewards/accuracies": pytest.approx(2 / 3),
    }


def test_bradley_terry_objective_scores_both_sides_in_one_pass():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=1,
        pad_token_id=0,
    )
    model = LlamaForSequenceClassification(config).eval()
    pairs = _pairs(3, seed=5)
    batch = collate_pairs(pairs, 0)
    objective = BradleyTerryReward()
    loss = objective.loss_sum(model, batch)
    with torch.no_grad():
        scores = [
            model(input_ids=torch.tensor([s.input_ids])).logits.item()
            for p in pairs
            for s in (p.chosen, p.rejected)
        ]
    expected = sum(math.log1p(math.exp(-(c - r))) for c, r in zip(scores[::2], scores[1::2], strict=True))
    assert objective.weight(batch) == 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert objective.pop_metrics("eval")["eval_rewards/accuracies"] == pytest.approx(
        sum(c > r for c, r in zip(scores[::2], scores[1::2], strict=True)) / 3
    )


def test_sequence_log_probs_is_what_reply_log_probs_uses():
    model, pairs = _model().eval(), _pairs(2, seed=6)
    batch = collate_pairs(pairs, 0)
    with torch.no_grad():
        full = sequence_log_probs(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["labels"],
        )
        kept = reply_log_probs(model, batch)
    torch.testing.assert_close(kept[0], full[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(kept[1], full[1])
