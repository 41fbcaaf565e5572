from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from support import save_byte_reward_model
from transformers import AutoModelForCausalLM, ByT5Tokenizer, LlamaForSequenceClassification

from lmadapt.data.templates import TULU_JINJA
from lmadapt.errors import ConfigError
from lmadapt.eval.alpaca import judge_prompt
from lmadapt.eval.judges import LanguageModelJudge, RewardModelJudge
from lmadapt.eval.prompts import PromptEncoder, chat_template_for
from lmadapt.eval.sources import ModelSource

ITEMS = [("Add 1+1.", "2", "It is 3."), ("Name a colour.", "blue", "The sky.")]


def label_probabilities(model, prompt: str) -> tuple[float, float]:
    """P(a), P(b) as the next byte after a plain prompt, by hand (ByT5 ids are bytes + 3)."""
    with torch.no_grad():
        logits = model(torch.tensor([[b + 3 for b in prompt.encode()]])).logits[0, -1].double()
    probs = logits.softmax(-1)
    return float(probs[ord("a") + 3]), float(probs[ord("b") + 3])


def test_lm_judge_reads_both_orders_from_the_label_tokens(tiny_llama_dir: Path) -> None:
    judge = LanguageModelJudge(ModelSource(str(tiny_llama_dir), batch_size=3), max_length=2048)
    verdicts = judge.judge(ITEMS)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    for (instruction, output, reference), (preference, measured) in zip(ITEMS, verdicts, strict=True):
        a1, b1 = label_probabilities(model, judge_prompt(instruction, output, reference, chat=False))
        a2, b2 = label_probabilities(model, judge_prompt(instruction, reference, output, chat=False))
        assert measured["model_first"] == pytest.approx(a1 / (a1 + b1), abs=1e-6)
        assert measured["model_second"] == pytest.approx(b2 / (a2 + b2), abs=1e-6)
        assert preference == pytest.approx((a1 / (a1 + b1) + b2 / (a2 + b2)) / 2, abs=1e-6)
    assert judge.settings() == {
        "judge": str(tiny_llama_dir),
        "judge_type": "lm",
        "judge_chat_template": False,
        "judge_max_length": 2048,
        "judge_cut_pairs": 0,
    }


class PositionBiasedSource:
    """A chat judge that always rates label (a) e times as likely as (b), whatever it reads."""

    def __init__(self):
        tokenizer = ByT5Tokenizer()
        tokenizer.chat_template = TULU_JINJA
        self.encoder = PromptEncoder(tokenizer, "causal", chat_template_for(tokenizer, "on"))
        self.prompts: list[list[int]] = []
        self.path = "biased"

    def uses_chat_template(self) -> bool:
        return True

    def score_next_tokens(self, prompts, token_ids, desc):
        self.prompts = list(prompts)
        return [[0.0, -1.0] for _ in prompts]


def test_asking_both_orders_cancels_a_position_bias() -> None:
    source = PositionBiasedSource()
    (preference, measured), _ = LanguageModelJudge(source, max_length=2048).judge(ITEMS)
    assert measured == {
        "model_first": pytest.approx(1 / (1 + math.exp(-1))),
        "model_second": pytest.approx(1 / (1 + math.e)),
    }
    assert preference == pytest.approx(0.5, abs=1e-12)
    # Through the chat template the judge's reply starts with the cue.
    text = source.encoder.tokenizer.decode(source.prompts[1])
    assert text.startswith("<|user|>\n" + judge_prompt("Add 1+1.", "It is 3.", "2", chat=True))
    assert text.endswith("<|assistant|>\nOutput (")


def test_reward_judge_prefers_by_the_reward_difference(tmp_path: Path) -> None:
    reward_model_dir = save_byte_reward_model(tmp_path / "rm")
    verdicts = RewardModelJudge(reward_model_dir, max_length=512, batch_size=2).judge(ITEMS)
    model = LlamaForSequenceClassification.from_pretrained(reward_model_dir).eval()
    tokenizer = ByT5Tokenizer.from_pretrained(reward_model_dir)

    def reward(instruction: str, reply: str) -> float:
        messages = [{"role": "user", "content": instruction}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(prompt + reply + tokenizer.eos_token, add_special_tokens=False)
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits.item()

    for (instruction, output, reference), (preference, measured) in zip(ITEMS, verdicts, strict=True):
        r_model, r_reference = reward(instruction, output), reward(instruction, reference)
        assert measured["reward_model"] == pytest.approx(r_model, abs=1e-5)
        assert measured["reward_reference"] == pytest.approx(r_reference, abs=1e-5)
        assert preference == pytest.approx(1 / (1 + math.exp(r_reference - r_model)), abs=1e-6)

    with pytest.raises(ConfigError, match="alone fills the judge's 8 tokens: raise --judge-max-length"):
        RewardModelJudge(reward_model_dir, max_length=8, batch_size=2).judge(ITEMS)


def test_lm_judge_cuts_the_longer_output_first_to_fit_its_window() -> None:
    source = PositionBiasedSource()
    frame = len(source.encoder.encode_with_reply_start(judge_prompt("Hi.", "", "", chat=True), "Output ("))
    judge = LanguageModelJudge(source, max_length=frame + 10)  # ByT5: one token per byte
    judge.judge([("Hi.", "x" * 20, "yyy"), ("Hi.", "ab", "cd")])
    # Room 10: "yyy" keeps its 3 tokens, the 20 x's the other 7; the second pair fits whole.
    assert source.prompts[0] == source.encoder.encode_with_reply_start(
        judge_prompt("Hi.", "x" * 7, "yyy", chat=True), "Output ("
    )
    assert len(source.prompts[0]) == frame + 10
    assert source.encoder.tokenizer.decode(source.prompts[2]).count("ab") == 1
    assert judge.settings()["judge_cut_pairs"] == 1
    with pytest.raises(ConfigError, match="leaves no room for the outputs in 5 tokens"):
        LanguageModelJudge(source, max_length=5).judge(ITEMS)
