from __future__ import annotations

import re

import pytest

from lmadapt.data.tasks import load_task_json
from lmadapt.demo.suite import FAMILIES, NUMBER_WORDS, build_suite, export_superni, fresh_instances

# Independent reference answers for a sample of families (input and output are space-separated items).
REFERENCE = {
    "reverse": lambda x: " ".join(reversed(x.split())),
    "sort_letters": lambda x: " ".join(sorted(x.split())),
    "sort_numbers_desc": lambda x: " ".join(sorted(x.split(), key=int, reverse=True)),
    "swap_ends": lambda x: " ".join([x.split()[-1], *x.split()[1:-1], x.split()[0]]),
    "dedupe": lambda x: " ".join(w for i, w in enumerate(x.split()) if w not in x.split()[:i]),
    "count_items": lambda x: str(len(x.split())),
    "add_two": lambda x: " ".join(str(int(d) + 2) for d in x.split()),
    "every_other": lambda x: " ".join(x.split()[0::2]),
    "has_vowel": lambda x: "yes" if set(x.split()) & set("aeiou") else "no",
    "last_kind": lambda x: "number" if x.split()[-1].isdigit() else "letter",
    "next_letter": lambda x: " ".join(chr(ord(c) + 1) for c in x.split()),
    "previous_letter": lambda x: " ".join(chr(ord(c) - 1) for c in x.split()),
    "digits_to_words": lambda x: " ".join(NUMBER_WORDS[int(d)] for d in x.split()),
    "rotate_right": lambda x: " ".join(x.split()[-1:] + x.split()[:-1]),
    "subtract_one": lambda x: " ".join(str(int(d) - 1) for d in x.split()),
}


@pytest.fixture(scope="module")
def suite():
    return build_suite(seed=0, train_instances=6, eval_instances=4)


def family_of(task):
    return task.categories[0]


def test_family_design():
    assert len(FAMILIES) >= 20
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    assert 3 <= sum(f.heldout for f in FAMILIES) < len(FAMILIES) - 20
    for family in FAMILIES:
        assert len(set(family.phrasings)) == len(family.phrasings) >= 5
        for phrasing in family.phrasings:
            assert 3 <= len(phrasing.split()) <= 10, phrasing
            assert re.fullmatch(r"[a-z0-9 ]+", phrasing), phrasing
    words = {w for f in FAMILIES for p in f.phrasings for w in p.split()}
    assert len(words) < 250


def test_suite_shape(suite):
    train_families = [f for f in FAMILIES if not f.heldout]
    assert len(suite.train) == sum(len(f.phrasings) - 1 for f in train_families)
    assert len(suite.heldout_phrasings) == len(train_families)
    assert len(suite.heldout_families) == sum(len(f.phrasings) for f in FAMILIES if f.heldout)
    assert [t.name + "_eval" for t in suite.train] == [t.name for t in suite.heldout_instances]
    for task in suite.train:
        assert re.fullmatch(r"synth_[a-z_]+_p\d", task.name)
        assert (len(task.instances), len(task.positive_examples), len(task.negative_examples)) == (6, 2, 2)
        assert task.categories == [task.name[len("synth_") : -3]]
    for tasks in suite.eval_sets().values():
        assert all(len(t.instances) == 4 for t in tasks)
    names = {t.name for tasks in [suite.train, *suite.eval_sets().values()] for t in tasks}
    assert len(names) == 2 * len(suite.train) + len(suite.heldout_phrasings) + len(suite.heldout_families)


def test_heldout_sets_are_held_out(suite):
    train_definitions = {t.definition for t in suite.train}
    train_families = {family_of(t) for t in suite.train}
    for task in suite.heldout_phrasings:
        assert task.definition not in train_definitions and family_of(task) in train_families
    for task in suite.heldout_families:
        assert family_of(task) not in train_families
    for train, evaluation in zip(suite.train, suite.heldout_instances, strict=True):
        assert evaluation.definition == train.definition
        assert evaluation.positive_examples == train.positive_examples
    seen: dict[str, set[str]] = {}
    for task in suite.train:
        seen.setdefault(family_of(task), set()).update(i.input for i in task.instances)
    for tasks in suite.eval_sets().values():
        for task in tasks:
            seen.setdefault(family_of(task), set()).update(d.input for d in task.positive_examples)
    for tasks in suite.eval_sets().values():
        for task in tasks:
            assert not {i.input for i in task.instances} & seen[family_of(task)], task.name


def test_answers_follow_the_rules(suite):
    checked = set()
    for task in [*suite.train, *suite.heldout_families]:
        rule = REFERENCE.get(family_of(task))
        if rule is None:
            continue
        checked.add(family_of(task))
        for instance in task.instances:
            assert instance.outputs == [rule(instance.input)], task.name
        for demo in task.positive_examples:
            assert demo.output == rule(demo.input)
        for demo in task.negative_examples:
            assert demo.output == demo.input != rule(demo.input)
    assert checked == set(REFERENCE)


def test_items_are_single_words(suite):
    for task in suite.train:
        for instance in task.instances:
            assert 2 <= len(instance.input.split()) <= 7
            assert re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", instance.input)
            assert re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", instance.outputs[0])


def test_deterministic_for_a_seed(suite):
    assert build_suite(seed=0, train_instances=6, eval_instances=4) == suite
    other = build_suite(seed=1, train_instances=6, eval_instances=4)
    assert other.train[0].instances != suite.train[0].instances


def test_export_round_trips(suite, tmp_path):
    root = export_superni(suite, tmp_path / "synth")
    splits = root / "splits" / "default"
    read = lambda name: (splits / f"{name}_tasks.txt").read_text().split("\n")[:-1]  # noqa: E731
    assert read("train") == [t.name for t in suite.train]
    assert read("test") == [t.name for t in suite.heldout_phrasings + suite.heldout_families]
    for name, tasks in suite.eval_sets().items():
        assert read(name) == [t.name for t in tasks]
        for task in tasks:
            assert load_task_json(root / "tasks" / f"{task.name}.json") == task
    for task in suite.train:
        assert load_task_json(root / "tasks" / f"{task.name}.json") == task
    total = 2 * len(suite.train) + len(suite.heldout_phrasings) + len(suite.heldout_families)
    assert len(list((root / "tasks").iterdir())) == total


def test_fresh_instances_are_new_inputs_answered_by_the_rule(suite):
    task = suite.heldout_phrasings[0]
    fresh = fresh_instances(task, 5, seed=0)
    used = {i.input for i in task.instances} | {
        d.input for d in task.positive_examples + task.negative_examples
    }
    assert len({i.input for i in fresh}) == 5 and not {i.input for i in fresh} & used
    family = next(f for f in FAMILIES if f.name == task.categories[0])
    assert all(i.outputs == [" ".join(family.solve(i.input.split()))] for i in fresh)
    assert fresh == fresh_instances(task, 5, seed=0)
