from __future__ import annotations

import contextlib
import string

import pytest
import torch
from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from lmadapt.errors import LmadaptError
from lmadapt.eval.generate import cut_at_stop, generate

VOCAB = 384  # ByT5: 3 special tokens, 256 bytes (id = byte + 3), 125 extra ids
EOS = 1
PROMPTS = ["hello", "a much longer prompt than all the others", "x", "mid length text", "another one!", "ok"]


@pytest.fixture(scope="module")
def tokenizer():
    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(config).float().eval()


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=EOS,
        initializer_factor=5.0,  # larger random weights: outputs that depend on the input
    )
    return T5ForConditionalGeneration(config).float().eval()


@contextlib.contextmanager
def only_tokens(model, allowed: list[int]):
    """Restrict the model's next-token choice to `allowed` ids; yields a list counting lm_head calls."""
    bias = torch.full((VOCAB,), -1e4)
    bias[allowed] = 0.0
    calls = []

    def hook(module, inputs, logits):
        calls.append(1)
        return logits + bias

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


LETTERS = [ord(c) + 3 for c in string.ascii_lowercase]  # every token is one visible character


def reference_greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding without a KV cache or padding: re-run the whole sequence each step."""
    sequence = torch.tensor([ids])
    for _ in range(steps):
        with torch.no_grad():
            next_id = model(sequence).logits[0, -1].argmax()
        sequence = torch.cat([sequence, next_id.view(1, 1)], dim=1)
    return sequence[0, len(ids) :].tolist()


def test_greedy_matches_a_cache_free_reference(llama, tokenizer):
    with only_tokens(llama, LETTERS):
        texts = generate(llama, tokenizer, PROMPTS[:3], max_new_tokens=8, batch_size=3)
        for prompt, text in zip(PROMPTS[:3], texts, strict=True):
            prompt_ids = [b + 3 for b in prompt.encode()]  # ByT5 bytes, without the trailing EOS
            expected = reference_greedy(llama, prompt_ids, steps=8)
            assert text == "".join(chr(i - 3) for i in expected)


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_batched_greedy_equals_one_at_a_time(model_name, tokenizer, request):
    model = request.getfixturevalue(model_name)
    with only_tokens(model, LETTERS):
        batched = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=4)
        single = [generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 2  # the outputs depend on the prompt, so a mix-up would show
    assert all(len(text) == 10 for text in batched)


def test_order_is_restored(llama, tokenizer):
    with only_tokens(llama, LETTERS):
        forward = generate(llama, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
        backward = generate(llama, tokenizer, PROMPTS[::-1], max_new_tokens=6, batch_size=2)
    assert backward == forward[::-1]


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_max_new_tokens_is_respected(model_name, tokenizer, request):
    model = request.getfixturevalue(model_name)
    with only_tokens(model, LETTERS) as calls:
        texts = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=7, batch_size=3)
    assert [len(t) for t in texts] == [7, 7, 7]
    assert len(calls) == 7  # one forward per new token for the single batch


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_generation_ends_at_eos(model_name, tokenizer, request):
    model = request.getfixturevalue(model_name)
    with only_tokens(model, [EOS]) as calls:
        texts = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=20)
    assert texts == ["", "", ""]
    assert len(calls) == 1


def test_stop_strings_cut_the_text_and_end_generation_early(llama, tokenizer):
    prompt = [PROMPTS[1]]
    with only_tokens(llama, LETTERS) as calls:
        full = generate(llama, tokenizer, prompt, max_new_tokens=24)[0]
        full_calls = len(calls)
        stop = full[6:8]
        first = full.find(stop)
        calls.clear()
        stopped = generate(llama, tokenizer, prompt, max_new_tokens=24, stop=[stop])[0]
        stopped_calls = len(calls)
        # The earliest occurrence among several stop strings wins.
        both = generate(llama, tokenizer, prompt, max_new_tokens=24, stop=[full[12:14], full[3:5]])[0]
    assert stopped == full[:first]
    assert stopped_calls == first + len(stop) < full_calls == 24
    assert both == full[: min(full.find(full[12:14]), full.find(full[3:5]))]
    with only_tokens(llama, LETTERS):
        assert generate(llama, tokenizer, prompt, max_new_tokens=24, stop=["0"])[0] == full  # never generated


def test_cut_at_stop():
    assert cut_at_stop("abcXYdefZ", ["Z", "XY"]) == "abc"
    assert cut_at_stop("abc", ["Z"]) == "abc"
    assert cut_at_stop("Zabc", ["Z"]) == ""
    assert cut_at_stop("abc", []) == "abc"


def test_sampling_is_deterministic_for_a_seed_and_leaves_global_rng_alone(llama, tokenizer):
    torch.manual_seed(123)
    rng_before = torch.random.get_rng_state()
    with only_tokens(llama, LETTERS):
        kwargs = {"max_new_tokens": 16, "batch_size": 4, "do_sample": True, "temperature": 1.5}
        first = generate(llama, tokenizer, PROMPTS, seed=7, **kwargs)
        again = generate(llama, tokenizer, PROMPTS, seed=7, **kwargs)
        other = generate(llama, tokenizer, PROMPTS, seed=8, **kwargs)
        greedy = generate(llama, tokenizer, PROMPTS, max_new_tokens=16, batch_size=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert first == again
    assert first != other
    assert first != greedy


def test_top_p_near_zero_sampling_is_greedy(llama, tokenizer):
    with only_tokens(llama, LETTERS):
        nucleus = generate(llama, tokenizer, PROMPTS, max_new_tokens=8, do_sample=True, top_p=1e-6, seed=3)
        greedy = generate(llama, tokenizer, PROMPTS, max_new_tokens=8)
    assert nucleus == greedy


def test_tokenizer_and_model_state_are_left_alone(llama, tokenizer):
    tokenizer.padding_side = "right"
    llama.train()
    try:
        with only_tokens(llama, LETTERS):
            trained_mode = generate(llama, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3)
        assert tokenizer.padding_side == "right"
        assert llama.training
    finally:
        llama.eval()
    with only_tokens(llama, LETTERS):
        assert generate(llama, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3) == trained_mode


def test_tokenizer_without_pad_token_pads_with_eos(llama):
    with_pad = ByT5Tokenizer()
    without_pad = ByT5Tokenizer()
    without_pad.pad_token = None
    assert without_pad.pad_token_id is None
    with only_tokens(llama, LETTERS):
        expected = generate(llama, with_pad, PROMPTS, max_new_tokens=6, batch_size=3)
        assert generate(llama, without_pad, PROMPTS, max_new_tokens=6, batch_size=3) == expected
    assert without_pad.pad_token is None


def test_chat_template_wraps_each_prompt_as_a_user_turn(llama):
    templated = ByT5Tokenizer()
    templated.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    plain = ByT5Tokenizer()
    with only_tokens(llama, LETTERS):
        chat = generate(llama, templated, PROMPTS[:3], max_new_tokens=6, chat_template=True)
        by_hand = generate(llama, plain, [f"<user>{p}\n<assistant>" for p in PROMPTS[:3]], max_new_tokens=6)
        raw = generate(llama, plain, PROMPTS[:3], max_new_tokens=6)
        with pytest.warns(UserWarning, match="no chat template"):
            untemplated = generate(llama, plain, PROMPTS[:3], max_new_tokens=6, chat_template=True)
    assert chat == by_hand
    assert chat != raw
    assert untemplated == raw


def test_no_prompts(llama, tokenizer):
    assert generate(llama, tokenizer, []) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"do_sample": True, "top_p": 0.0}, "top_p"),
        ({"stop": "\n"}, "list of strings"),
        ({"stop": [""]}, "must not be empty"),
    ],
)
def test_bad_arguments(llama, tokenizer, kwargs, message):
    with pytest.raises(LmadaptError, match=message):
        generate(llama, tokenizer, ["a"], **kwargs)


def test_prompt_without_tokens_is_a_user_error(llama, tokenizer):
    with pytest.raises(LmadaptError, match="prompt 1 encodes to no tokens"):
        generate(llama, tokenizer, ["a", ""])


def test_token_id_prompts_are_used_as_given(llama, tokenizer):
    model = llama
    texts = ["abc", "hello there"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    from_ids = generate(model, tokenizer, ids, max_new_tokens=5)
    assert from_ids == generate(model, tokenizer, texts, max_new_tokens=5)
