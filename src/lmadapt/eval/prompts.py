"""Prompt text -> the token ids a model is given: through its chat template or as plain text, within a limit.

A model trained by `lmadapt sft` carries its training chat template (tokenizer.chat_template). Its prompts
are then one user message encoded exactly as training encoded prompts (`data.tokenize.encode_prompt`), so
evaluation shows it the tokens it was trained on. Without a template the text itself is the prompt, as
for base models and Tk-Instruct-style encoder-decoder models.

SuperNI prompts are fitted to a source length the way Tk-Instruct's collator does it: demonstrations
that would overflow are left out (the first one that does not fit and all after it), and a prompt still
too long is cut. Tk-Instruct (encoder-decoder) keeps the start of the source; a decoder-only model
continues from the end of its prompt, so there the start is cut and the instance and "Output:" stay.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lmadapt.data.superni import EvalInstance
from lmadapt.data.tasks import PromptEncoding, Task, encode_instance, encode_instruction
from lmadapt.data.templates import ChatTemplate, get_template
from lmadapt.data.tokenize import encode_prompt, tokenize_causal, tokenize_seq2seq
from lmadapt.errors import ConfigError, LmadaptError

CHAT_TEMPLATE_MODES = ("auto", "on", "off")
_NO_LIMIT = 1 << 30  # a length no text reaches: tokenising a reply must not truncate it


def raw_prompt_ids(tokenizer: Any, prompt: str, encoder_decoder: bool) -> list[int]:
    """Ids of a prompt used as plain text (no chat template): the tokenizer's encoding with its special
    tokens, less a trailing EOS for decoder-only models."""
    ids = tokenizer(prompt)["input_ids"]
    # Some tokenizers (T5, ByT5) end every text with EOS, as an encoder input should; a decoder-only
    # prompt that ends with EOS would tell the model the text is over.
    if not encoder_decoder and ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def chat_template_for(tokenizer: Any, mode: str = "auto") -> ChatTemplate | None:
    """The template prompts go through: "auto" the tokenizer's chat_template when it has one, "on" the
    tokenizer's (an error when it has none), "off" none (prompts are plain text)."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ConfigError(f"chat_template {mode!r}: expected one of {', '.join(CHAT_TEMPLATE_MODES)}")
    if mode == "off" or (mode == "auto" and not tokenizer.chat_template):
        return None
    if not tokenizer.chat_template:
        raise ConfigError("chat_template 'on' but the model's tokenizer has none (use 'auto' or 'off')")
    return get_template("tokenizer", tokenizer)


