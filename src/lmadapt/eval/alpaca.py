"""AlpacaEval-style win rate against reference outputs, judged by a local judge (`eval.judges`).

Files: the AlpacaEval layout, a JSON list (or JSONL) of {"instruction", "output", "generator"?,
"dataset"?} records. The reference file (alpaca_eval.json: text-davinci-003 outputs, as Tulu 2 compared
against; or another baseline such as gpt4_turbo's) holds the reference outputs; a model-outputs file in
the same layout (what AlpacaEval takes as model_outputs, or this evaluation's own predictions.jsonl) holds
precomputed outputs of the evaluated model, matched to the references by instruction text.

Generation (as Tulu 2 generated): the instruction is the prompt, through the model's chat template, greedy
decoding, the whole output kept.

Judging: each (model output, reference output) pair gets a preference in [0, 1] for the model's output.
Identical outputs are a draw without asking the judge (as AlpacaEval does). A reward-model judge scores
both outputs as replies to the instruction, preference sigmoid(r_model - r_reference); it scores each
output alone, so order cannot matter. A causal-LM judge reads the pairwise prompt `judge_prompt` twice,
the model's output first as "Output (a)" and then second as "Output (b)"; each time its preference is the
probability of the model's label among the two label tokens after the cue "Output (", and the two are
averaged, which cancels a constant bias for a position. Metrics: `eval.winrate` on the preferences, with
the length difference in characters for the length-controlled figure, overall and per "dataset".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmadapt.data.formats import read_records
from lmadapt.errors import ConfigError, DataError
from lmadapt.eval.winrate import length_controlled_win_rate, win_rate_metrics

log = logging.getLogger("lmadapt")

TULU_MAX_NEW_TOKENS = 8192
JUDGE_LABELS = ("a", "b")
JUDGE_CUE = "Output ("
JUDGE_INSTRUCTIONS = (
    "You compare two outputs written for the same instruction. Decide which one follows the instruction "
    "better: which is more helpful, correct and complete, and answers what was asked without padding. "
    "Neither the order in which the outputs are shown nor their length is a reason to prefer one."
)


@dataclass(frozen=True)
class Instruction:
    """One instruction of the reference file and its reference output; `line` is its record number."""

    instruction: str
    reference: str
    generator: str
    dataset: str
    line: int


def _text(record: dict[str, Any], field: str, path: Path, line: int, required: bool = True) -> str:
    value = record.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(str(path), line, field, "missing field" if value is None else "expected a string")
    return value


def load_instructions(path: str | Path) -> list[Instruction]:
    """The records of a reference file (module docstring); a bad record is a DataError naming it."""
    path = Path(path)
    instructions = []
    for line, record in read_records(path):
        instruction = _text(record, "instruction", path, line)
        if not instruction.strip():
            raise DataError(str(path), line, "instruction", "expected a non-empty string")
        instructions.append(
            Instruction(
                instruction,
                _text(record, "output", path, line),
                _text(record, "generator", path, line, required=False),
                _text(record, "dataset", path, line, required=False),
                line,
            )
        )
    if not instructions:
        raise DataError(str(path), None, None, "no instructions in the file")
    return instructions


def read_outputs(path: str | Path, instructions: Sequence[Instruction]) -> tuple[list[str | None], str]:
    """(the file's output for each instruction, None where it has none; its generator name, else the file
    name). Outputs are matched by instruction text: one the references lack, or a repeat, is a DataError."""
    path = Path(path)
    index: dict[str, int] = {}
    for i, item in enumerate(instructions):
        if item.instruction in index:
            raise DataError(
                str(path),
                None,
                None,
                f"the references repeat the instruction of their record {item.line}, "
                "so outputs cannot be matched by instruction",
            )
        index[item.instruction] = i
    outputs: list[str | None] = [None] * len(instructions)
    seen: dict[str, int] = {}
    generator = ""
    for line, record in read_records(path):
        instruction = _text(record, "instruction", path, line)
        if instruction not in index:
            raise DataError(
                str(path),
                line,
                "instruction",
                f"not among the {len(instructions)} loaded reference instructions (same --max-instances?)",
            )
        if instruction in seen:
            raise DataError(str(path), line, "instruction", f"repeats line {seen[instruction]}")
        seen[instruction] = line
        outputs[index[instruction]] = _text(record, "output", path, line)
        generator = generator or _text(record, "generator", path, line, required=False)
    return outputs, generator or path.stem


def judge_prompt(instruction: str, output_a: str, output_b: str, chat: bool) -> str:
    """The pairwise judge prompt. A plain prompt ends with the cue "Output ("; through a chat template the
    judge's reply starts with it instead (`PromptEncoder.encode_with_reply_start`)."""
    text = (
        f"{JUDGE_INSTRUCTIONS}\n\n## Instruction\n\n{instruction}\n\n## Output (a)\n\n{output_a}\n\n"
        f"## Output (b)\n\n{output_b}\n\n## Which output is better, Output (a) or Output (b)?"
    )
    return text if chat else text + "\n\nBetter: " + JUDGE_CUE


