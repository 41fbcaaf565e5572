from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer

from lmadapt.data.templates import get_template
from lmadapt.errors import ConfigError, LmadaptError

CONVERSATION = [
    {"role": "system", "content": "You are kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]

TULU_TEXT = (
    "<|system|>\nYou are kind.\n<|user|>\nHi\n<|assistant|>\nHello!</s>\n"
    "<|user|>\n2+2?\n<|assistant|>\n4</s>\n"
)
CHATML_TEXT = (
    "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    "<|im_start|>assistant\n4<|im_end|>\n"
)
# Llama-2 style: BOS from the template, no generation header, reply = " {content} </s>".
INST_JINJA = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


@pytest.fixture
def tokenizer():
    return ByT5Tokenizer()


def test_tulu_exact_rendering(tokenizer):
    template = get_template("tulu", tokenizer)
    assert template.render(CONVERSATION) == TULU_TEXT
    assert template.generation_prompt(CONVERSATION[:4]) == TULU_TEXT[: TULU_TEXT.index("4</s>")]
    assert template.generation_prompt(CONVERSATION[:4]).endswith("<|user|>\n2+2?\n<|assistant|>\n")


def test_tulu_segments(tokenizer):
    assert get_template("tulu", tokenizer).segments(CONVERSATION) == [
        ("<|system|>\nYou are kind.\n<|user|>\nHi\n<|assistant|>\n", False),
        ("Hello!</s>", True),
        ("\n", False),
        ("<|user|>\n2+2?\n<|assistant|>\n", False),
        ("4</s>", True),
        ("\n", False),
    ]


def test_chatml_exact_rendering_and_segments(tokenizer):
    template = get_template("chatml", tokenizer)
    assert template.render(CONVERSATION) == CHATML_TEXT
    assert template.generation_prompt(CONVERSATION[:2]) == (
        "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert [text for text, trained in template.segments(CONVERSATION) if trained] == [
        "Hello!<|im_end|>",
        "4<|im_end|>",
    ]
    assert "".join(text for text, _ in template.segments(CONVERSATION)) == CHATML_TEXT


def test_tokenizer_template(tokenizer):
    tokenizer.bos_token = "<s>"  # ByT5 has none; the template below renders one
    tokenizer.chat_template = INST_JINJA
    template = get_template("tokenizer", tokenizer)
    assert template.jinja == INST_JINJA
    assert template.segments(CONVERSATION[1:]) == [
        ("<s>[INST] Hi [/INST]", False),
        (" Hello! </s>", True),
        ("[INST] 2+2? [/INST]", False),
        (" 4 </s>", True),
    ]


def test_tokenizer_without_template_is_an_error(tokenizer):
    with pytest.raises(ConfigError, match="no default chat_template"):
        get_template("tokenizer", tokenizer)


def test_unknown_template_name(tokenizer):
    with pytest.raises(ConfigError, match="unknown chat template 'llama'"):
        get_template("llama", tokenizer)


def test_template_that_is_not_prefix_stable_is_rejected(tokenizer):
    # the message count up front changes every earlier prefix
    tokenizer.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(LmadaptError, match="not prefix-stable"):
        get_template("tokenizer", tokenizer).segments(CONVERSATION)


def test_template_errors_are_reported(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(LmadaptError, match="failed to render: no system role"):
        get_template("tokenizer", tokenizer).render(CONVERSATION)


def test_saved_tokenizer_reproduces_the_template_in_plain_transformers(tokenizer, tmp_path):
    for name, expected in [("tulu", TULU_TEXT), ("chatml", CHATML_TEXT)]:
        tokenizer.chat_template = get_template(name, tokenizer).jinja
        tokenizer.save_pretrained(tmp_path / name)
        loaded = AutoTokenizer.from_pretrained(tmp_path / name)
        assert loaded.apply_chat_template(CONVERSATION, tokenize=False) == expected


def random_conversation(rng: random.Random) -> list[dict[str, str]]:
    alphabet = "ab \n{}%'\"é<|>"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))).strip() or "x"

    messages = [{"role": "system", "content": text()}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 3)):
        messages += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
    return messages


def test_random_conversations_match_reference_strings(tokenizer):
    rng = random.Random(0)
    tulu, chatml = get_template("tulu", tokenizer), get_template("chatml", tokenizer)
    for _ in range(50):
        messages = random_conversation(rng)
        tulu_reference = "".join(
            f"<|{m['role']}|>\n{m['content']}{'</s>' if m['role'] == 'assistant' else ''}\n" for m in messages
        )
        chatml_reference = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        assert tulu.render(messages) == tulu_reference
        assert chatml.render(messages) == chatml_reference
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        for template, end in [(tulu, "</s>"), (chatml, "<|im_end|>")]:
            segments = template.segments(messages)
            assert "".join(text for text, _ in segments) == template.render(messages)
            assert [text for text, trained in segments if trained] == [reply + end for reply in replies]


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
        "{{ messages.__class__.__init__.__globals__['sys'].modules['os'].system('touch MARKER') }}",
        "{% set x = namespace() %}{{ x.__class__.__init__.__globals__['os'].system('touch MARKER') }}",
    ],
)
def test_a_malicious_chat_template_runs_sandboxed(tokenizer, tmp_path, attack):
    """A tokenizer's own template is untrusted input: rendering (transformers' apply_chat_template, in
    jinja2's ImmutableSandboxedEnvironment) refuses attribute access that leads to Python internals."""
    marker = tmp_path / "pwned"
    tokenizer.chat_template = (
        attack.replace("MARKER", str(marker)) + "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(LmadaptError, match="failed to render") as excinfo:
        get_template("tokenizer", tokenizer).render(CONVERSATION)
    assert "\n" not in str(excinfo.value)
    assert not marker.exists()
