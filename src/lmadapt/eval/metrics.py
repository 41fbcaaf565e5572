"""The Super-NaturalInstructions metric: exact match and ROUGE-L, as the official leaderboard computes them.

Scores equal the leaderboard's evaluation script (allenai/natural-instructions, eval/automatic) on any
predictions, with two deliberate differences: nothing is downloaded (the xlingual track needs a local GPT-2
tokenizer) and a track without instances is left out of the result instead of dividing by zero.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lmadapt.errors import LmadaptError

if TYPE_CHECKING:
    from rouge_score import rouge_scorer

TRACKS = ("default", "xlingual")

# Tk-Instruct reports these categories by exact match (their outputs are labels), all others by ROUGE-L.
TK_INSTRUCT_EXACT_MATCH_CATEGORIES = frozenset(
    {
        "textual_entailment",
        "cause_effect_classification",
        "coreference_resolution",
        "dialogue_act_recognition",
        "answerability_classification",
        "word_analogy",
    }
)

_PUNCTUATION = frozenset(string.punctuation)


class _Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, then collapse whitespace runs to one space (which also strips).

    Articles are kept: SuperNI adapts the SQuAD normaliser without its article removal.
    """
    kept = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(kept.split())


def category_key(category: str) -> str:
    """'Title Generation' -> 'title_generation' (idempotent on keys)."""
    return "_".join(category.lower().split())


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(ref) for ref in _as_references(references)))


def rouge_l(
    prediction: str,
    references: str | Sequence[str],
    track: str = "default",
    xlingual_tokenizer: Any = None,
) -> float:
    """ROUGE-L F-measure in [0, 1], the maximum over references.

    track "default": rouge_score's own tokenizer (lowercase, non-[a-z0-9] runs become spaces, Porter stemming
    of tokens longer than 3 characters). track "xlingual": GPT-2 byte-level BPE pieces with their leading "Ġ"
    space markers removed, no stemming. `xlingual_tokenizer` is a local tokenizer directory or an object
    with a `tokenize(str) -> list[str]` method (e.g. a loaded GPT-2 tokenizer).
    """
    scorer = _scorer(track, xlingual_tokenizer)
    # float(): rouge_score returns the int 0 when either side has no tokens.
    return float(max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in _as_references(references)))


def score(
    predictions: Sequence[str | None],
    references: Sequence[Sequence[str]],
    *,
    task_names: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    tracks: Sequence[str] | None = None,
    xlingual_tokenizer: Any = None,
) -> dict[str, dict[str, Any]]:
    """Score instances the way the SuperNI leaderboard does, per track.

    One entry per instance in every argument; `None` as a prediction counts as "" (a missing prediction).
    `categories` are the tasks' first `Categories` entries, raw ("Title Generation") or as keys; `tracks`
    default to all "default". Every value is mean x 100 rounded to 4 decimals. Returns, for each track
    that has at least one instance (an empty track is absent, never a division by zero):

        {"num_instances": int, "exact_match": float, "rougeL": float,
         "per_category": {"exact_match_for_<category>": .., "rougeL_for_<category>": .., ...},
         "per_task": {"exact_match_for_<task>": .., "rougeL_for_<task>": .., ...},
         "tk_instruct": {"rougeL": headline, "<metric>_for_<category>": .., ...}}

    "per_category" and "tk_instruct" come only with `categories`, "per_task" only with `task_names`.

    "tk_instruct" is the Tk-Instruct summary: exact match for the categories in
    TK_INSTRUCT_EXACT_MATCH_CATEGORIES, ROUGE-L for the others, and overall ROUGE-L as the headline.
    """
    n = len(predictions)
    columns = {"references": references, "task_names": task_names, "categories": categories, "tracks": tracks}
    for name, column in columns.items():
        if column is not None and len(column) != n:
            raise LmadaptError(f"score: {n} predictions but {len(column)} {name}")
    track_of = list(tracks) if tracks is not None else ["default"] * n
    for i, track in enumerate(track_of):
        if track not in TRACKS:
            raise LmadaptError(f"score: tracks[{i}] is {track!r}; expected one of {', '.join(TRACKS)}")
    if "xlingual" in track_of:
        _scorer("xlingual", xlingual_tokenizer)  # a missing tokenizer fails before any scoring work
    category_of = [category_key(c) for c in categories] if categories is not None else None

    results: dict[str, dict[str, Any]] = {}
    for track in TRACKS:
        rows = [i for i in range(n) if track_of[i] == track]
        if not rows:
            continue
        ems, rouges = [], []
        for i in rows:
            refs = _instance_references(references[i], i)
            prediction = predictions[i] or ""
            ems.append(exact_match(prediction, refs))
            rouges.append(rouge_l(prediction, refs, track=track, xlingual_tokenizer=xlingual_tokenizer))
        track_result: dict[str, Any] = {"num_instances": len(rows), **_mean_scores(ems, rouges)}
        if category_of is not None:
            track_result["per_category"] = _grouped_scores(ems, rouges, [category_of[i] for i in rows])
            track_result["tk_instruct"] = _tk_instruct_summary(track_result)
        if task_names is not None:
            track_result["per_task"] = _grouped_scores(ems, rouges, [task_names[i] for i in rows])
        results[track] = track_result
    return results


