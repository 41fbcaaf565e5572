"""`hint.encoder: DIR`: a pretrained Hugging Face encoder reads the instruction with its own tokenizer."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import save_tiny_bert
from transformers import AutoModel, ByT5Tokenizer

from lmadapt.config import HypernetworkConfig
from lmadapt.errors import ConfigError
from lmadapt.hint.cache import run_hypernetwork
from lmadapt.hint.data import tokenize_for_encoder
from lmadapt.hint.flops import hypernetwork_flops
from lmadapt.hint.model import HintModel
from lmadapt.hint.run import (
    ENCODER_DIR,
    HINT_FILE,
    HYPERNETWORK_FILE,
    RunSettings,
    load_hint_run,
    save_hint_run,
)

ENCODER_WIDTH = 48  # wider than the tiny underlying models (32), so the generator must map it
INSTRUCTIONS = ["reverse the list", "give the first item of the list please"]


@pytest.fixture
def encoder_dir(tmp_path: Path) -> Path:
    return save_tiny_bert(tmp_path / "encoder", " ".join(INSTRUCTIONS), hidden_size=ENCODER_WIDTH)


def _cfg(encoder_dir: Path, **kw) -> HypernetworkConfig:
    return HypernetworkConfig(encoder=str(encoder_dir), adapter_size=4, prefix_length=3, **kw)


def _model_tokens(model: HintModel, text: str) -> torch.Tensor:
    return torch.tensor([ByT5Tokenizer()(text)["input_ids"]])


def _encoder_tokens(model: HintModel, text: str) -> torch.Tensor:
    return torch.tensor([tokenize_for_encoder(text, model.encoder_tokenizer, 64)])


def test_the_generator_reads_the_pretrained_encoders_states_of_its_own_tokens(make_model, encoder_dir):
    model = HintModel(make_model("llama"), _cfg(encoder_dir)).eval()
    assert model.generator.attention.k.in_features == ENCODER_WIDTH != model.layout.hidden_size
    reference = AutoModel.from_pretrained(encoder_dir).eval()  # the encoder on its own, as saved
    ids, enc = _model_tokens(model, INSTRUCTIONS[0]), _encoder_tokens(model, INSTRUCTIONS[0])
    assert enc.shape[1] == 3  # three words in the encoder's tokens; ByT5 reads bytes
    with torch.no_grad():
        got = model.generate_modules(ids, torch.ones_like(ids), enc, torch.ones_like(enc))
        states = reference(input_ids=enc, attention_mask=torch.ones_like(enc)).last_hidden_state
        expected = model.generator(states, torch.ones_like(enc))
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=1e-6)


def test_frozen_states_are_reused_and_match_a_padded_batch_and_a_trained_encoder(make_model, encoder_dir):
    frozen = HintModel(make_model("llama"), _cfg(encoder_dir))
    trained = HintModel(make_model("llama"), _cfg(encoder_dir, freeze_encoder=False))
    assert not any(p.requires_grad for p in frozen.pretrained_encoder.parameters())
    frozen.train()
    assert not frozen.pretrained_encoder.training  # no dropout in what the cache keeps
    rows = [tokenize_for_encoder(t, frozen.encoder_tokenizer, 64) for t in INSTRUCTIONS]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    batch = frozen.encode_with_pretrained(ids, mask)
    assert len(frozen._frozen_states) == 2
    again = frozen.encode_with_pretrained(ids[1:], mask[1:, : len(rows[1])])
    assert len(frozen._frozen_states) == 2  # looked up, not encoded again
    trained.eval()
    with torch.no_grad():
        for i, row in enumerate(rows):
            alone = trained.encode_with_pretrained(torch.tensor([row]), torch.ones(1, len(row)))
            torch.testing.assert_close(batch[i, : len(row)], alone[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(again[0], batch[1, : len(rows[1])])


def test_a_trainable_encoder_gets_gradients_and_a_frozen_one_does_not(make_model, encoder_dir, randomize):
    for freeze in (True, False):
        model = HintModel(make_model("llama"), _cfg(encoder_dir, freeze_encoder=freeze)).train()
        randomize(model.generator, scale=0.1)  # open the modules: closed ones pass no gradient back
        ids, enc = _model_tokens(model, INSTRUCTIONS[1]), _encoder_tokens(model, INSTRUCTIONS[1])
        x = torch.tensor([[5, 6, 7]])
        out = model(
            x, torch.ones_like(x), ids, torch.ones_like(ids), encoder_ids=enc, encoder_mask=enc * 0 + 1
        )
        out.logits.sum().backward()
        grads = [p.grad for p in model.pretrained_encoder.parameters()]
        assert (
            all(g is None for g in grads)
            if freeze
            else any(g is not None and g.abs().sum() > 0 for g in grads)
        )
        assert model.generator.attention.k.weight.grad is not None


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_fresh_model_with_a_pretrained_encoder_is_the_fused_baseline(make_model, encoder_dir, family):
    """Fusion reads the instruction in the model's own tokens; every module starts closed."""
    base = make_model(family)
    instruction, inputs = ByT5Tokenizer()(INSTRUCTIONS[0])["input_ids"], [5, 6, 7, 8]
    labels = [9, 10, 1]
    with torch.no_grad():
        if family == "llama":
            expected = base(input_ids=torch.tensor([instruction + inputs])).logits[0, len(instruction) :]
        else:
            from transformers.modeling_outputs import BaseModelOutput

            encode = lambda ids: base.encoder(input_ids=torch.tensor([ids])).last_hidden_state  # noqa: E731
            states = torch.cat([encode(instruction), encode(inputs)], dim=1)
            decoder = base.prepare_decoder_input_ids_from_labels(labels=torch.tensor([labels]))
            expected = base(
                encoder_outputs=BaseModelOutput(last_hidden_state=states), decoder_input_ids=decoder
            ).logits[0]
    model = HintModel(base, _cfg(encoder_dir)).eval()
    ids, enc, x = torch.tensor([instruction]), _encoder_tokens(model, INSTRUCTIONS[0]), torch.tensor([inputs])
    decoder = (
        None if family == "llama" else model.prepare_decoder_input_ids_from_labels(torch.tensor([labels]))
    )
    with torch.no_grad():
        got = model(
            x,
            torch.ones_like(x),
            ids,
            torch.ones_like(ids),
            decoder_input_ids=decoder,
            encoder_ids=enc,
            encoder_mask=torch.ones_like(enc),
        ).logits[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_run_carries_its_encoder_and_loads_without_the_original(
    make_model, encoder_dir, randomize, tmp_path
):
    model = HintModel(make_model("llama"), _cfg(encoder_dir, freeze_encoder=False))
    randomize(model.generator, scale=0.1)
    randomize(model.pretrained_encoder, seed=5, scale=0.05)  # "trained": differs from the directory
    out = tmp_path / "run"
    save_hint_run(model, ByT5Tokenizer(), out, RunSettings("none", "def", 256, 256))
    record = json.loads((out / HINT_FILE).read_text())
    assert record["hypernetwork"]["encoder"] == str(encoder_dir) and record["encoder_dir"] == ENCODER_DIR
    assert not any(k.startswith("pretrained_encoder.") for k in load_file(str(out / HYPERNETWORK_FILE)))
    shutil.rmtree(encoder_dir)
    run = load_hint_run(out, device="cpu")
    assert run.model.encoder_tokenizer.get_vocab() == model.encoder_tokenizer.get_vocab()
    loaded = run_hypernetwork(run, INSTRUCTIONS[1])
    original = run_hypernetwork(replace(run, model=model), INSTRUCTIONS[1])
    assert loaded.keys() == original.keys()
    for name in loaded:
        torch.testing.assert_close(loaded[name], original[name], atol=0, rtol=0)


def test_eval_superni_runs_on_a_run_with_a_pretrained_encoder(make_model, encoder_dir, tmp_path):
    from lmadapt.cli import main
    from lmadapt.demo.suite import FAMILIES, build_suite, export_superni

    clone = export_superni(
        build_suite(train_instances=2, eval_instances=2, families=(FAMILIES[-1],)), tmp_path / "ni"
    )
    model = HintModel(make_model("llama"), _cfg(encoder_dir))
    save_hint_run(model, ByT5Tokenizer(), tmp_path / "run", RunSettings("none", "def", 256, 256))
    args = [
        "eval",
        "superni",
        "--data",
        str(clone),
        "--model",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "ev"),
    ]
    assert main([*args, "--max-instances", "2", "--max-new-tokens", "3"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["overall"]["num_instances"] == 12 and metrics["flops"]["hint"]["hypernetwork"] > 0


def test_a_missing_encoder_directory_is_a_config_error(make_model, tmp_path):
    with pytest.raises(ConfigError, match=r"hint\.encoder: .*nowhere.* local Hugging Face encoder"):
        HintModel(make_model("llama"), HypernetworkConfig(encoder=str(tmp_path / "nowhere")))


def test_hypernetwork_flops_with_a_pretrained_encoder_match_counted_flops(make_model, encoder_dir, randomize):
    from torch.utils.flop_counter import FlopCounterMode

    from lmadapt.hint.attention import use_prefix_attention

    for fusion in (True, False):
        model = HintModel(make_model("llama"), _cfg(encoder_dir, fusion=fusion, freeze_encoder=False))
        randomize(model.generator, scale=0.1)
        use_prefix_attention(model.underlying, "eager")  # FlopCounterMode does not see CPU SDPA kernels
        model.pretrained_encoder.set_attn_implementation("eager")
        model.requires_grad_(False).eval()
        ids, enc = _model_tokens(model, INSTRUCTIONS[1]), _encoder_tokens(model, INSTRUCTIONS[1])
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.generate_modules(ids, torch.ones_like(ids), enc, torch.ones_like(enc))
        assert counter.get_total_flops() == hypernetwork_flops(model, ids.shape[1], enc.shape[1])
