from __future__ import annotations

import random
import re

import pytest
from nltk.stem.porter import PorterStemmer

from lmadapt.errors import LmadaptError
from lmadapt.eval import metrics
from lmadapt.eval.metrics import (
    category_key,
    exact_match,
    leaderboard_keys,
    normalize_answer,
    rouge_l,
    score,
)


class WordPieces:
    """A GPT-2-like tokenizer stand-in: each word keeps the space before it as a leading "Ġ"."""

    def tokenize(self, text: str) -> list[str]:
        return [piece.replace(" ", "Ġ") for piece in re.findall(r" ?[^ ]+| ", text)]


# --- normalisation and exact match -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The  Cat,\tsat!\n", "the cat sat"),
        ("The answer is a cat.", "the answer is a cat"),  # articles stay
        ("state-of-the-art", "stateoftheart"),  # punctuation is removed, not replaced by a space
        ("a - b", "a b"),
        ("¿Qué?", "¿qué"),  # only ASCII punctuation goes
        ("“Yes”，", "“yes”，"),
        ("...", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_any_reference():
    assert exact_match("Yes.", ["no", "YES"]) == 1.0
    assert exact_match("yes", ["no", "maybe"]) == 0.0
    assert exact_match("the cat", ["cat"]) == 0.0  # no article removal
    assert exact_match("東京", ["東京"]) == 1.0


def test_exact_match_empty_prediction():
    assert exact_match("", ["no"]) == 0.0
    assert exact_match("", ["!"]) == 1.0  # both normalise to ""


# --- ROUGE-L, default track --------------------------------------------------------------------------


def test_rouge_l_lcs_by_hand():
    # [the quick brown fox jump] vs [the brown dog jump high]: LCS = the, brown, jump -> P = R = 3/5.
    assert rouge_l("the quick brown fox jumps", ["the brown dog jumps high"]) == pytest.approx(0.6, abs=1e-12)
    # Order matters: LCS of [b a] and [a b] is 1 -> P = R = 1/2.
    assert rouge_l("b a", ["a b"]) == pytest.approx(0.5, abs=1e-12)


def test_rouge_l_stems_long_tokens_only():
    assert rouge_l("running", ["runs"]) == 1.0  # both stem to "run"
    # pred [the cat are run] vs ref [a cat run]: LCS 2, P = 2/4, R = 2/3, F = 4/7.
    assert rouge_l("the cats are running", ["a cat runs"]) == pytest.approx(4 / 7, abs=1e-12)
    # Porter turns "was" into "wa", but tokens of 3 characters or fewer are not stemmed.
    assert rouge_l("was", ["wa"]) == 0.0


def test_rouge_l_ignores_punctuation_and_case():
    assert rouge_l("Hello, WORLD!", ["hello world"]) == 1.0
    assert rouge_l("state-of-the-art", ["state of the art"]) == 1.0


def test_rouge_l_max_over_references():
    # vs "a b c d": P = 1, R = 1/2 -> 2/3; vs "a x": P = 1/2, R = 1/2 -> 1/2; vs "z": 0.
    assert rouge_l("a b", ["z", "a x", "a b c d"]) == pytest.approx(2 / 3, abs=1e-12)
    assert rouge_l("a b", "a b") == 1.0  # one reference as a string


def test_rouge_l_empty_prediction_is_zero():
    assert rouge_l("", ["anything"]) == 0.0
    assert isinstance(rouge_l("", ["anything"]), float)


def test_rouge_l_unicode_under_default_tokenizer():
    # Non-[a-z0-9] characters split words: "naïve" -> [na, ve]; "naive" -> [naiv]. LCS = approach.
    # P = 1/3, R = 1/2 -> F = 0.4.
    assert rouge_l("naïve approach", ["naive approach"]) == pytest.approx(0.4, abs=1e-12)
    assert rouge_l("café", ["cafe"]) == 0.0  # [caf] vs [cafe]
    assert rouge_l("東京", ["東京"]) == 0.0  # CJK leaves no tokens at all
    assert rouge_l("東京 tower", ["tower"]) == 1.0


def test_rouge_l_rejects_no_references():
    with pytest.raises(LmadaptError, match="no reference"):
        rouge_l("a", [])


# --- ROUGE-L against a reference implementation -------------------------------------------------------

_stemmer = PorterStemmer()


def reference_tokens(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return [_stemmer.stem(w) if len(w) > 3 else w for w in words]


def reference_rouge_l(prediction: str, reference: str) -> float:
    pred, ref = reference_tokens(prediction), reference_tokens(reference)
    if not pred or not ref:
        return 0.0
    lcs = [[0] * (len(ref) + 1) for _ in range(len(pred) + 1)]
    for i, p in enumerate(pred):
        for j, r in enumerate(ref):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if p == r else max(lcs[i][j + 1], lcs[i + 1][j])
    common = lcs[-1][-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def test_rouge_l_matches_reference_lcs_f1():
    words = ["The", "cats", "running", "runs", "ran", "studies", "studying", "Généré", "42", "x-ray"]
    words += ["don't,", "NASA!", "a", "an", "of", "東京", "generation", ""]
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 9)))

    for _ in range(200):
        prediction = sentence()
        references = [sentence() for _ in range(rng.randint(1, 3))]
        expected = max(reference_rouge_l(prediction, r) for r in references)
        assert rouge_l(prediction, references) == pytest.approx(expected, abs=1e-12), (prediction, references)


