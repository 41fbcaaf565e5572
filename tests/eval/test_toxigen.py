from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval import toxigen
from lmadapt.eval.toxigen import Prompt


def write_prompts(root: Path) -> Path:
    """ToxiGen's prompts/ layout: one prompt per line, statements joined by literal \\n escapes."""
    root.mkdir()
    (root / "hate_asian_1k.txt").write_text(
        "- statement one\\n- statement two\\n-\n- back\\\\slash\\n-\n\n- third\\n-\n", encoding="utf-8"
    )
    (root / "neutral_asian_1k.txt").write_text("- a kind remark\\n-\n", encoding="utf-8")
    (root / "hate_mental_disability.txt").write_text("- m1\\n-\n- m2\\n-\n", encoding="utf-8")
    return root


def test_loader_reads_the_toxigen_layout_and_samples_like_tulu(tmp_path: Path) -> None:
    data = write_prompts(tmp_path / "toxigen")
    prompts = toxigen.load_prompts(data, None)
    # Files in sorted order, each shuffled by one generator seeded 42; the blank line is skipped.
    rng = random.Random(42)
    asian = [(1, "- statement one\\n- statement two\\n-"), (2, "- back\\\\slash\\n-"), (4, "- third\\n-")]
    rng.shuffle(asian)
    disability = [(1, "- m1\\n-"), (2, "- m2\\n-")]
    rng.shuffle(disability)
    expected = [Prompt("hate_asian_1k.txt", n, "hate", "asian", toxigen.unescape(t)) for n, t in asian]
    expected += [
        Prompt("hate_mental_disability.txt", n, "hate", "mental_disability", toxigen.unescape(t))
        for n, t in disability
    ]
    expected += [Prompt("neutral_asian_1k.txt", 1, "neutral", "asian", "- a kind remark\n-")]
    assert prompts == expected
    assert toxigen.unescape("- back\\\\slash\\n-") == "- back\\slash\n-"

    sampled = toxigen.load_prompts(data, 1)
    assert [(p.file, p.line) for p in sampled] == [
        ("hate_asian_1k.txt", expected[0].line),
        ("hate_mental_disability.txt", expected[3].line),
        ("neutral_asian_1k.txt", 1),
    ]


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no <label>_<group>\.txt prompt files"):
        toxigen.load_prompts(tmp_path, 500)
    (tmp_path / "prompts.txt").write_text("- x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"prompts\.txt: expected a file named <label>_<group>\.txt"):
        toxigen.load_prompts(tmp_path, 500)
    (tmp_path / "prompts.txt").unlink()
    (tmp_path / "hate_women.txt").write_bytes(b"- \xff\n")
    with pytest.raises(DataError, match=r"hate_women\.txt: not UTF-8 text"):
        toxigen.load_prompts(tmp_path, 500)


def test_prompt_is_the_statements_or_tulus_chat_request() -> None:
    prompt = Prompt("hate_women.txt", 1, "hate", "women", "- one\n-")
    assert toxigen.build_prompt(prompt, chat=False) == "- one\n-"
    assert toxigen.build_prompt(prompt, chat=True) == "Complete the following: - one\n-"


def test_metrics_overall_per_group_and_per_label_by_hand() -> None:
    prompts = [
        Prompt("hate_asian.txt", 1, "hate", "asian", "p"),
        Prompt("hate_asian.txt", 2, "hate", "asian", "p"),
        Prompt("neutral_asian.txt", 1, "neutral", "asian", "p"),
        Prompt("hate_women.txt", 1, "hate", "women", "p"),
    ]
    metrics = toxigen.toxigen_metrics(prompts, [True, False, False, True])
    assert metrics["overall"] == {"num_prompts": 4, "percent_toxic": 50.0, "num_groups": 2}
    # asian: 1 of 3 (its hate and neutral files together, as Tulu grouped them); women: 1 of 1
    assert metrics["per_group"] == {
        "asian": {"num_prompts": 3, "percent_toxic": 33.3333},
        "women": {"num_prompts": 1, "percent_toxic": 100.0},
    }
    assert metrics["per_label"] == {
        "hate": {"num_prompts": 3, "percent_toxic": 66.6667},
        "neutral": {"num_prompts": 1, "percent_toxic": 0.0},
    }
