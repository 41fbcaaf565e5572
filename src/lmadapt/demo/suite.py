"""The built-in synthetic instruction suite used by `lmadapt demo`.

Each task family is a deterministic rule on a short list of one-token items (letters, digits, common
words), described by several differently worded instructions ("phrasings"). Every (family, phrasing)
pair is one SuperNI-style `Task`. Instructions are 3-10 words from a small shared vocabulary and inputs
hold 2-7 items, so with a word-level tokenizer a "def" prompt is ~25-30 tokens: a ~1M-parameter model
trained from scratch on two CPU cores learns the training families in a few minutes. Held-out families
mirror training families (second item vs first item, rotate right vs rotate left, ...), so transfer to
them is possible in principle but not given.

Evaluation sets: (a) new instances of training tasks, (b) held-out phrasings of training families,
(c) held-out families, all phrasings.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lmadapt.data.tasks import Demonstration, Instance, Task, save_task_json

Items = list[str]

LETTERS = list(string.ascii_lowercase)
DIGITS = [str(d) for d in range(10)]
VOWELS = set("aeiou")
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PLURALS = {
    "cat": "cats",
    "dog": "dogs",
    "bird": "birds",
    "car": "cars",
    "book": "books",
    "cup": "cups",
    "box": "boxes",
    "fox": "foxes",
    "child": "children",
    "mouse": "mice",
}
_ANTONYMS = "big/small hot/cold up/down fast/slow old/new left/right day/night happy/sad wet/dry good/bad"
OPPOSITES = {a: b for pair in _ANTONYMS.split() for a, b in (pair.split("/"), pair.split("/")[::-1])}


@dataclass(frozen=True)
class Family:
    """A task family: how to draw an input, the rule that maps it to the output, and its phrasings."""

    name: str
    make_input: Callable[[random.Random], Items]
    solve: Callable[[Items], Items]
    phrasings: tuple[str, ...]
    heldout: bool = False


def _draw(pool: list[str], low: int, high: int) -> Callable[[random.Random], Items]:
    """Input maker: low..high items drawn with replacement from `pool`."""
    return lambda rng: [rng.choice(pool) for _ in range(rng.randint(low, high))]


def _distinct(rng: random.Random) -> Items:
    return rng.sample(LETTERS, rng.randint(3, 5))


def _shift_letters(step: int) -> Callable[[Items], Items]:
    return lambda items: [LETTERS[LETTERS.index(x) + step] for x in items]


def _add(step: int) -> Callable[[Items], Items]:
    return lambda items: [str(int(x) + step) for x in items]


def _dedupe(items: Items) -> Items:
    return list(dict.fromkeys(items))


def _yes_no(flag: bool) -> Items:
    return ["yes" if flag else "no"]


FAMILIES: tuple[Family, ...] = (
    Family(
        "reverse",
        _draw(LETTERS, 3, 5),
        lambda x: x[::-1],
        (
            "reverse the list",
            "write the items in reverse order",
            "give the items backwards",
            "output the list from last to first",
            "put the items in the opposite order",
            "list the items backwards starting from the end",
        ),
    ),
    Family(
        "sort_letters",
        _draw(LETTERS, 3, 5),
        sorted,
        (
            "sort the letters",
            "put the letters in alphabetical order",
            "write the letters sorted from a to z",
            "arrange the letters alphabetically",
            "give the letters in order from a to z",
            "list the letters in alphabetical order",
        ),
    ),
    Family(
        "sort_numbers_desc",
        _draw(DIGITS, 3, 5),
        lambda x: sorted(x, reverse=True),
        (
            "sort the numbers from largest to smallest",
            "put the numbers in decreasing order",
            "write the numbers from biggest to smallest",
            "arrange the numbers in descending order",
            "give the numbers sorted with the largest first",
            "list the numbers from high to low",
        ),
    ),
    Family(
        "first_item",
        _draw(LETTERS, 3, 6),
        lambda x: x[:1],
        (
            "give the first item",
            "what is the first item",
            "write only the first item of the list",
            "output the item at the start",
            "return the first element",
            "copy the first item and nothing else",
        ),
    ),
    Family(
        "last_item",
        _draw(LETTERS, 3, 6),
        lambda x: x[-1:],
        (
            "give the last item",
            "what is the last item",
            "write only the last item of the list",
            "output the item at the end",
            "return the last element",
            "copy the final item and nothing else",
        ),
    ),
    Family(
        "drop_first",
        _draw(LETTERS, 3, 5),
        lambda x: x[1:],
        (
            "remove the first item",
            "write the list without its first item",
            "delete the first element",
            "give every item except the first one",
            "drop the item at the start",
            "copy the list but skip the first item",
        ),
    ),
    Family(
        "drop_last",
        _draw(LETTERS, 3, 5),
        lambda x: x[:-1],
        (
            "remove the last item",
            "write the list without its last item",
            "delete the last element",
            "give every item except the last one",
            "drop the item at the end",
            "copy the list but skip the final item",
        ),
    ),
    Family(
        "swap_ends",
        _distinct,
        lambda x: x[-1:] + x[1:-1] + x[:1],
        (
            "swap the first and last items",
            "exchange the first item with the last item",
            "switch the items at the start and end",
            "trade places of the first and last elements",
            "swap the two end items of the list",
            "put the last item first and the first item last",
        ),
    ),
    Family(
        "rotate_left",
        _distinct,
        lambda x: x[1:] + x[:1],
        (
            "move the first item to the end",
            "rotate the list left by one",
            "put the first element at the back",
            "shift every item one place to the left",
            "take the first item and place it last",
            "rotate left by one position",
        ),
    ),
    Family(
        "double_each",
        _draw(LETTERS, 2, 4),
        lambda x: [y for y in x for _ in range(2)],
        (
            "write every item twice",
            "repeat each item two times",
            "double each element",
            "say each item two times in a row",
            "copy every item twice",
            "give each element twice",
        ),
    ),
    Family(
        "dedupe",
        _draw(LETTERS[:6], 3, 5),
        _dedupe,
        (
            "remove repeated items",
            "delete the duplicates",
            "keep only the first copy of each item",
            "write each item once",
            "drop every item that was seen before",
            "list the unique items in order",
        ),
    ),
    Family(
        "count_items",
        _draw(LETTERS, 2, 7),
        lambda x: [str(len(x))],
        (
            "count the items",
            "how many items are there",
            "give the number of items",
            "write how many elements the list has",
            "what is the length of the list",
            "count how many elements there are",
        ),
    ),
    Family(
        "max_number",
        _draw(DIGITS, 3, 6),
        lambda x: [max(x)],
        (
            "give the largest number",
            "what is the biggest number",
            "find the maximum",
            "write the highest number in the list",
            "return the maximum value",
            "which number is the largest",
        ),
    ),
    Family(
        "min_number",
        _draw(DIGITS, 3, 6),
        lambda x: [min(x)],
        (
            "give the smallest number",
            "what is the lowest number",
            "find the minimum",
            "write the smallest number in the list",
            "return the minimum value",
            "which number is the smallest",
        ),
    ),
    Family(
        "add_two",
        _draw(DIGITS[:8], 2, 5),
        _add(2),
        (
            "add two to each number",
            "increase every number by two",
            "write each number plus two",
            "add 2 to every element",
            "give each number increased by two",
            "make every number two bigger",
        ),
    ),
    Family(
        "add_one",
        _draw(DIGITS, 2, 5),
        _add(1),
        (
            "add one to each number",
            "increase every number by one",
            "write each number plus one",
            "add 1 to every element",
            "give each number increased by one",
            "make every number one bigger",
        ),
    ),
    Family(
        "digits_to_words",
        _draw(DIGITS, 2, 5),
        lambda x: [NUMBER_WORDS[int(y)] for y in x],
        (
            "write the digits as words",
            "spell out each number",
            "convert the numbers to words",
            "turn every digit into its word",
            "give the name of each number",
            "write each digit as a word",
        ),
    ),
    Family(
        "words_to_digits",
        _draw(NUMBER_WORDS, 2, 5),
        lambda x: [str(NUMBER_WORDS.index(y)) for y in x],
        (
            "write the words as digits",
            "convert the number words to digits",
            "turn every word into its digit",
            "give the digit for each word",
            "change the spelled numbers into digits",
            "write each number word as a number",
        ),
    ),
    Family(
        "every_other",
        _draw(LETTERS, 3, 6),
        lambda x: x[::2],
        (
            "keep every other item",
            "take every second item starting with the first",
            "drop every second item",
            "give the items at odd positions",
            "skip one item after each item you keep",
            "keep the first third and fifth items",
        ),
    ),
    Family(
        "has_vowel",
        _draw(LETTERS, 2, 4),
        lambda x: _yes_no(any(y in VOWELS for y in x)),
        (
            "does the list contain a vowel",
            "is there a vowel among the letters",
            "answer yes if any letter is a vowel",
            "say yes if you see a vowel",
            "check whether some item is a vowel",
            "tell if a vowel appears in the list",
        ),
    ),
    Family(
        "last_kind",
        _draw(LETTERS[:10] + DIGITS, 3, 5),
        lambda x: ["number" if x[-1] in DIGITS else "letter"],
        (
            "is the last item a letter or a number",
            "say letter or number for the final item",
            "tell if the last element is a number or letter",
            "classify the last item as letter or number",
            "what kind of item is at the end",
            "is the end item a digit or a letter",
        ),
    ),
    Family(
        "plural",
        _draw(list(PLURALS), 2, 4),
        lambda x: [PLURALS[y] for y in x],
        (
            "make each word plural",
            "write the plural of every word",
            "turn each noun into its plural form",
            "give the plural form of each word",
            "change every word to mean more than one",
            "pluralize the words",
        ),
    ),
    Family(
        "opposite",
        _draw(list(OPPOSITES), 2, 4),
        lambda x: [OPPOSITES[y] for y in x],
        (
            "give the opposite of each word",
            "write the antonym of every word",
            "replace each word with its opposite",
            "turn each word into its opposite",
            "what are the opposites of these words",
            "swap each word for its antonym",
        ),
    ),
    Family(
        "next_letter",
        _draw(LETTERS[:-1], 2, 5),
        _shift_letters(1),
        (
            "replace each letter with the next letter",
            "shift every letter forward by one",
            "write the letter after each letter",
            "move each letter one step up the alphabet",
            "give the following letter for every letter",
            "change each letter to the one after it",
        ),
    ),
    Family(
        "last_two",
        _draw(LETTERS, 3, 6),
        lambda x: x[-2:],
        (
            "give the last two items",
            "write only the final two items",
            "keep the two items at the end",
            "output the last two elements",
            "return the two last items of the list",
            "copy the two items at the end",
        ),
    ),
    Family(
        "count_a",
        _draw(LETTERS[:5], 3, 6),
        lambda x: [str(x.count("a"))],
        (
            "count how many times a appears",
            "how many a letters are there",
            "give the number of times the letter a occurs",
            "count the letter a",
            "write how often a is in the list",
            "how many items are the letter a",
        ),
    ),
    # Held-out families: each mirrors a training family above.
    Family(
        "second_item",
        _draw(LETTERS, 3, 6),
        lambda x: x[1:2],
        (
            "give the second item",
            "what is the second item",
            "write only the second item of the list",
            "output the item after the first one",
            "return the second element",
            "copy the second item and nothing else",
        ),
        heldout=True,
    ),
    Family(
        "rotate_right",
        _distinct,
        lambda x: x[-1:] + x[:-1],
        (
            "move the last item to the front",
            "rotate the list right by one",
            "put the last element at the start",
            "shift every item one place to the right",
            "take the last item and place it first",
            "rotate right by one position",
        ),
        heldout=True,
    ),
    Family(
        "sort_numbers_asc",
        _draw(DIGITS, 3, 5),
        sorted,
        (
            "sort the numbers from smallest to largest",
            "put the numbers in increasing order",
            "write the numbers from smallest to biggest",
            "arrange the numbers in ascending order",
            "give the numbers sorted with the smallest first",
            "list the numbers from low to high",
        ),
        heldout=True,
    ),
    Family(
        "subtract_one",
        _draw(DIGITS[1:], 2, 5),
        _add(-1),
        (
            "subtract one from each number",
            "decrease every number by one",
            "write each number minus one",
            "take 1 away from every element",
            "give each number decreased by one",
            "make every number one smaller",
        ),
        heldout=True,
    ),
    Family(
        "first_two",
        _draw(LETTERS, 3, 6),
        lambda x: x[:2],
        (
            "give the first two items",
            "write only the first two items",
            "keep the two items at the start",
            "output the first two elements",
            "return the two first items of the list",
            "copy the two items at the start",
        ),
        heldout=True,
    ),
    Family(
        "previous_letter",
        _draw(LETTERS[1:], 2, 5),
        _shift_letters(-1),
        (
            "replace each letter with the previous letter",
            "shift every letter back by one",
            "write the letter before each letter",
            "move each letter one step down the alphabet",
            "give the preceding letter for every letter",
            "change each letter to the one before it",
        ),
        heldout=True,
    ),
)


SOURCE = "lmadapt_synthetic"
EVAL_SETS = ("heldout_instances", "heldout_phrasings", "heldout_families")


@dataclass
class Suite:
    """Training tasks and the three evaluation sets, all as SuperNI-style tasks.

    `heldout_instances[i]` shares its definition and demonstrations with `train[i]` but holds unseen
    inputs; its name is the training task's name plus "_eval".
    """

    train: list[Task]
    heldout_instances: list[Task]
    heldout_phrasings: list[Task]
    heldout_families: list[Task]

    def eval_sets(self) -> dict[str, list[Task]]:
        return {name: getattr(self, name) for name in EVAL_SETS}


def _draw_inputs(
    family: Family,
    rng: random.Random,
    count: int,
    exclude: set[str],
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """`count` distinct input texts of `family`, none in `exclude` and all accepted by `keep`."""
    found: dict[str, None] = {}
    for _ in range(100 * count + 1000):
        if len(found) == count:
            return list(found)
        text = " ".join(family.make_input(rng))
        if text not in exclude and (keep is None or keep(text)):
            found[text] = None
    raise ValueError(f"family {family.name!r} cannot produce {count} distinct inputs")


def _answer(family: Family, text: str) -> str:
    return " ".join(family.solve(text.split()))


def _instances(name: str, family: Family, inputs: list[str]) -> list[Instance]:
    return [Instance(f"{name}-{i}", x, [_answer(family, x)]) for i, x in enumerate(inputs)]


def _make_task(
    family: Family, phrasing: int, rng: random.Random, inputs: list[str], reserved: set[str], num_demos: int
) -> Task:
    name = f"synth_{family.name}_p{phrasing}"
    positives = [Demonstration(x, _answer(family, x)) for x in _draw_inputs(family, rng, num_demos, reserved)]
    # Negative examples show the commonest failure of a weak model: copying the input unchanged.
    changes = _draw_inputs(family, rng, num_demos, reserved, keep=lambda x: _answer(family, x) != x)
    negatives = [
        Demonstration(x, x, "the output copies the input instead of following the instruction")
        for x in changes
    ]
    return Task(
        name=name,
        definition=family.phrasings[phrasing],
        positive_examples=positives,
        negative_examples=negatives,
        instances=_instances(name, family, inputs),
        categories=[family.name],
        source=[SOURCE],
        domains=["Synthetic"],
        instance_license=["Apache 2.0"],
    )


def build_suite(
    seed: int = 0,
    train_instances: int = 400,
    eval_instances: int = 20,
    heldout_phrasings: int = 1,
    num_demonstrations: int = 2,
    families: tuple[Family, ...] = FAMILIES,
) -> Suite:
    """Generate the suite; the same arguments always give the same tasks.

    Per training family, `heldout_phrasings` phrasings (drawn with the seed) are kept for evaluation set
    (b) and the others become training tasks with `train_instances` instances each (inputs may repeat).
    Every evaluation task gets `eval_instances` distinct inputs that occur in no training instance and
    no demonstration of the same family.
    """
    suite = Suite([], [], [], [])
    for family in families:
        rng = random.Random(f"{seed}/{family.name}")
        phrasings = range(len(family.phrasings))
        held = set(phrasings) if family.heldout else set(rng.sample(phrasings, heldout_phrasings))
        eval_inputs = _draw_inputs(family, rng, eval_instances * len(phrasings), set())
        reserved = set(eval_inputs)
        for p in phrasings:
            own_eval = eval_inputs[p * eval_instances : (p + 1) * eval_instances]
            if p in held:
                task = _make_task(family, p, rng, own_eval, reserved, num_demonstrations)
                (suite.heldout_families if family.heldout else suite.heldout_phrasings).append(task)
                continue
            train_inputs = []
            while len(train_inputs) < train_instances:
                text = " ".join(family.make_input(rng))
                if text not in reserved:
                    train_inputs.append(text)
            task = _make_task(family, p, rng, train_inputs, reserved, num_demonstrations)
            suite.train.append(task)
            name = task.name + "_eval"
            suite.heldout_instances.append(
                replace(task, name=name, instances=_instances(name, family, own_eval))
            )
    return suite


def export_superni(suite: Suite, out_dir: str | Path) -> Path:
    """Write the suite in the Super-NaturalInstructions layout and return `out_dir`.

    `tasks/<name>.json` for every task; `splits/default/train_tasks.txt` (training tasks),
    `test_tasks.txt` (tasks with unseen instructions: sets b and c) and one `<set>_tasks.txt` per
    evaluation set.
    """
    out_dir = Path(out_dir)
    split_dir = out_dir / "splits" / "default"
    split_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": suite.train, "test": suite.heldout_phrasings + suite.heldout_families}
    splits.update(suite.eval_sets())
    for split, tasks in splits.items():
        (split_dir / f"{split}_tasks.txt").write_text("".join(t.name + "\n" for t in tasks), encoding="utf-8")
    for tasks in [suite.train, *suite.eval_sets().values()]:
        for task in tasks:
            save_task_json(task, out_dir / "tasks" / f"{task.name}.json")
    return out_dir


def fresh_instances(task: Task, count: int, seed: int) -> list[Instance]:
    """`count` new instances of `task`: inputs of its family that none of its instances or demonstrations
    use (so a model trained on them is still scored on unseen inputs)."""
    family = next(f for f in FAMILIES if f.name == task.categories[0])
    used = {i.input for i in task.instances} | {
        d.input for d in task.positive_examples + task.negative_examples
    }
    name = f"{task.name}_fresh"
    inputs = _draw_inputs(family, random.Random(f"{seed}/{name}"), count, used)
    return _instances(name, family, inputs)