def leaderboard_keys(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flatten `score()`'s result to the key names of the leaderboard script's output file.

    E.g. {"exact_match_default_track": .., "rougeL_for_title_generation_default_track": .., ...}.
    """
    flat: dict[str, float] = {}
    for track, result in results.items():
        for metric in ("exact_match", "rougeL"):
            flat[f"{metric}_{track}_track"] = result[metric]
        for group in ("per_category", "per_task"):
            for key, value in result.get(group, {}).items():
                flat[f"{key}_{track}_track"] = value
    return flat


def _mean_scores(ems: list[float], rouges: list[float]) -> dict[str, float]:
    # Sum in instance order, then scale, then divide: the same float operations as the official script.
    return {
        "exact_match": round(100.0 * sum(ems) / len(ems), 4),
        "rougeL": round(100.0 * sum(rouges) / len(rouges), 4),
    }


def _grouped_scores(ems: list[float], rouges: list[float], groups: list[str]) -> dict[str, float]:
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    out: dict[str, float] = {}
    for group, rows in members.items():
        means = _mean_scores([ems[i] for i in rows], [rouges[i] for i in rows])
        for metric, value in means.items():
            out[f"{metric}_for_{group}"] = value
    return out


def _tk_instruct_summary(track_result: dict[str, Any]) -> dict[str, float]:
    summary = {"rougeL": track_result["rougeL"]}
    per_category = track_result["per_category"]
    for key in per_category:
        if not key.startswith("rougeL_for_"):
            continue
        category = key.removeprefix("rougeL_for_")
        metric = "exact_match" if category in TK_INSTRUCT_EXACT_MATCH_CATEGORIES else "rougeL"
        summary[f"{metric}_for_{category}"] = per_category[f"{metric}_for_{category}"]
    return summary


def _as_references(references: str | Sequence[str]) -> Sequence[str]:
    if isinstance(references, str):
        return [references]
    if not references:
        raise LmadaptError("an instance has no reference outputs to score against")
    return references


def _instance_references(references: Any, index: int) -> Sequence[str]:
    if isinstance(references, str) or not references or not all(isinstance(r, str) for r in references):
        raise LmadaptError(f"score: references[{index}] must be a non-empty list of strings: {references!r}")
    return references


def _scorer(track: str, xlingual_tokenizer: Any) -> rouge_scorer.RougeScorer:
    if track == "default":
        return _default_scorer()
    if track != "xlingual":
        raise LmadaptError(f"unknown track {track!r}; expected one of {', '.join(TRACKS)}")
    if xlingual_tokenizer is None:
        raise LmadaptError(
            "the xlingual track scores ROUGE-L over GPT-2 tokens: pass xlingual_tokenizer, a local GPT-2 "
            "tokenizer directory or a loaded tokenizer (nothing is downloaded)"
        )
    if isinstance(xlingual_tokenizer, (str, PathLike)):
        return _xlingual_scorer_from_path(str(Path(xlingual_tokenizer).expanduser().resolve()))
    return _xlingual_scorer(xlingual_tokenizer)


@functools.cache
def _default_scorer() -> rouge_scorer.RougeScorer:
    from rouge_score import rouge_scorer  # imports nltk: ~1 s, paid only when scoring

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@functools.lru_cache(maxsize=4)
def _xlingual_scorer(tokenizer: _Tokenizer) -> rouge_scorer.RougeScorer:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_SpaceMarkerStripped(tokenizer))


@functools.lru_cache(maxsize=4)
def _xlingual_scorer_from_path(path: str) -> rouge_scorer.RougeScorer:
    from lmadapt.models.load import load_tokenizer

    if not Path(path).is_dir():
        raise LmadaptError(f"xlingual_tokenizer: {path} is not a directory holding a GPT-2 tokenizer")
    return _xlingual_scorer(load_tokenizer(path))


class _SpaceMarkerStripped:
    """A rouge_score tokenizer: byte-level BPE pieces without the "Ġ" that marks a preceding space.

    Pieces that were only space markers become "" and are kept, as the official script keeps them.
    """

    def __init__(self, tokenizer: _Tokenizer):
        self._tokenizer = tokenizer

    def tokenize(self, text: str) -> list[str]:
        return [piece.lstrip("Ġ") for piece in self._tokenizer.tokenize(text)]
