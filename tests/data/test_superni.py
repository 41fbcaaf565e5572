from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.data.superni import (
    eval_instances,
    load_split_tasks,
    load_superni,
    read_task_list,
    select_instances,
)
from lmadapt.data.tasks import (
    Demonstration,
    Instance,
    PromptEncoding,
    Task,
    encode_instance,
    encode_prompt,
    save_task_json,
)
from lmadapt.errors import DataError, LmadaptError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superni"


def make_task(name: str, n: int, category: str = "Title Generation", language: str = "English") -> Task:
    return Task(
        name=name,
        definition=f"Do {name}",
        positive_examples=[Demonstration(f"p{i} in", f"p{i} out", f"p{i} why") for i in range(1, 3)],
        negative_examples=[Demonstration(f"n{i} in", f"n{i} out", f"n{i} why") for i in range(1, 3)],
        instances=[Instance(f"{name}-{i}", f"input {i}", [f"out {i}", f"alt {i}"]) for i in range(n)],
        categories=[category],
        input_language=[language],
        output_language=[language],
    )


def write_clone(root: Path, splits: dict[str, list[Task]], split: str = "default") -> Path:
    """SuperNI layout: tasks/<name>.json and splits/<split>/<subset>_tasks.txt for every subset given."""
    for subset, tasks in splits.items():
        for task in tasks:
            save_task_json(task, root / "tasks" / f"{task.name}.json")
        list_file = root / "splits" / split / f"{subset}_tasks.txt"
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("".join(t.name + "\n" for t in tasks), encoding="utf-8")
    return root


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return write_clone(
        tmp_path / "ni",
        {
            "test": [make_task("task2_b", 5), make_task("task1_a", 4, category="Textual Entailment")],
            "train": [make_task("task9_t", 10), make_task("task8_u", 10)],
        },
    )


def test_test_split_keeps_first_instances_in_list_order(clone: Path) -> None:
    instances = load_superni(clone, encoding="def+2pos", max_instances=3)
    assert [x.id for x in instances] == [f"task2_b-{i}" for i in range(3)] + [
        f"task1_a-{i}" for i in range(3)
    ]
    first, last = instances[0], instances[-1]
    assert (first.task, first.category, first.track) == ("task2_b", "Title Generation", "default")
    assert last.category == "Textual Entailment"
    assert first.instance_input == "input 0"
    assert first.references == ["out 0", "alt 0"]
    task = make_task("task2_b", 5)
    assert first.prompt == encode_prompt(task, "input 0", PromptEncoding(num_pos=2))
    assert first.prompt == first.instruction_text + encode_instance(first.instance_input)


def test_instance_limit_off_keeps_all(clone: Path) -> None:
    assert len(load_superni(clone, max_instances=None)) == 9
    assert len(load_superni(clone, max_instances=0)) == 9
    assert len(load_superni(clone, max_instances=100)) == 9


def test_train_subset_draws_seeded_random_instances(clone: Path, tmp_path: Path) -> None:
    tasks = load_split_tasks(clone, subset="train", max_instances=4, seed=1)
    ids = [[x.id for x in t.instances] for t in tasks]
    assert ids == [
        [x.id for x in t.instances] for t in load_split_tasks(clone, subset="train", max_instances=4, seed=1)
    ]
    assert ids != [
        [x.id for x in t.instances] for t in load_split_tasks(clone, subset="train", max_instances=4, seed=2)
    ]
    for task_ids, task in zip(ids, tasks, strict=True):
        assert len(set(task_ids)) == 4 and all(i.startswith(task.name + "-") for i in task_ids)
    assert ids[0] != [f"task9_t-{i}" for i in range(4)]  # not simply the first ones
    # A task's draw does not depend on the other tasks of the split.
    alone = tmp_path / "alone.txt"
    alone.write_text("task8_u\n", encoding="utf-8")
    only = load_split_tasks(clone, split=str(alone), subset="train", max_instances=4, seed=1)
    assert [x.id for x in only[0].instances] == ids[1]


def test_sampling_can_be_chosen_explicitly(clone: Path) -> None:
    task = make_task("t", 10)
    assert [x.id for x in select_instances(task, 3, "first", 0).instances] == ["t-0", "t-1", "t-2"]
    drawn = select_instances(task, 3, "random", 0).instances
    assert drawn == select_instances(task, 3, "random", 0).instances and len(drawn) == 3
    assert len(task.instances) == 10  # the loaded task is not modified
    first = load_split_tasks(clone, subset="train", max_instances=2, sampling="first")
    assert [x.id for x in first[0].instances] == ["task9_t-0", "task9_t-1"]


@pytest.mark.parametrize(
    ("spec", "present", "absent"),
    [
        ("def", ["Definition: Do task2_b."], ["Positive Example", "Negative Example"]),
        ("def+1pos", ["Positive Example 1", "p1 out"], ["Positive Example 2", "Negative Example", "why"]),
        ("def+2pos+2neg", ["Positive Example 2", "Negative Example 2", "n2 out"], ["Explanation"]),
        ("def+1pos+expl", ["Explanation: p1 why."], ["Negative Example"]),
    ],
)
def test_prompt_encodings(clone: Path, spec: str, present: list[str], absent: list[str]) -> None:
    instance = load_superni(clone, encoding=spec, max_instances=1)[0]
    for text in present:
        assert text in instance.instruction_text
    for text in absent:
        assert text not in instance.prompt
    assert instance.prompt.endswith("Now complete the following example -\nInput: input 0.\nOutput: ")
    expected = encode_prompt(make_task("task2_b", 5), "input 0", PromptEncoding.parse(spec))
    assert instance.prompt == expected