@dataclass(frozen=True)
class PromptEncoder:
    """Encodes prompts for one model. `kind` is "causal" or "seq2seq"; `template` None means plain text."""

    tokenizer: Any
    kind: str
    template: ChatTemplate | None = None

    @functools.cached_property
    def _frame_probe(self) -> list[int]:
        # The encoding of an empty prompt holds what every prompt starts and ends with (BOS, the template's
        # header and assistant prompt, a seq2seq EOS): `cut` keeps those.
        return self.encode("")

    def encode(self, text: str) -> list[int]:
        """Ids of the generation prompt for `text` (one user message when there is a template)."""
        if self.template is None:
            return raw_prompt_ids(self.tokenizer, text, self.kind == "seq2seq")
        return encode_prompt([{"role": "user", "content": text}], self.template, self.tokenizer, self.kind)

    def encode_with_reply_start(self, text: str, reply_start: str) -> list[int]:
        """Ids of the generation prompt for `text` with the assistant's reply already begun by `reply_start`
        (Tulu's evaluations put "The answer is:" or "A:" there), preceded by a space unless the prompt ends
        in whitespace. Without a template this is `encode(text)`: the plain prompt carries its own cue."""
        ids = self.encode(text)
        if self.template is None:
            return ids
        if self.kind == "seq2seq":
            raise ConfigError("a reply start after the chat template is defined for decoder-only models only")
        ends_in_space = self.tokenizer.decode(ids[-1:])[-1:] in ("\n", " ")
        start = reply_start if ends_in_space else " " + reply_start
        return ids + self.tokenizer(start, add_special_tokens=False)["input_ids"]

    def encode_after_reply_start(
        self, text: str, reply_start: str, reply: str, separator: str = " "
    ) -> tuple[list[int], list[int]]:
        """(prompt ids, reply ids) for scoring `reply` after a reply begun by `reply_start`
        (`encode_with_reply_start`, so a template is needed): the reply is what follows the longest start
        that the encoding of start + `separator` + reply shares with the encoding of the start alone."""
        if self.template is None:
            raise ConfigError("a reply start is defined after a chat template only; plain prompts carry it")
        context = self.encode_with_reply_start(text, reply_start)
        full = self.encode_with_reply_start(text, reply_start + separator + reply)
        shared = _common_prefix(context, full)
        if shared == len(full):
            raise LmadaptError(f"reply {reply!r} encodes to no tokens")
        return full[:shared], full[shared:]

    def encode_with_reply(self, text: str, reply: str, separator: str = " ") -> tuple[list[int], list[int]]:
        """(prompt ids, reply ids): how the model sees `reply` as its answer to `text`, for scoring it.

        With a template the reply is the assistant message, tokenised as training tokenises replies (the
        EOS that closes it is left out). Without one a decoder-only model reads `text + separator + reply`
        as one text; the reply is what follows the longest start it shares with the prompt's encoding
        (tokens merging across the boundary count as reply). An encoder-decoder model's decoder reads the
        reply alone.
        """
        if self.template is not None:
            messages = [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            if self.kind == "seq2seq":
                example = tokenize_seq2seq(messages, self.template, self.tokenizer, _NO_LIMIT, _NO_LIMIT)
                context, answer = example.input_ids, example.labels
            else:
                example = tokenize_causal(messages, self.template, self.tokenizer, _NO_LIMIT)
                if example is None:
                    raise LmadaptError(f"reply {reply!r} encodes to no tokens")
                trained = [i for i, label in enumerate(example.labels) if label >= 0]
                first, last = trained[0], trained[-1]
                context, answer = example.input_ids[:first], example.input_ids[first : last + 1]
            if len(answer) > 1 and answer[-1] == self.tokenizer.eos_token_id:
                answer = answer[:-1]
        elif self.kind == "seq2seq":
            context = self.encode(text)
            answer = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        else:
            context = self.encode(text)
            full = self.encode(text + separator + reply)
            shared = _common_prefix(context, full)
            context, answer = full[:shared], full[shared:]
        if not answer:
            raise LmadaptError(f"reply {reply!r} encodes to no tokens")
        return context, answer

    def cut(self, ids: Sequence[int], max_tokens: int) -> list[int]:
        """`ids` (from `encode`) shortened to `max_tokens`.

        The tokens every prompt shares at its start and end stay; the text between loses its end for an
        encoder-decoder model (as Tk-Instruct) and its start for a decoder-only model.
        """
        ids = list(ids)
        if len(ids) <= max_tokens:
            return ids
        head = _common_prefix(ids, self._frame_probe)
        tail = _common_prefix(ids[head:][::-1], self._frame_probe[head:][::-1])
        room = max_tokens - head - tail
        if room < 1:
            raise ConfigError(f"a source length of {max_tokens} tokens leaves no room for the prompt's text")
        body = ids[head : len(ids) - tail]
        body = body[:room] if self.kind == "seq2seq" else body[len(body) - room :]
        return ids[:head] + body + ids[len(ids) - tail :]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# SuperNI prompts within a source length


@dataclass
class FitStats:
    demonstrations_dropped: int = 0  # prompts shown fewer demonstrations than the encoding asks for
    truncated: int = 0  # prompts cut to the limit (after dropping demonstrations)


def fit_demonstrations(
    task: Task, instance: EvalInstance, encoding: PromptEncoding, encoder: PromptEncoder, max_tokens: int
) -> EvalInstance:
    """`instance` with the demonstrations Tk-Instruct's collator keeps under `max_tokens`.

    Positive examples are added in order while the prompt with the next one still fits; then negative
    examples the same way. The prompt is counted as the model receives it (special tokens and template
    included). Tk-Instruct's count joins the earlier examples of each kind with spaces, so it can differ
    by those spaces when two or more examples of one kind precede the one being tried.
    """

    def fits(candidate: PromptEncoding) -> bool:
        prompt = encode_instruction(task, candidate) + encode_instance(instance.instance_input)
        return len(encoder.encode(prompt)) <= max_tokens

    kept = replace(encoding, num_pos=0, num_neg=0)
    for k in range(1, min(encoding.num_pos, len(task.positive_examples)) + 1):
        if not fits(replace(kept, num_pos=k)):
            break
        kept = replace(kept, num_pos=k)
    for k in range(1, min(encoding.num_neg, len(task.negative_examples)) + 1):
        if not fits(replace(kept, num_neg=k)):
            break
        kept = replace(kept, num_neg=k)
    instruction = encode_instruction(task, kept)
    return replace(
        instance,
        instruction_text=instruction,
        prompt=instruction + encode_instance(instance.instance_input),
    )


def fit_superni_prompts(
    instances: Sequence[EvalInstance],
    tasks: Mapping[str, Task],
    encoding: PromptEncoding,
    encoder: PromptEncoder,
    max_tokens: int | None,
) -> tuple[list[EvalInstance], list[list[int]], FitStats]:
    """(instances as prompted, their prompt ids, counts) with every prompt at most `max_tokens` ids.

    An over-long prompt first loses demonstrations (`fit_demonstrations`), then is cut (`PromptEncoder.cut`).
    `max_tokens` None or <= 0 leaves prompts whole.
    """
    stats = FitStats()
    fitted, all_ids = [], []
    for instance in instances:
        ids = encoder.encode(instance.prompt)
        if max_tokens and max_tokens > 0 and len(ids) > max_tokens:
            shorter = fit_demonstrations(tasks[instance.task], instance, encoding, encoder, max_tokens)
            if shorter.prompt != instance.prompt:
                stats.demonstrations_dropped += 1
                instance, ids = shorter, encoder.encode(shorter.prompt)
            if len(ids) > max_tokens:
                stats.truncated += 1
                ids = encoder.cut(ids, max_tokens)
        fitted.append(instance)
        all_ids.append(ids)
    return fitted, all_ids, stats
