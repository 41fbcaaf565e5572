from __future__ import annotations

import pytest
import torch

from lmadapt.config import ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.models.load import load_model
from lmadapt.models.tiny import tiny_llama


@pytest.fixture
def llama_dir(tmp_path):
    torch.manual_seed(0)
    tiny_llama(64, hidden_size=32, num_layers=2, num_heads=4).save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def test_attn_implementation_reaches_the_model_and_kernels_agree(llama_dir):
    ids = torch.randint(3, 64, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    logits = {}
    for impl in ("eager", "sdpa"):
        model, _ = load_model(ModelConfig(path=str(llama_dir), attn_implementation=impl))
        assert model.config._attn_implementation == impl
        logits[impl] = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits["sdpa"][mask.bool()], logits["eager"][mask.bool()], atol=1e-5, rtol=0)
    default, _ = load_model(ModelConfig(path=str(llama_dir)))
    assert default.config._attn_implementation == "sdpa"  # "auto": transformers' own choice


@pytest.mark.skipif(torch.cuda.is_available(), reason="flash-attn may be installed on a GPU machine")
def test_flash_attention_without_its_package_is_a_one_line_error(llama_dir):
    with pytest.raises(LmadaptError, match="cannot load a model") as err:
        load_model(ModelConfig(path=str(llama_dir), attn_implementation="flash_attention_2"))
    assert "\n" not in str(err.value)
