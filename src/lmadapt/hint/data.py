"""HINT examples: an instruction for the hypernetwork, an instance input and target for the underlying model.

Task data (SuperNI layout): the instruction is `encode_instruction(task, encoding)` (definition and
demonstrations) and the underlying model sees only the instance: its raw input as in HINT, framed like
the demonstrations, or the Tk-Instruct instance block (`encode_instance`), optionally in a chat
template. Plain text (hypernetwork pretraining): each document is cut at two random points into A, B,
C; A is the instruction, B the input, C the target. Instructions are tokenised once per task and shared by
reference, and the collator encodes each distinct instruction of a batch once. A hypernetwork with a
pretrained encoder also reads every instruction in that encoder's tokens (`with_encoder_tokens`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmadapt.data.collate import pad_right
from lmadapt.data.tasks import PromptEncoding, Task, encode_instance, encode_instruction
from lmadapt.data.templates import ChatTemplate, get_template
from lmadapt.data.tokenize import IGNORE_INDEX, encode_prompt, encode_text, tokenize_causal, tokenize_seq2seq
from lmadapt.errors import DataError, LmadaptError

# The "none" template: the instance text as it is, the reply followed by EOS.
PLAIN_JINJA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)


@dataclass
class HintExample:
    instruction: int  # row of the instruction table
    input_ids: list[int]
    labels: list[int]  # causal: aligned with input_ids (-100 = not trained); seq2seq: decoder labels


@dataclass
class HintDataset:
    instructions: list[list[int]]
    examples: list[HintExample]
    texts: list[str] = field(default_factory=list)  # instruction row -> its text
    # instruction rows in a pretrained encoder's tokens (`with_encoder_tokens`)
    encoder_instructions: list[list[int]] = field(default_factory=list)


def instance_template(name: str, tokenizer: Any) -> ChatTemplate:
    """The template around the instance: "none" (plain text) or a chat template name of `get_template`."""
    return ChatTemplate("none", PLAIN_JINJA, tokenizer) if name == "none" else get_template(name, tokenizer)


def tokenize_instruction(text: str, tokenizer: Any, kind: str, max_length: int) -> list[int]:
    """What the hypernetwork reads: BOS (if any) + text (+ EOS for encoder-decoders), cut to `max_length`
    from the right (the definition comes first and is kept)."""
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    tail = [tokenizer.eos_token_id] if kind == "seq2seq" and tokenizer.eos_token_id is not None else []
    body = encode_text(text, tokenizer)[: max(1, max_length - len(head) - len(tail))]
    return head + body + tail


def tokenize_for_encoder(text: str, tokenizer: Any, max_length: int) -> list[int]:
    """What a pretrained instruction encoder reads: its tokenizer's own framing ([CLS] ... [SEP] for BERT),
    cut to `max_length` and to the encoder's position limit."""
    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    return tokenizer(text, truncation=True, max_length=limit)["input_ids"]


def with_encoder_tokens(data: HintDataset, tokenizer: Any, max_length: int) -> HintDataset:
    """`data` with every instruction also tokenised by a pretrained encoder's `tokenizer`."""
    data.encoder_instructions = [tokenize_for_encoder(text, tokenizer, max_length) for text in data.texts]
    return data


def instance_text(instance_input: str, instance_format: str, encoding: PromptEncoding) -> str:
    """The instance as the underlying model reads it: "raw" (the input), "compact" ("Input: ... Output:",
    the demonstrations' framing) or "tk" (`encode_instance` as `encoding` renders it)."""
    if instance_format == "raw":
        return instance_input
    return encode_instance(instance_input, compact=instance_format == "compact" or encoding.compact)


def instance_prompt(
    instance_input: str,
    tokenizer: Any,
    template: ChatTemplate,
    kind: str,
    instance_format: str,
    encoding: PromptEncoding,
) -> list[int]:
    """Token ids the underlying model generates from, encoded exactly as training encodes its inputs."""
    messages = [{"role": "user", "content": instance_text(instance_input, instance_format, encoding)}]
    return encode_prompt(messages, template, tokenizer, kind)


