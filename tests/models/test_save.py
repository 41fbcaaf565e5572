from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, ByT5Tokenizer

from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.models.tiny import tiny_llama


def test_a_gathered_state_dict_is_what_gets_exported(tmp_path):
    """A sharded run exports the full weights gathered from all ranks, not the rank's own (sharded)
    parameters: the state_dict given wins, and plain transformers loads it."""
    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4)
    gathered = {name: value + 1.0 for name, value in model.state_dict().items()}
    save_model_and_tokenizer(model, tok, tmp_path / "out", chat_template=None, state_dict=gathered)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, value in gathered.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