def label_token_ids(tokenizer: Any) -> list[int]:
    """The token of each label as it follows "(" (the last token of "(a"), refused unless it is the label
    alone: a tokenizer that merges "(a" into one token cannot be read this way."""
    ids = []
    for label in JUDGE_LABELS:
        token = tokenizer("(" + label, add_special_tokens=False)["input_ids"][-1]
        if tokenizer.decode([token]).strip() != label:
            raise ConfigError(
                f"the judge's tokenizer does not encode {label!r} after '(' as a token of its own"
            )
        ids.append(token)
    return ids


class Judge(Protocol):
    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[tuple[float, dict[str, float]]]:
        """(preference for the model's output, what the judge measured) of each (instruction, model output,
        reference output)."""
        ...

    def settings(self) -> dict[str, Any]: ...


def preferences(
    judge: Judge, instructions: Sequence[Instruction], outputs: Sequence[str]
) -> list[tuple[float, dict[str, float]]]:
    """The judge's verdict on every output (module docstring); identical outputs are draws unasked."""
    asked = [i for i, item in enumerate(instructions) if outputs[i] != item.reference]
    triples = [(instructions[i].instruction, outputs[i], instructions[i].reference) for i in asked]
    verdicts = judge.judge(triples) if triples else []  # all identical: no judge to load
    result: list[tuple[float, dict[str, float]]] = [(0.5, {}) for _ in instructions]
    for i, verdict in zip(asked, verdicts, strict=True):
        result[i] = verdict
    return result


def alpaca_metrics(
    instructions: Sequence[Instruction], outputs: Sequence[str], verdicts: Sequence[tuple[float, dict]]
) -> dict[str, Any]:
    """Win rate, its standard error, draws, the length-controlled figure (`eval.winrate`) overall; the
    win rate per dataset; mean output lengths; and, for a judge asked in both orders, how often each order
    agreed and the mean preference for whichever output was shown first (50: no position bias)."""
    prefs = [p for p, _ in verdicts]
    differences = [len(o) - len(item.reference) for item, o in zip(instructions, outputs, strict=True)]
    control = length_controlled_win_rate(prefs, differences)
    overall = {
        **win_rate_metrics(prefs),
        "length_controlled_win_rate": control.pop("length_controlled_win_rate"),
        "lc_standard_error": control.pop("lc_standard_error"),
        "avg_length": sum(map(len, outputs)) / len(outputs),
        "avg_reference_length": sum(len(item.reference) for item in instructions) / len(instructions),
    }
    by_dataset: dict[str, list[float]] = {}
    for item, p in zip(instructions, prefs, strict=True):
        by_dataset.setdefault(item.dataset or "(none)", []).append(p)
    metrics: dict[str, Any] = {
        "overall": overall,
        "length_control": control,
        "per_dataset": {
            name: {key: win_rate_metrics(ps)[key] for key in ("win_rate", "standard_error", "n_total")}
            for name, ps in sorted(by_dataset.items())
        },
    }
    both = [d for _, d in verdicts if "model_first" in d]
    if both:
        agree = [(d["model_first"] > 0.5) == (d["model_second"] > 0.5) for d in both]
        first = [x for d in both for x in (d["model_first"], 1 - d["model_second"])]
        metrics["position"] = {
            "pairs": len(both),
            "order_agreement": 100 * sum(agree) / len(both),
            "first_shown_preference": 100 * sum(first) / len(first),
        }
    return metrics
