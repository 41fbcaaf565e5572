"""The saved chat template reproduces training: same ids from plain `apply_chat_template`, and plain
`generate` stops at the end of the assistant turn (chatml markers are trained special tokens)."""

from __future__ import annotations

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer, GenerationConfig

from lmadapt.config import LoraConfig
from lmadapt.data.render import render_examples
from lmadapt.data.templates import get_template
from lmadapt.errors import ConfigError
from lmadapt.models.load import apply_lora
from lmadapt.models.tiny import tiny_llama, tiny_t5
from lmadapt.models.vocab import fit_model_to_template

from .conftest import CONVERSATIONS, messages


@pytest.mark.parametrize(
    ("template", "lora"), [("tulu", False), ("chatml", False), ("tokenizer", False), ("chatml", True)]
)
def test_saved_template_gives_trained_ids_and_generation_stops_at_end_of_turn(
    template, lora, chat_model_dir, chat_data, train_sft, tmp_path
):
    base = chat_model_dir
    if lora:  # the usual path: LoRA moves an instruction-tuned model to a new template with new markers
        base = train_sft(chat_model_dir, "data.template=tulu", f"train.output_dir={tmp_path / 'sft'}").out_dir
    run = train_sft(
        base, f"data.template={template}", f"model.lora.enabled={str(lora).lower()}", "train.lr=1e-2"
    )
    trained = render_examples(chat_data, template, AutoTokenizer.from_pretrained(base))
    saved = AutoTokenizer.from_pretrained(run.out_dir)
    if lora:  # plain PEFT; the adapter carries the generation config that stops at the end of turn
        model = AutoPeftModelForCausalLM.from_pretrained(run.out_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(run.out_dir)
    generation = GenerationConfig.from_pretrained(run.out_dir)
    end_of_turn = saved.convert_tokens_to_ids("<|im_end|>" if template == "chatml" else saved.eos_token)
    eos = generation.eos_token_id
    assert end_of_turn in ([eos] if isinstance(eos, int) else eos)
    for (user, reply), example in zip(CONVERSATIONS, trained, strict=True):
        ids = saved.apply_chat_template(messages(user, reply), tokenize=True)["input_ids"]
        assert ids == example["input_ids"]
        assert ids[0] == saved.bos_token_id
        prompt = saved.apply_chat_template(messages(user, reply)[:1], add_generation_prompt=True)["input_ids"]
        generation.update(max_new_tokens=10, do_sample=False)
        out = model.generate(torch.tensor([prompt]), generation_config=generation)[0, len(prompt) :]
        # The memorised reply, ending with its end-of-turn token, and nothing after it.
        assert out.tolist() == [t for t in example["labels"] if t != -100]
        assert out[-1] == end_of_turn


def test_chatml_markers_become_special_tokens_trained_in_the_adapter(chat_model_dir, train_sft):
    base_vocab = len(AutoTokenizer.from_pretrained(chat_model_dir))
    run = train_sft(chat_model_dir, "data.template=chatml", "model.lora.enabled=true", "train.max_steps=2")
    saved = AutoTokenizer.from_pretrained(run.out_dir)
    markers = saved.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert markers == [base_vocab, base_vocab + 1] and len(saved) == base_vocab + 2
    assert saved.encode("<|im_end|>", add_special_tokens=False) == [markers[1]]
    assert saved.decode([*markers, saved.convert_tokens_to_ids("red")], skip_special_tokens=True) == "red"
    weights = load_file(run.out_dir / "adapter_model.safetensors")
    rows = {k: v for k, v in weights.items() if "trainable_tokens" in k}
    assert sorted(k.split(".")[-3] for k in rows) == ["embed_tokens", "lm_head"]
    assert all(v.shape == (2, 32) for v in rows.values())


def test_fit_model_to_template_resizes_and_extends_eos(chat_model_dir):
    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    model = tiny_llama(len(tok), hidden_size=32, num_layers=1, tokenizer=tok)
    assert fit_model_to_template(model, tok, get_template("tulu", tok)) == []
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = fit_model_to_template(model, tok, get_template("chatml", tok))
    assert (
        model.get_input_embeddings().num_embeddings == model.get_output_embeddings().out_features == len(tok)
    )
    assert model.generation_config.eos_token_id == [tok.eos_token_id, ids[1]]


def test_lora_refuses_new_markers_on_an_encoder_decoder():
    tok = ByT5Tokenizer()
    template = get_template("chatml", tok)
    model = tiny_t5(len(tok), d_model=32, num_layers=1, tokenizer=tok)
    markers = fit_model_to_template(model, tok, template)
    with pytest.raises(ConfigError, match="encoder-decoder"):
        apply_lora(model, LoraConfig(enabled=True), "seq2seq", markers, seed=0)
