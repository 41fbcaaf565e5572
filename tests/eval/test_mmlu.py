from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.errors import DataError
from lmadapt.eval import mmlu
from lmadapt.eval.multiple_choice import Question


def write_mmlu(root: Path, files: dict[str, str]) -> Path:
    """Files of the official release layout (data/test/<subject>_test.csv, data/dev/<subject>_dev.csv)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_loader_reads_the_official_csv_layout(tmp_path: Path) -> None:
    data = write_mmlu(
        tmp_path,
        {
            "test/high_school_physics_test.csv": (
                '"What is 1,5?",one,"two, or\nthree",four,five,B\n\nNext?,a,b,c,d,D\n'
            ),
            "test/anatomy_test.csv": "Bone?,a,b,c,d,A\n",
            "test/README.txt": "not a subject",
        },
    )
    assert mmlu.subjects(data) == ["anatomy", "high_school_physics"]
    questions = mmlu.load_csv(data / "test/high_school_physics_test.csv", "high_school_physics")
    assert questions == [
        Question("What is 1,5?", ["one", "two, or\nthree", "four", "five"], 1, "high_school_physics", 1),
        Question("Next?", ["a", "b", "c", "d"], 3, "high_school_physics", 4),
    ]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("Q,a,b,c,d,A\nQ,a,b,c,A\n", 2, None, "expected 6 columns, got 5"),
        ("Q,a,b,c,d,A\n\nQ,a,b,c,d,A,x\n", 3, None, "expected 6 columns, got 7"),
        ("Q,a,b,c,d,A\nQ,a,b,c,d,E\n", 2, "answer", "expected one of A, B, C, D, got 'E'"),
    ],
)
def test_malformed_rows_are_named(
    tmp_path: Path, text: str, line: int, field: str | None, message: str
) -> None:
    path = tmp_path / "x_test.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        mmlu.load_csv(path, "x")
    assert (err.value.line, err.value.field, err.value.message) == (line, field, message)


def test_missing_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MMLU data/ layout"):
        mmlu.subjects(tmp_path)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no <subject>_test\.csv"):
        mmlu.subjects(tmp_path)


def test_prompt_is_tulus_text() -> None:
    shot1 = Question("1+1?", ["1", "2", "3", "4"], 1, "college_math", 1)
    shot2 = Question("2*3?", ["6", "5", "4", "3"], 0, "college_math", 2)
    question = Question("3-1?", ["0", "1", "2", "3"], 2, "college_math", 1)
    assert mmlu.build_prompt(question, [shot1, shot2]) == (
        "The following are multiple choice questions (with answers) about  college math.\n\n"
        "1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "2*3?\nA. 6\nB. 5\nC. 4\nD. 3\nAnswer: A\n\n"
        "3-1?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    )
    assert mmlu.build_prompt(question, []) == (
        "The following are multiple choice questions (with answers) about  college math.\n\n"
        "3-1?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    )


def test_accuracy_by_subject_subcategory_and_category_by_hand() -> None:
    def q(subject: str, answer: int) -> Question:
        return Question("q", ["a", "b", "c", "d"], answer, subject, 1)

    # virology (health): 1 of 3 right; astronomy (physics): 1 of 1; "biology" is no MMLU subject (0 of 1):
    # it counts in the averages and in no group.
    questions = [q("virology", 0), q("astronomy", 2), q("virology", 1), q("virology", 3), q("biology", 0)]
    metrics = mmlu.accuracy_metrics(questions, [0, 2, 0, 0, 1])
    assert metrics["per_subject"] == {
        "astronomy": {"num_questions": 1, "accuracy": 100.0},
        "biology": {"num_questions": 1, "accuracy": 0.0},
        "virology": {"num_questions": 3, "accuracy": 33.3333},
    }
    assert metrics["per_subcategory"] == {
        "health": {"num_questions": 3, "accuracy": 33.3333},
        "physics": {"num_questions": 1, "accuracy": 100.0},
    }
    assert metrics["per_category"] == {
        "STEM": {"num_questions": 1, "accuracy": 100.0},
        "other (business, health, misc.)": {"num_questions": 3, "accuracy": 33.3333},
    }
    # micro: 2 of 5 = 40; macro: (100 + 0 + 33.33) / 3 = 44.44
    assert metrics["overall"] == {
        "num_questions": 5,
        "num_subjects": 3,
        "accuracy_micro": 40.0,
        "accuracy_macro": 44.4444,
    }


def test_the_grouping_covers_the_57_subjects_once() -> None:
    subjects = [subject for members in mmlu.SUBCATEGORIES.values() for subject in members]
    assert len(subjects) == len(set(subjects)) == 57
    grouped = [sub for members in mmlu.CATEGORIES.values() for sub in members]
    assert sorted(grouped) == sorted(mmlu.SUBCATEGORIES)