def task_dataset(
    tasks: Sequence[Task],
    encoding: PromptEncoding,
    tokenizer: Any,
    template: ChatTemplate,
    kind: str,
    max_instruction_length: int,
    max_input_length: int,
    max_target_length: int,
    instance_format: str = "raw",
) -> HintDataset:
    """Every instance of every task (its first reference as the target); over-long inputs are truncated."""
    data = HintDataset([], [])
    for task in tasks:
        row = len(data.instructions)
        text = encode_instruction(task, encoding)
        data.texts.append(text)
        data.instructions.append(tokenize_instruction(text, tokenizer, kind, max_instruction_length))
        for instance in task.instances:
            messages = [
                {"role": "user", "content": instance_text(instance.input, instance_format, encoding)},
                {"role": "assistant", "content": instance.outputs[0]},
            ]
            if kind == "seq2seq":
                example = tokenize_seq2seq(messages, template, tokenizer, max_input_length, max_target_length)
            else:
                example = tokenize_causal(messages, template, tokenizer, max_input_length + max_target_length)
            if example is not None:
                data.examples.append(HintExample(row, example.input_ids, example.labels))
    return data


def read_documents(paths: Sequence[str | Path], limit: int = 0) -> list[str]:
    """Plain-text documents: a `.jsonl` file's "text" fields, or every non-blank line of any other file."""
    documents: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise LmadaptError(f"pretraining source {path} not found")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                documents.append(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, number, None, f"invalid JSON: {err.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(path, number, "text", "expected an object with a string field 'text'")
            documents.append(record["text"])
    return documents[:limit] if limit > 0 else documents


def split_documents(
    documents: Sequence[str],
    tokenizer: Any,
    kind: str,
    seed: int,
    max_instruction_length: int,
    max_input_length: int,
    max_target_length: int,
) -> HintDataset:
    """A/B/C examples; the cut points of document i are drawn from a generator seeded by (seed, i).

    Documents shorter than three tokens are skipped. A keeps its end (next to B), B its end (next to C),
    C its start.
    """
    data = HintDataset([], [])
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for i, document in enumerate(documents):
        ids = encode_text(document, tokenizer)
        if len(ids) < 3:
            continue
        rng = random.Random(f"{seed}/{i}")
        first = rng.randint(1, len(ids) - 2)
        second = rng.randint(first + 1, len(ids) - 1)
        a = ids[:first][-max(1, max_instruction_length - len(bos) - len(eos)) :]
        b, c = ids[first:second][-max_input_length:], ids[second:][:max_target_length]
        row = len(data.instructions)
        data.texts.append(tokenizer.decode(a))
        data.instructions.append(bos + a + (eos if kind == "seq2seq" else []))
        if kind == "seq2seq":
            data.examples.append(HintExample(row, b + eos, c))
        else:
            data.examples.append(HintExample(row, bos + b + c, [IGNORE_INDEX] * (len(bos) + len(b)) + c))
    return data


def collate_hint(
    examples: Sequence[HintExample],
    instructions: Sequence[list[int]],
    pad_token_id: int,
    encoder_instructions: Sequence[list[int]] = (),
    encoder_pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """Right-padded tensors; each distinct instruction of the batch appears once.

    input_ids/attention_mask/labels [B, S|L] as `collate_causal`; instruction_ids/instruction_mask
    [U, T] for the U distinct instructions in order of first use; instruction_index [B] maps examples
    to those rows; with `encoder_instructions`, encoder_ids/encoder_mask [U, T'] are the same rows in a
    pretrained encoder's tokens.
    """
    rows: dict[int, int] = {}
    index = [rows.setdefault(example.instruction, len(rows)) for example in examples]
    texts = [instructions[row] for row in rows]
    inputs = [example.input_ids for example in examples]
    batch = {
        "input_ids": pad_right(inputs, pad_token_id),
        "attention_mask": pad_right([[1] * len(row) for row in inputs], 0),
        "labels": pad_right([example.labels for example in examples], IGNORE_INDEX),
        "instruction_ids": pad_right(texts, pad_token_id),
        "instruction_mask": pad_right([[1] * len(row) for row in texts], 0),
        "instruction_index": torch.tensor(index, dtype=torch.long),
    }
    if encoder_instructions:
        encoded = [encoder_instructions[row] for row in rows]
        batch["encoder_ids"] = pad_right(encoded, encoder_pad_id)
        batch["encoder_mask"] = pad_right([[1] * len(row) for row in encoded], 0)
    return batch
