from __future__ import annotations

import importlib
import importlib.util

import pytest

from lmadapt.eval import ifeval_checks as checks
from lmadapt.eval.ifeval_checks import INSTRUCTIONS, follows, kwargs_problem

LOREM = "The quick brown fox jumps over the lazy dog while the farmer watches from the porch."

# instruction id -> (kwargs, responses that follow it, responses that do not)
CASES: dict[str, tuple[dict, list[str], list[str]]] = {
    "keywords:existence": (
        {"keywords": ["apple", "Banana"]},
        ["I like APPLE pie and banana bread."],
        ["I like apple pie.", ""],
    ),
    "keywords:frequency": (
        {"keyword": "dog", "frequency": 2, "relation": "at least"},
        ["Dog eat dog world.", "dog dog dog"],
        ["A dog.", "No animals here."],
    ),
    "keywords:forbidden_words": (
        {"forbidden_words": ["cat", "mouse"]},
        ["Concatenate the strings.", "A dog barked."],
        ["The Cat sat.", "a mouse!"],
    ),
    "keywords:letter_frequency": (
        {"letter": "Z", "let_frequency": 3, "let_relation": "less than"},
        ["zigzag", "No such letter."],
        ["Zigzag puzzle", "zzz"],
    ),
    "language:response_language": (
        {"language": "de"},
        ["Das ist ein schöner Tag, und wir gehen heute in den Park spazieren.", "12345 !!!"],
        ["This is a lovely day and we are going to walk in the park today."],
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        ["Dr. Smith arrived at 5 p.m. on Jan. 5. He left.", "One sentence only."],
        ["One. Two. Three.", "Dr. Smith arrived. He left! Did he? Yes."],
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        ["First part.\n***\nSecond part.", "***\nFirst.\n***\nSecond.\n***"],
        ["First.\n***\n\n***\nSecond.", "Only one paragraph.", "A\n***\nB\n***\nC"],
    ),
    "length_constraints:number_words": (
        {"num_words": 5, "relation": "at least"},
        ["one two three four five", "don't stop-me now, ok"],
        ["one two three four", "a-b c"],
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "Banana"},
        ['Apple pie.\n\n"Banana, split.\n\nCherry.', "One.\n\nbanana! yes.\n\nThree."],
        ["Apple.\n\nCherry banana.\n\nDate.", "Apple.\n\nBanana.", "Apple.\n\n\n\nBanana.\n\nCherry."],
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        ["Dear [name], at [address] and [time]."],
        ["Dear [name], hello.", "No brackets."],
    ),
    "detectable_content:postscript": (
        {"postscript_marker": "P.P.S"},
        ["Hello.\nP. P. S. see you", "Body\np.p.s more"],
        ["Hello.\nP.S. see you", "No postscript."],
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2},
        ["* one\n* two", "Intro\n- one\n  * two\n**bold** line"],
        ["* one\n* two\n- three", "* one", "**not a bullet**\n**nor this**"],
    ),
    "detectable_format:constrained_response": (
        {},
        ["My answer is yes.", "Well... My answer is maybe. Really."],
        ["My answer is yes", "Yes."],
    ),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        ["*one* and *two*", "**bold** and *it*"],
        ["*one* only", "**bold** only", "** ** and * *", "*across\nlines*"],
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        ["Section 1\nIntro\nSection 2\nBody", "x Section 1 a Section 2 b Section 3 c"],
        ["Section 1\nonly one", "SECTION 1 a SECTION 2 b"],
    ),
    "detectable_format:json_format": (
        {},
        ['{"a": 1}', '```json\n{"a": [1, 2]}\n```', "  [1, 2]  "],
        ["{'a': 1}", "Here is JSON: {}"],
    ),
    "detectable_format:title": (
        {},
        ["<<A Poem>>\nRoses are red.", "Text <<  x  >> more"],
        ["<<>> empty", "<< >>", "<<split\ntitle>>", "No title."],
    ),
    "combination:two_responses": (
        {},
        ["First answer.\n******\nSecond answer.", "******A******B******"],
        ["Same.\n******\nSame.", "A******\n******B", "Only one."],
    ),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a poem about cats."},
        ["  write a poem about CATS. Here it is...", "Write a poem about cats."],
        ["Here is a poem: Write a poem about cats."],
    ),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        ["Done. Any other questions?", '"Done. any other questions?"  '],
        ["Any other questions? Done.", "Any other question"],
    ),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        ["The NASA and FBI agents met.", "I am OK."],
        ["The Nasa agent met one FBI agent.", "all lower"],
    ),
    "change_case:english_capital": (
        {},
        ["THIS IS A SHORT ENGLISH SENTENCE ABOUT THE WEATHER TODAY."],
        [
            "123 456",
            "THIS is mostly capital text about the weather.",
            "DAS IST EIN SCHÖNER TAG UND WIR GEHEN IN DEN PARK.",
        ],
    ),
    "change_case:english_lowercase": (
        {},
        ["this is a short english sentence about the weather today."],
        ["This is a short English sentence.", "das ist ein schöner tag und wir gehen heute in den park."],
    ),
    "punctuation:no_comma": (
        {},
        ["No commas here. None at all."],
        ["One, two.", "中文，not ascii? yes, ascii"],
    ),
    "startend:quotation": (
        {},
        ['"Wrapped in quotes."', '  "x"  '],
        ['"', "'single'", '"Open only.'],
    ),
}


