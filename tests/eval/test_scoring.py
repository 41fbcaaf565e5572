from __future__ import annotations

import io

import pytest
import torch
from transformers import ByT5Tokenizer

from lmadapt.data.preference import TokenizedPair, collate_pairs
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.eval import scoring
from lmadapt.eval.progress import Progress
from lmadapt.eval.scoring import score_replies
from lmadapt.train.preference import reply_log_probs

TOK = ByT5Tokenizer()


def reference_seq2seq(model, context: list[int], reply: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context]), labels=torch.tensor([reply])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(log_probs[j, token]) for j, token in enumerate(reply))


ROWS = [
    (TOK("The capital of France is")["input_ids"][:-1], TOK(" Paris")["input_ids"][:-1]),
    (TOK("Q:")["input_ids"][:-1], TOK(" a longer answer")["input_ids"][:-1]),
    (TOK("A fairly long question about nothing in particular?")["input_ids"][:-1], [40]),
    (TOK("2+2=")["input_ids"][:-1], TOK("4")["input_ids"][:-1]),
    (TOK("Hi")["input_ids"][:-1], TOK(" there, friend")["input_ids"][:-1]),
]


@pytest.mark.parametrize(("batch_size", "logits_to_keep"), [(1, True), (2, False), (5, True)])
def test_batched_decoder_only_scores_equal_one_by_one(
    llama, causal_reply_log_prob, monkeypatch, batch_size: int, logits_to_keep: bool
) -> None:
    monkeypatch.setattr(scoring, "_accepts_logits_to_keep", lambda model_cls: logits_to_keep)
    stream = io.StringIO()
    with Progress(len(ROWS), "scoring", stream=stream) as progress:
        got = score_replies(llama, ROWS, batch_size=batch_size, progress=progress)
    assert got == pytest.approx([causal_reply_log_prob(llama, c, a) for c, a in ROWS], abs=1e-5)
    assert len({round(x, 3) for x in got}) == len(ROWS)  # the rows really differ
    assert progress.done == len(ROWS) and stream.getvalue().startswith("scoring: 5/5 (100%)")


def test_batched_encoder_decoder_scores_equal_one_by_one(t5) -> None:
    rows = [([*TOK(c + a)["input_ids"][:6], 1], a) for c, a in ROWS]  # encoder inputs end with EOS
    expected = [reference_seq2seq(t5, c, a) for c, a in rows]
    for batch_size in (1, 3):
        assert score_replies(t5, rows, batch_size=batch_size) == pytest.approx(expected, abs=1e-5)


def test_dpo_and_multiple_choice_score_a_reply_alike(llama) -> None:
    """DPO's batches (`collate_pairs`) and multiple choice's rows go through the same scorer."""
    pairs = [
        TokenizedPair(*(TokenizedExample(p + r, [-100] * len(p) + r) for p, r in (ROWS[i], ROWS[i + 1])))
        for i in (0, 2)
    ]
    with torch.no_grad():
        logps, lengths = reply_log_probs(llama, collate_pairs(pairs, pad_token_id=0))
    sides = [ROWS[0], ROWS[2], ROWS[1], ROWS[3]]  # chosen sides, then rejected sides
    assert logps.tolist() == pytest.approx(score_replies(llama, sides, batch_size=4), abs=1e-5)
    assert lengths.tolist() == [len(reply) for _, reply in sides]


@pytest.mark.parametrize(("batch_size", "logits_to_keep"), [(1, True), (2, False), (5, True)])
def test_next_token_scores_equal_single_token_replies(
    llama, t5, monkeypatch, batch_size: int, logits_to_keep: bool
) -> None:
    """One pass per prompt gives what scoring each candidate as a one-token reply gives (prompts of unequal
    length share a batch, so each row's position is found on its own)."""
    monkeypatch.setattr(scoring, "_accepts_logits_to_keep", lambda model_cls: logits_to_keep)
    candidates = [68, 40, 71, 3]
    prompts = [context for context, _ in ROWS]
    for model, rows in ((llama, prompts), (t5, [[*p[:6], 1] for p in prompts])):
        got = scoring.score_next_tokens(model, rows, candidates, batch_size=batch_size)
        flat = score_replies(model, [(p, [c]) for p in rows for c in candidates], batch_size=batch_size)
        expected = [flat[i : i + len(candidates)] for i in range(0, len(flat), len(candidates))]
        assert [row for row in got] == [pytest.approx(row, abs=1e-5) for row in expected]
        assert len({round(row[0], 3) for row in got}) == len(rows)  # the prompts really differ
