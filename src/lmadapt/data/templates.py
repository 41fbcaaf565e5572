"""Chat templates as Jinja strings, and the split of a rendered conversation into trained/untrained text.

Every template, built-in or the tokenizer's own, is a Jinja `chat_template` rendered by transformers'
`apply_chat_template`, so a tokenizer saved with `ChatTemplate.jinja` reproduces the training format in
plain transformers. The trained spans are found the same way for every template, by rendering prefixes:
for the assistant message i, render(messages[:i], add_generation_prompt=True) is the prompt and
render(messages[:i + 1]) extends it by the reply. The reply minus its trailing whitespace (the newline
after eos / <|im_end|>) is trained; everything else (headers, system and user turns) is not.

A template reproduces training exactly when saved: it renders the BOS that training puts in front of
every sequence (one is prepended to templates that lack it), and its markers are special tokens
(chatml's are added to the tokenizer), so `apply_chat_template(..., tokenize=True)` gives the trained ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmadapt.errors import ConfigError, LmadaptError

# Both built-in templates start with the tokenizer's BOS (when it has one), as training does.
BOS_JINJA = "{{ bos_token if bos_token else '' }}"

# Tulu (open-instruct): <|role|>\n{content}\n per message, eos closes each assistant reply.
TULU_JINJA = (
    BOS_JINJA + "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

CHATML_JINJA = (
    BOS_JINJA + "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")

TEMPLATE_NAMES = ("tulu", "chatml", "tokenizer")

Segments = list[tuple[str, bool]]


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template bound to the tokenizer whose special tokens it renders.

    special_tokens: markers that are single special tokens (their embeddings must be trained when new);
    end_of_turn: the token that closes an assistant reply, where generation must stop.
    """

    name: str
    jinja: str
    tokenizer: Any
    special_tokens: tuple[str, ...] = ()
    end_of_turn: str | None = None

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.jinja,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
            )
        except Exception as e:  # jinja raises its own errors (raise_exception, undefined variables)
            raise LmadaptError(f"chat template '{self.name}' failed to render: {e}") from e

    def generation_prompt(self, messages: list[dict[str, str]]) -> str:
        """All messages rendered, followed by the assistant header: the input for generating a reply."""
        return self.render(messages, add_generation_prompt=True)

    def segments(self, messages: list[dict[str, str]]) -> Segments:
        """The rendered conversation as consecutive (text, trained) pieces; joined they give render(messages).

        Raises LmadaptError when the template is not prefix-stable (rendering a conversation's first
        messages is not a prefix of rendering all of them), since trained spans cannot then be located.
        """
        full = self.render(messages)
        pieces: Segments = []
        done = 0  # characters of `full` already assigned to pieces
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], add_generation_prompt=True)
            through_reply = self.render(messages[: i + 1])
            if not (
                through_reply.startswith(prompt) and full.startswith(through_reply) and len(prompt) >= done
            ):
                raise LmadaptError(
                    f"chat template '{self.name}' is not prefix-stable: the rendering of messages[:{i + 1}] "
                    "does not extend the generation prompt or is not a prefix of the whole conversation, "
                    "so trained spans cannot be found"
                )
            reply = through_reply[len(prompt) :]
            trained = reply.rstrip()
            if not trained:
                raise LmadaptError(f"chat template '{self.name}' rendered assistant message {i} as empty")
            pieces += [(full[done : len(prompt)], False), (trained, True), (reply[len(trained) :], False)]
            done = len(through_reply)
        pieces.append((full[done:], False))
        return [(text, trained) for text, trained in pieces if text]


def get_template(name: str, tokenizer: Any) -> ChatTemplate:
    """The chat template `name` ("tulu", "chatml" or "tokenizer" = the tokenizer's own chat_template).

    "chatml" adds its markers to `tokenizer` as special tokens when it lacks them (a model trained with
    it needs its embeddings resized: models/vocab.py).
    """
    if name == "tulu":
        if tokenizer.eos_token is None:
            raise ConfigError("the tulu chat template needs a tokenizer with an eos_token")
        return ChatTemplate("tulu", TULU_JINJA, tokenizer, end_of_turn=tokenizer.eos_token)
    if name == "chatml":
        missing = [m for m in CHATML_MARKERS if m not in tokenizer.get_added_vocab()]
        if missing:
            tokenizer.add_special_tokens(
                {"additional_special_tokens": missing}, replace_extra_special_tokens=False
            )
        return ChatTemplate("chatml", CHATML_JINJA, tokenizer, CHATML_MARKERS, end_of_turn="<|im_end|>")
    if name == "tokenizer":
        jinja = tokenizer.chat_template
        if isinstance(jinja, dict):  # several named templates: the default one is for chat
            jinja = jinja.get("default")
        if not jinja:
            raise ConfigError(
                f"template 'tokenizer' chosen but {type(tokenizer).__name__} has no default chat_template; "
                "use 'tulu' or 'chatml'"
            )
        return ChatTemplate("tokenizer", with_bos(jinja, tokenizer), tokenizer)
    raise ConfigError(f"unknown chat template '{name}' (expected one of {', '.join(TEMPLATE_NAMES)})")


def with_bos(jinja: str, tokenizer: Any) -> str:
    """`jinja`, rendering the tokenizer's BOS first: training puts one BOS in front of every sequence
    (data/tokenize.py), so a saved template without it would not reproduce the trained ids."""
    bos = tokenizer.bos_token
    if bos is None:
        return jinja
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        text = tokenizer.apply_chat_template(probe, chat_template=jinja, tokenize=False)
    except Exception:  # the template rejects this probe; rendering the real data reports its error
        return jinja
    return jinja if text.startswith(bos) else BOS_JINJA + jinja