def test_every_instruction_of_the_release_has_cases():
    assert set(CASES) == set(INSTRUCTIONS)
    assert len(INSTRUCTIONS) == 25


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_checker_on_hand_made_responses(instruction_id):
    kwargs, passing, failing = CASES[instruction_id]
    assert kwargs_problem(instruction_id, kwargs) is None
    for response in passing:
        assert follows(instruction_id, response, kwargs), response
    for response in failing:
        assert not follows(instruction_id, response, kwargs), response


def test_blank_response_follows_nothing():
    assert checks.no_comma("   ", {})  # the checker alone would accept it
    assert not follows("punctuation:no_comma", "   ", {})


def test_less_than_is_strict_and_at_least_is_not():
    at_least = {"num_words": 3, "relation": "at least"}
    less_than = {"num_words": 3, "relation": "less than"}
    assert follows("length_constraints:number_words", "a b c", at_least)
    assert not follows("length_constraints:number_words", "a b c", less_than)
    assert follows("length_constraints:number_words", "a b", less_than)


def test_english_punkt_knows_abbreviations():
    # An untrained Punkt would split after "Dr." and "p.m.": the English parameters are in use.
    assert checks.sentences("Dr. Smith came at 5 p.m. on Jan. 5. He left.") == [
        "Dr. Smith came at 5 p.m. on Jan. 5.",
        "He left.",
    ]


def test_language_detection_is_seeded():
    text = "Ciao"  # short: langdetect's unseeded guesses vary from call to call
    assert len({checks.detect_language(text) for _ in range(5)}) == 1


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "field"),
    [
        ("keywords:frequency", {"keyword": "x", "frequency": 2}, "relation"),
        ("keywords:frequency", {"keyword": "x", "frequency": 2, "relation": "more than"}, "relation"),
        ("length_constraints:number_words", {"num_words": "5", "relation": "at least"}, "num_words"),
        ("keywords:existence", {"keywords": "apple"}, "keywords"),
    ],
)
def test_kwargs_problem_names_the_field(instruction_id, kwargs, field):
    problem = kwargs_problem(instruction_id, kwargs)
    assert problem is not None and problem[0] == field


# ---------------------------------------------------------------------------------------------
# Parity with lm-eval's checkers (the official google-research code) on the same responses


@pytest.fixture(scope="module")
def lm_eval_checkers():
    """lm-eval's IFEval registry, with its Punkt tokenizer given the English parameters ours use (lm-eval
    would load NLTK's punkt data, which is not installed; LOCAL_RANK != 0 keeps its import from trying to
    download it) and langdetect's global factory seeded as ours is."""
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-eval is not installed (dev extra)")
    import langdetect
    import nltk.tokenize

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCAL_RANK", "1")
        registry = importlib.import_module("lm_eval.tasks.ifeval.instructions_registry")
        util = importlib.import_module("lm_eval.tasks.ifeval.instructions_util")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(util, "_get_sentence_tokenizer", checks._punkt)
        patch.setattr(nltk.tokenize, "_get_punkt_tokenizer", lambda language="english": checks._punkt())
        patch.setattr(langdetect.DetectorFactory, "seed", checks.LANGDETECT_SEED)
        yield registry.INSTRUCTION_DICT


# Second settings for the parity test: the other relation, marker, splitter and case of each kwarg.
MORE_KWARGS: list[tuple[str, dict]] = [
    ("keywords:frequency", {"keyword": "the", "frequency": 3, "relation": "less than"}),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 5, "let_relation": "at least"}),
    ("keywords:existence", {"keywords": ["fox", "dog"]}),
    ("keywords:forbidden_words", {"forbidden_words": ["quick", "answer"]}),
    ("language:response_language", {"language": "en"}),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}),
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"}),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "apple"},
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("detectable_content:number_placeholders", {"num_placeholders": 1}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 1}),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Here you go"}),
    ("startend:end_checker", {"end_phrase": "Bye."}),
    ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "less than"}),
]


def _lm_eval_follows(registry, instruction_id: str, response: str, kwargs: dict) -> bool:
    instruction = registry[instruction_id](instruction_id)
    instruction.build_description(**kwargs)
    return bool(response.strip()) and bool(instruction.check_following(response))


def test_parity_with_lm_eval(lm_eval_checkers):
    """Every instruction under two settings against every hand-made response of every instruction (about
    4,500 pairs, a quarter of them followed; most unrelated, which is the point: quirks show on responses
    nobody aimed at)."""
    responses = sorted({r for _, passing, failing in CASES.values() for r in passing + failing})
    responses += [
        LOREM,
        LOREM.upper(),
        "* a\n* b\n\n***\n\nSection 1 <<T>> [x] P.S. end",
        '"My answer is no."',
    ]
    settings = [(instruction_id, kwargs) for instruction_id, (kwargs, _, _) in CASES.items()] + MORE_KWARGS
    checked = 0
    for instruction_id, kwargs in settings:
        for response in responses:
            ours = follows(instruction_id, response, kwargs)
            theirs = _lm_eval_follows(lm_eval_checkers, instruction_id, response, kwargs)
            assert ours == theirs, (instruction_id, response)
            checked += 1
    assert checked == len(settings) * len(responses)