# --- ROUGE-L, xlingual track -------------------------------------------------------------------------


def test_xlingual_needs_a_tokenizer():
    with pytest.raises(LmadaptError, match="xlingual_tokenizer"):
        rouge_l("a", ["a"], track="xlingual")


def test_xlingual_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(LmadaptError, match="not a directory"):
        rouge_l("a", ["a"], track="xlingual", xlingual_tokenizer=tmp_path / "gpt2")


def test_unknown_track_is_a_user_error():
    with pytest.raises(LmadaptError, match="unknown track"):
        rouge_l("a", ["a"], track="english")


def test_xlingual_strips_space_markers_without_stemming_or_lowercasing():
    xlingual = {"track": "xlingual", "xlingual_tokenizer": WordPieces()}
    # [東京 タワー] vs [東京]: P = 1/2, R = 1 -> 2/3.
    assert rouge_l("東京 タワー", ["東京"], **xlingual) == pytest.approx(2 / 3, abs=1e-12)
    assert rouge_l("running", ["runs"], **xlingual) == 0.0
    assert rouge_l("Paris", ["paris"], **xlingual) == 0.0
    # "a  b" -> [a, Ġ, Ġb] -> [a, "", b]; the empty piece still counts: P = 2/3, R = 1 -> 0.8.
    assert rouge_l("a  b", ["a b"], **xlingual) == pytest.approx(0.8, abs=1e-12)


