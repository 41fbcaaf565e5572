"""IFEval (Zhou et al. 2023): prompts with verifiable instructions, scored strict and loose.

Input: the release's input_data.jsonl (or the same records as JSON/Parquet, the Hugging Face copy): one
{"key": int, "prompt": str, "instruction_id_list": [id, ...], "kwargs": [{...}, ...]} per prompt, a kwargs
dict per instruction. As the official code does, kwargs whose value is empty (None, 0, "") are dropped
(the Hugging Face copy holds every kwarg name in every dict, unused ones None); those left must drive the
instruction's checker (`eval.ifeval_checks`), or loading fails naming the line and field.

Generation (open-instruct's IFEval setup): the prompt as one user turn of the chat template, greedy, at
most 2048 new tokens. Or responses from a file: a predictions file of {"id": str(key), "prediction"}, or
the official scorer's input_response_data.jsonl of {"prompt", "response"}.

Scoring: strict, the response as is (an empty response follows nothing); loose, an instruction counts as
followed when any of eight variants of the response follows it: the response, without its first line,
without its last line, without both, and each of those four with every "*" removed (lines are split on
"\\n", the shortened ones stripped). Prompt level: all of a prompt's instructions followed; instruction
level: over all instructions. Also per instruction id and per category (the id's part before ":").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.data.formats import read_records
from lmadapt.errors import DataError
from lmadapt.eval.ifeval_checks import INSTRUCTIONS, follows, kwargs_problem
from lmadapt.eval.report import read_predictions

OPEN_INSTRUCT_MAX_NEW_TOKENS = 2048
INPUT_FILE = "input_data.jsonl"


@dataclass(frozen=True)
class IFEvalPrompt:
    key: int
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]]  # per instruction, empty values dropped

    @property
    def id(self) -> str:
        """The prompt's id in a predictions file."""
        return str(self.key)


def load_prompts(path: str | Path) -> list[IFEvalPrompt]:
    """The prompts of an input_data.jsonl file (or a directory holding one); a malformed record is a
    DataError naming its line and field."""
    path = Path(path)
    if path.is_dir():
        path = path / INPUT_FILE
    prompts, seen = [], set()
    for line, record in read_records(path):
        key = record.get("key")
        if not isinstance(key, int) or isinstance(key, bool):
            raise DataError(path, line, "key", f"expected an integer, got {key!r}")
        if key in seen:
            raise DataError(path, line, "key", f"key {key} repeats an earlier prompt's")
        seen.add(key)
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, line, "prompt", "expected a non-empty string")
        ids, all_kwargs = record.get("instruction_id_list"), record.get("kwargs")
        if not isinstance(ids, list) or not ids:
            raise DataError(path, line, "instruction_id_list", "expected a non-empty list")
        if not isinstance(all_kwargs, list) or len(all_kwargs) != len(ids):
            raise DataError(path, line, "kwargs", f"expected a list of {len(ids)} dicts, one per instruction")
        kept = []
        for i, (instruction_id, kwargs) in enumerate(zip(ids, all_kwargs, strict=True)):
            if instruction_id not in INSTRUCTIONS:
                raise DataError(
                    path, line, f"instruction_id_list[{i}]", f"unknown instruction {instruction_id!r}"
                )
            if not isinstance(kwargs, dict):
                raise DataError(path, line, f"kwargs[{i}]", "expected a dict")
            kwargs = {name: value for name, value in kwargs.items() if value}
            problem = kwargs_problem(instruction_id, kwargs)
            if problem is not None:
                raise DataError(path, line, f"kwargs[{i}].{problem[0]}", f"{instruction_id}: {problem[1]}")
            kept.append(kwargs)
        prompts.append(IFEvalPrompt(key, prompt, list(ids), kept))
    if not prompts:
        raise DataError(path, None, None, "no prompts in the file")
    return prompts


