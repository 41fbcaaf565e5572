"""The local judges of `lmadapt eval alpaca`: a trained reward model, or a causal LM reading a pairwise
prompt. Each turns (instruction, model output, reference output) triples into preferences for the model's
output (`eval.alpaca` says how, and how identical outputs are settled before a judge is asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmadapt.data.preference import PreferencePair
from lmadapt.errors import ConfigError
from lmadapt.eval.alpaca import JUDGE_CUE, judge_prompt, label_token_ids
from lmadapt.eval.rewards import RewardScorer
from lmadapt.eval.sources import ModelSource
from lmadapt.eval.winrate import sigmoid

Verdict = tuple[float, dict[str, float]]


class RewardModelJudge:
    """A reward model from `lmadapt reward`: each output is scored as the reply to the instruction (a user
    turn of the chat template saved with the model), cut to `max_length` tokens with its prompt; the
    preference is sigmoid(r_model - r_reference)."""

    def __init__(self, path: str | Path, max_length: int, batch_size: int):
        self.scorer = RewardScorer(path, "tokenizer", max_length, batch_size)

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        pairs = [
            PreferencePair([{"role": "user", "content": instruction}], output, reference, "alpaca", i)
            for i, (instruction, output, reference) in enumerate(items)
        ]
        kept = self.scorer.tokenize(pairs)
        dropped = sorted(set(range(len(pairs))) - {i for i, _ in kept})
        if dropped:
            raise ConfigError(
                f"the instruction {items[dropped[0]][0][:60]!r} alone fills the judge's "
                f"{self.scorer.max_length} tokens: raise --judge-max-length"
            )
        chosen, rejected = self.scorer.score([tokenized for _, tokenized in kept], "judge")
        return [
            (sigmoid(r_model - r_reference), {"reward_model": r_model, "reward_reference": r_reference})
            for r_model, r_reference in zip(chosen, rejected, strict=True)
        ]

    def settings(self) -> dict[str, Any]:
        return {
            "judge": str(self.scorer.path),
            "judge_type": "reward",
            "judge_max_length": self.scorer.max_length,
        }


class LanguageModelJudge:
    """A causal LM asked `eval.alpaca.judge_prompt` in both orders; in each, its preference for the model's
    output is the model's label's share of the two label tokens' probabilities after "Output (". A prompt
    is kept within `max_length` tokens by cutting the ends of the outputs (the longer one first); the
    judge then sees the cut texts, and `settings` counts the pairs so cut."""

    def __init__(self, source: ModelSource, max_length: int):
        self.source, self.max_length, self.cut_pairs = source, max_length, 0

    def _fit(self, instruction: str, output: str, reference: str, chat: bool) -> tuple[str, str]:
        encoder = self.source.encoder
        frame = len(encoder.encode_with_reply_start(judge_prompt(instruction, "", "", chat), JUDGE_CUE))
        room = self.max_length - frame
        if room < 2:
            raise ConfigError(
                f"the judge prompt for {instruction[:60]!r} leaves no room for the outputs in "
                f"{self.max_length} tokens: raise --judge-max-length"
            )
        ids = [encoder.tokenizer(text, add_special_tokens=False)["input_ids"] for text in (output, reference)]
        if len(ids[0]) + len(ids[1]) <= room:
            return output, reference
        self.cut_pairs += 1
        # Each output keeps half the room, and one takes what the other leaves; counted as each encodes
        # alone, so the prompt can differ from `max_length` by the tokens that merge across a boundary.
        first = min(len(ids[0]), max(room // 2, room - len(ids[1])))
        decode = encoder.tokenizer.decode
        return decode(ids[0][:first], skip_special_tokens=True), decode(
            ids[1][: room - first], skip_special_tokens=True
        )

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        encoder, chat = self.source.encoder, self.source.uses_chat_template()
        labels = label_token_ids(encoder.tokenizer)
        fitted = [(instruction, *self._fit(instruction, out, ref, chat)) for instruction, out, ref in items]
        prompts = [
            encoder.encode_with_reply_start(judge_prompt(instruction, a, b, chat), JUDGE_CUE)
            for instruction, output, reference in fitted
            for a, b in ((output, reference), (reference, output))
        ]
        scores = self.source.score_next_tokens(prompts, labels, "judge")
        verdicts = []
        for k in range(len(items)):
            (first_a, first_b), (second_a, second_b) = scores[2 * k], scores[2 * k + 1]
            model_first = sigmoid(first_a - first_b)  # P(a) / (P(a) + P(b)): the model's output is (a)
            model_second = sigmoid(second_b - second_a)  # ... and then (b)
            verdicts.append(
                ((model_first + model_second) / 2, {"model_first": model_first, "model_second": model_second})
            )
        return verdicts

    def settings(self) -> dict[str, Any]:
        return {
            "judge": self.source.path,
            "judge_type": "lm",
            "judge_chat_template": self.source.uses_chat_template(),
            "judge_max_length": self.max_length,
            "judge_cut_pairs": self.cut_pairs,
        }