def _byte_level_bpe(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["the cat sat on the mat", "le chat est sur le tapis"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.save_pretrained(tmp_path)
    return tokenizer


def test_xlingual_with_a_local_byte_level_bpe(tmp_path):
    tokenizer = _byte_level_bpe(tmp_path)
    assert tokenizer.tokenize("the cat") == ["the", "Ġcat"]
    assert tokenizer.tokenize("the mat") == ["the", "Ġmat"]
    # [the cat] vs [the mat]: LCS 1 -> P = R = 1/2.
    assert rouge_l("the cat", ["the mat"], track="xlingual", xlingual_tokenizer=tokenizer) == 0.5
    from_path = rouge_l("the cat", ["the mat"], track="xlingual", xlingual_tokenizer=tmp_path)
    from_str = rouge_l("the cat", ["le chat", "the cat"], track="xlingual", xlingual_tokenizer=str(tmp_path))
    assert (from_path, from_str) == (0.5, 1.0)


def test_scorers_are_built_once(tmp_path):
    _byte_level_bpe(tmp_path)
    assert metrics._scorer("default", None) is metrics._scorer("default", None)
    assert metrics._scorer("xlingual", tmp_path) is metrics._scorer("xlingual", str(tmp_path))


# --- aggregation ---------------------------------------------------------------------------------------

PREDICTIONS = ["the brown fox", "brown the", None, "Cat.", "x y z"]
REFERENCES = [["the brown fox"], ["the brown fox jumps"], ["cat"], ["dog", "cat"], ["x"]]
TASKS = ["t_a", "t_a", "t_b", "t_b", "t_c"]
CATEGORIES = ["Title Generation", "Title Generation", "Word Analogy", "Word Analogy", "Title Generation"]
# Per instance: EM 1, 0, 0, 1, 0; ROUGE-L 1, 1/3 ([brown the] vs [the brown fox jump]), 0, 1, 1/2.


def test_score_overall_per_task_per_category_and_rounding():
    result = score(PREDICTIONS, REFERENCES, task_names=TASKS, categories=CATEGORIES)
    assert list(result) == ["default"]
    default = result["default"]
    assert default["num_instances"] == 5
    assert default["exact_match"] == 40.0
    assert default["rougeL"] == 56.6667  # 100 * (1 + 1/3 + 0 + 1 + 1/2) / 5 = 56.6666...
    assert default["per_task"] == {
        "exact_match_for_t_a": 50.0,
        "rougeL_for_t_a": 66.6667,
        "exact_match_for_t_b": 50.0,
        "rougeL_for_t_b": 50.0,
        "exact_match_for_t_c": 0.0,
        "rougeL_for_t_c": 50.0,
    }
    assert default["per_category"] == {
        "exact_match_for_title_generation": 33.3333,
        "rougeL_for_title_generation": 61.1111,  # 100 * (1 + 1/3 + 1/2) / 3
        "exact_match_for_word_analogy": 50.0,
        "rougeL_for_word_analogy": 50.0,
    }
    assert default["tk_instruct"] == {
        "rougeL": 56.6667,
        "rougeL_for_title_generation": 61.1111,
        "exact_match_for_word_analogy": 50.0,
    }


def test_score_without_groups_has_only_overall():
    result = score(PREDICTIONS, REFERENCES)
    assert result == {"default": {"num_instances": 5, "exact_match": 40.0, "rougeL": 56.6667}}


def test_score_tracks_are_separate_and_empty_tracks_are_absent():
    predictions = ["running", "東京 タワー", "a b"]
    references = [["runs"], ["東京"], ["a c"]]
    tracks = ["default", "xlingual", "default"]
    result = score(
        predictions, references, task_names=["t1", "t2", "t1"], tracks=tracks, xlingual_tokenizer=WordPieces()
    )
    assert result["default"] == {
        "num_instances": 2,
        "exact_match": 0.0,
        "rougeL": 75.0,  # 1 and 1/2
        "per_task": {"exact_match_for_t1": 0.0, "rougeL_for_t1": 75.0},
    }
    assert result["xlingual"]["rougeL"] == 66.6667
    assert result["xlingual"]["per_task"] == {"exact_match_for_t2": 0.0, "rougeL_for_t2": 66.6667}
    assert "xlingual" not in score(["a"], [["a"]])
    assert score([], []) == {}


def test_leaderboard_keys():
    result = score(PREDICTIONS[:2], REFERENCES[:2], task_names=TASKS[:2], categories=CATEGORIES[:2])
    assert leaderboard_keys(result) == {
        "exact_match_default_track": 50.0,
        "rougeL_default_track": 66.6667,
        "exact_match_for_title_generation_default_track": 50.0,
        "rougeL_for_title_generation_default_track": 66.6667,
        "exact_match_for_t_a_default_track": 50.0,
        "rougeL_for_t_a_default_track": 66.6667,
    }


def test_category_key():
    assert category_key("Cause  Effect Classification") == "cause_effect_classification"
    assert category_key("title_generation") == "title_generation"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"references": [["a"]]}, "2 predictions but 1 references"),
        ({"task_names": ["t"]}, "2 predictions but 1 task_names"),
        ({"tracks": ["default", "english"]}, r"tracks\[1\] is 'english'"),
        ({"references": [["a"], []]}, r"references\[1\] must be a non-empty list"),
        ({"references": [["a"], "b"]}, r"references\[1\] must be a non-empty list"),
        ({"tracks": ["default", "xlingual"]}, "pass xlingual_tokenizer"),
    ],
)
def test_score_rejects_bad_input(kwargs, message):
    arguments = {"references": [["a"], ["b"]], **kwargs}
    with pytest.raises(LmadaptError, match=message):
        score(["a", "b"], **arguments)