def test_custom_list_file_and_tracks_by_language(tmp_path: Path) -> None:
    root = write_clone(tmp_path / "ni", {"test": [make_task("en", 2), make_task("fr", 2, language="French")]})
    listing = tmp_path / "mine.txt"
    listing.write_text("fr.json\n\n  en  \n", encoding="utf-8")
    instances = load_superni(root, split=str(listing))
    assert [(x.task, x.track) for x in instances] == [("fr", "xlingual")] * 2 + [("en", "default")] * 2
    # Named official splits take their track from the split, like the leaderboard's reference file.
    write_clone(root, {"test": [make_task("fr", 2, language="French")]}, split="xlingual")
    assert {x.track for x in load_superni(root, split="xlingual")} == {"xlingual"}
    assert {
        x.track for x in eval_instances(load_split_tasks(root, str(listing)), PromptEncoding(), "default")
    } == {"default"}


def test_other_split_directories_are_found_by_name(tmp_path: Path) -> None:
    root = write_clone(tmp_path / "ni", {"heldout_tasks_x": [make_task("a", 2)]}, split="mysplit")
    assert [x.id for x in load_superni(root, split="mysplit", subset="heldout_tasks_x")] == ["a-0", "a-1"]


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the file


def test_missing_split_file(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    with pytest.raises(LmadaptError, match=r"splits/default/test_tasks.txt: split file not found"):
        load_superni(tmp_path)
    with pytest.raises(LmadaptError, match=r"nope.txt: split file not found"):
        load_superni(tmp_path, split=str(tmp_path / "nope.txt"))


def test_missing_task_file_names_list_file_and_line(clone: Path) -> None:
    listing = clone / "splits" / "default" / "test_tasks.txt"
    listing.write_text("task2_b\n\ntask404_gone\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_superni(clone)
    assert (err.value.path, err.value.line) == (str(listing), 3)
    assert "task404_gone" in str(err.value) and "tasks/task404_gone.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_task_json_names_the_task_file(clone: Path) -> None:
    bad = clone / "tasks" / "task1_a.json"
    bad.write_text('{"Definition": ["x"],\n "Categories": [}', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_superni(clone)
    assert err.value.path == str(bad) and err.value.line == 2


def test_task_file_with_a_bad_field(clone: Path) -> None:
    path = clone / "tasks" / "task1_a.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["Instances"][1]["output"] = "not a list"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(DataError, match=r"Instances\[1\]\.output") as err:
        load_superni(clone)
    assert err.value.path == str(path)


@pytest.mark.parametrize(
    ("listing", "message", "line"),
    [("task2_b\ntask1_a\ntask2_b\n", "listed twice", 3), ("\n  \n", "no tasks", None)],
)
def test_bad_task_lists(clone: Path, listing: str, message: str, line: int | None) -> None:
    path = clone / "splits" / "default" / "test_tasks.txt"
    path.write_text(listing, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        read_task_list(path)
    assert err.value.line == line


def test_instance_ids_must_be_unique_across_tasks(tmp_path: Path) -> None:
    clash = make_task("b", 2)
    clash.instances[1].id = "a-0"
    root = write_clone(tmp_path / "ni", {"test": [make_task("a", 2), clash]})
    with pytest.raises(DataError, match="'a-0' is also used by a") as err:
        load_superni(root)
    assert err.value.path.endswith("tasks/b.json")


def test_a_task_needs_a_category(tmp_path: Path) -> None:
    task = make_task("a", 2)
    task.categories = []
    root = write_clone(tmp_path / "ni", {"test": [task]})
    with pytest.raises(DataError, match="Categories"):
        load_superni(root)


def test_unknown_encoding_is_a_config_error(clone: Path) -> None:
    with pytest.raises(LmadaptError, match="prompt encoding"):
        load_superni(clone, encoding="def+2shots")


# ---------------------------------------------------------------------------------------------
# The real sample


def test_real_sample_test_split_counts() -> None:
    if not (SHARED / "splits" / "default" / "test_tasks.txt").is_file():
        pytest.skip(f"SuperNI sample not found at {SHARED}")
    tasks = load_split_tasks(SHARED)
    assert len(tasks) == 119
    assert sum(len(t.instances) for t in tasks) == 10_930
    # 103 tasks are complete, two of them have fewer than 100 instances in the official set too.
    assert sum(len(t.instances) == 100 for t in tasks) == 101
    instances = eval_instances(tasks, PromptEncoding(num_pos=2))
    assert len({x.id for x in instances}) == 10_930
    assert {x.track for x in instances} == {"default"}
    assert len({x.category for x in instances}) == 12


@pytest.mark.parametrize("name", ["../outside", "/abs/outside", "sub/../../outside", "..", "a\\b"])
def test_task_names_cannot_reach_outside_the_tasks_directory(tmp_path: Path, name: str) -> None:
    root = write_clone(tmp_path / "ni", {"test": [make_task("task1_a", 2)]})
    # A valid task file where each name would lead without the check.
    save_task_json(make_task("outside", 2), tmp_path / "outside.json")
    save_task_json(make_task("outside", 2), root / "outside.json")
    (root / "splits" / "default" / "test_tasks.txt").write_text(f"task1_a\n{name}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test_tasks\.txt:2: task name .* is not a plain file name"):
        load_split_tasks(root, "default", "test")
