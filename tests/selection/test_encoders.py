from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel, ByT5Tokenizer

from lmadapt.data.templates import get_template
from lmadapt.selection.encoders import load_encoder

PROMPTS = [
    [{"role": "user", "content": "reverse abc"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count the letters of abcdef"}],
    [{"role": "user", "content": "up"}],
]


def test_rds_vectors_equal_an_unbatched_loop_over_the_full_model(select_config, tiny_llama_dir):
    encoder = load_encoder(select_config(), torch.device("cpu"))  # the reference runs on the CPU
    got = encoder.encode(PROMPTS, batch_size=2)  # a padded batch and a single
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    template = get_template("tulu", tokenizer)
    for row, messages in zip(got, PROMPTS, strict=True):
        text = template.generation_prompt(messages)
        assert text.endswith("<|assistant|>\n")
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            states = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        n = states.shape[0]
        vector = sum((t + 1) * states[t] for t in range(n)) / (n * (n + 1) / 2)
        torch.testing.assert_close(torch.from_numpy(row), vector / vector.norm(), atol=1e-5, rtol=1e-5)


def test_deft_vectors_equal_sentence_transformers_mean_pooling(tmp_path, select_config):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(ByT5Tokenizer()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(tmp_path / "bert")
    ByT5Tokenizer().save_pretrained(tmp_path / "bert")
    cfg = select_config("selection.method=deft", f"model.path={tmp_path / 'bert'}")
    encoder = load_encoder(cfg, torch.device("cpu"))
    got = encoder.encode(PROMPTS, batch_size=2)
    peer = st.SentenceTransformer(
        modules=[
            Transformer(str(tmp_path / "bert")),
            Pooling(32, pooling_mode="mean"),
            Normalize(),
        ],
        device="cpu",
    )
    texts = ["reverse abc", "be brief\ncount the letters of abcdef", "up"]
    expected = peer.encode(texts, batch_size=3, convert_to_numpy=True)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
