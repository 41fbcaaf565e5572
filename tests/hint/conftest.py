from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer

from lmadapt.models.tiny import tiny_llama, tiny_t5


def _build(family: str, seed: int = 0) -> torch.nn.Module:
    """A fresh tiny model in eval mode (HINT installs hooks, so tests never share one)."""
    tok = ByT5Tokenizer()
    torch.manual_seed(seed)
    if family == "llama":
        model = tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok)
        # Two key/value heads for four query heads, so grouped-query attention is exercised too.
        model.config.num_key_value_heads = 2
        torch.manual_seed(seed)
        model = type(model)(model.config)
    else:
        model = tiny_t5(len(tok), d_model=32, num_layers=2, num_heads=4, tokenizer=tok)
    return model.eval()


def _randomize(module: torch.nn.Module, seed: int = 1, scale: float = 0.3) -> None:
    """Random values for every parameter (the generator's zero-initialised heads included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture
def make_model():
    return _build


@pytest.fixture
def randomize():
    return _randomize


@pytest.fixture(params=["llama", "t5"])
def family(request) -> str:
    return request.param


@pytest.fixture
def save_run(tmp_path, make_model, randomize):
    """save_run(family, cfg) -> directory of a HINT run with a randomised (untrained) generator."""
    from transformers import ByT5Tokenizer

    from lmadapt.hint.model import HintModel
    from lmadapt.hint.run import RunSettings, save_hint_run

    def save(family: str, cfg, template: str = "none", name: str = "run"):
        model = HintModel(make_model(family), cfg)
        randomize(model.generator, scale=0.1)
        out = tmp_path / name
        save_hint_run(model, ByT5Tokenizer(), out, RunSettings(template, "def+2pos", 256, 256))
        return out

    return save
