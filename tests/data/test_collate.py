from __future__ import annotations

import torch

from lmadapt.data.collate import collate_causal, collate_packed, collate_seq2seq, pad_right
from lmadapt.data.tokenize import TokenizedExample


def test_collate_causal_pads_right():
    batch = collate_causal(
        [TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8], [8])],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_seq2seq_pads_encoder_and_labels_separately():
    batch = collate_seq2seq(
        [TokenizedExample([5, 6, 1], [9, 1]), TokenizedExample([7, 1], [4, 4, 4, 1])],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 1], [7, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[9, 1, -100, -100], [4, 4, 4, 1]]


def test_pad_right_handles_empty_rows():
    assert pad_right([[], [3]], value=-1).tolist() == [[-1], [3]]
    assert pad_right([], value=0).shape == (0, 0)


def test_collate_packed_restarts_positions_and_never_predicts_across_examples():
    batch = collate_packed(
        [
            [TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8, 9], [8, 9])],
            [TokenizedExample([4], [4])],
        ],
        pad_token_id=0,
    )
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 0, 0, 0, 0]]
    # Token 8 would be predicted from 7 (the previous example): its label is dropped, as unpacked
    # training (which never predicts an example's first token) does.
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, -100, -100, -100, -100]]
    # The padding tail is a segment of its own (positions restart there too).
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