def read_responses(path: str | Path, prompts: Sequence[IFEvalPrompt]) -> list[str | None]:
    """Each prompt's response (None: the file has none) from a predictions file of {"id", "prediction"}
    (`eval.report.read_predictions`) or from the official scorer's input_response_data.jsonl of
    {"prompt", "response"}, matched by prompt text; the first record says which."""
    first = next(read_records(path), (0, {}))[1]
    if not ("prompt" in first and "response" in first):
        return read_predictions(path, [p.id for p in prompts])
    index = {prompt.prompt: i for i, prompt in enumerate(prompts)}
    responses: list[str | None] = [None] * len(prompts)
    for line, record in read_records(path):
        text, response = record.get("prompt"), record.get("response")
        if not isinstance(response, str):
            raise DataError(path, line, "response", "expected a string")
        if text not in index:
            raise DataError(path, line, "prompt", "not the prompt of any loaded IFEval prompt")
        if responses[index[text]] is not None:
            raise DataError(path, line, "prompt", "a second response to this prompt")
        responses[index[text]] = response
    return responses


def loose_variants(response: str) -> list[str]:
    """The eight responses the loose score tries (module docstring)."""
    lines = response.split("\n")
    shortened = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return shortened + [text.replace("*", "") for text in shortened]


def check_prompt(prompt: IFEvalPrompt, response: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose): whether each of the prompt's instructions is followed by `response`."""
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(prompt.instruction_ids, prompt.kwargs, strict=True):
        strict.append(follows(instruction_id, response, kwargs))
        loose.append(strict[-1] or any(follows(instruction_id, text, kwargs) for text in variants[1:]))
    return strict, loose


def _percent(hits: Sequence[bool]) -> float:
    return round(100 * sum(hits) / len(hits), 4)


def _by_group(
    prompts: Sequence[IFEvalPrompt], followed: Sequence[list[bool]], group: Any
) -> dict[str, dict[str, Any]]:
    hits: dict[str, list[bool]] = {}
    for prompt, flags in zip(prompts, followed, strict=True):
        for instruction_id, flag in zip(prompt.instruction_ids, flags, strict=True):
            hits.setdefault(group(instruction_id), []).append(flag)
    return {name: {"num_instructions": len(h), "accuracy": _percent(h)} for name, h in sorted(hits.items())}


def ifeval_metrics(
    prompts: Sequence[IFEvalPrompt], strict: Sequence[list[bool]], loose: Sequence[list[bool]]
) -> dict[str, Any]:
    """Prompt- and instruction-level accuracy (x100, 4 decimals), strict and loose; and each per
    instruction category and id."""
    overall: dict[str, Any] = {
        "num_prompts": len(prompts),
        "num_instructions": sum(len(p.instruction_ids) for p in prompts),
    }
    breakdown: dict[str, Any] = {}
    for mode, followed in (("strict", strict), ("loose", loose)):
        overall[f"prompt_level_{mode}"] = _percent([all(flags) for flags in followed])
        overall[f"instruction_level_{mode}"] = _percent([flag for flags in followed for flag in flags])
        breakdown[mode] = {
            "per_category": _by_group(prompts, followed, lambda i: i.split(":")[0]),
            "per_instruction": _by_group(prompts, followed, lambda i: i),
        }
    return {"overall": overall, **breakdown}


def prediction_records(
    prompts: Sequence[IFEvalPrompt],
    responses: Sequence[str],
    strict: Sequence[list[bool]],
    loose: Sequence[list[bool]],
) -> list[dict[str, Any]]:
    """One predictions.jsonl record per prompt (its "id" and "prediction" make it a predictions file)."""
    return [
        {
            "id": prompt.id,
            "prediction": response,
            "instruction_id_list": prompt.instruction_ids,
            "strict": s,
            "loose": lo,
        }
        for prompt, response, s, lo in zip(prompts, responses, strict, loose, strict=True)
    ]
