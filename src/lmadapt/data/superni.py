"""Read evaluation (or training) instances from a local clone of Super-NaturalInstructions.

The clone's layout is `tasks/<task>.json` plus `splits/<split>/<subset>_tasks.txt` task lists
(`default` and `xlingual` ship with the dataset). Test subsets keep each task's first N instances, as
the leaderboard does; the train subset samples N instances per task with a seed, as Tk-Instruct does.
Every `EvalInstance` keeps the instruction and the instance input apart, because HINT encodes the
instruction once per task, and also carries the full Tk-Instruct prompt for concatenation models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from lmadapt.data.tasks import PromptEncoding, Task, encode_instruction, encode_prompt, load_task_json
from lmadapt.errors import DataError, LmadaptError
from lmadapt.store import is_plain_name

SPLITS = ("default", "xlingual")
TEST_INSTANCES_PER_TASK = 100

Sampling = Literal["first", "random"]


@dataclass(frozen=True)
class EvalInstance:
    """One instance ready to predict and score.

    `prompt == instruction_text + encode_instance(instance_input)`; `category` is the task's first
    `Categories` entry as written in the task file; `track` is "default" or "xlingual".
    """

    id: str
    task: str
    category: str
    track: str
    instruction_text: str
    instance_input: str
    prompt: str
    references: list[str]


def split_file(root: str | Path, split: str = "default", subset: str = "test") -> Path:
    """The task-list file for `split`: a split name under `<root>/splits/`, or the path of a list file."""
    named = Path(root) / "splits" / split / f"{subset}_tasks.txt"
    if split in SPLITS or named.is_file():
        if not named.is_file():
            raise LmadaptError(f"{named}: split file not found (is {root} a clone of natural-instructions?)")
        return named
    custom = Path(split)
    if not custom.is_file():
        raise LmadaptError(
            f"{split}: split file not found (use {' or '.join(SPLITS)}, a directory name under "
            f"{Path(root) / 'splits'}, or the path of a file listing one task name per line)"
        )
    return custom


def read_task_list(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line, task name) for every non-blank line; a `.json` suffix on a name is dropped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(path, None, None, f"not UTF-8 text ({err.reason})") from None
    entries, seen = [], {}
    for number, line in enumerate(lines, start=1):
        name = line.strip().removesuffix(".json")
        if not name:
            continue
        if not is_plain_name(name):
            raise DataError(
                path,
                number,
                None,
                f"task name {name!r} is not a plain file name (task files are read from "
                "the clone's tasks/ directory only, so no '/', '..' or absolute path)",
            )
        if name in seen:
            raise DataError(path, number, None, f"task {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = number
        entries.append((number, name))
    if not entries:
        raise DataError(path, None, None, "the split lists no tasks")
    return entries


def select_instances(task: Task, max_instances: int | None, sampling: Sampling, seed: int) -> Task:
    """`task` keeping at most `max_instances` instances (None or <= 0: all of them).

    "first" keeps the first ones (the leaderboard's test instances lead every test task's file);
    "random" draws them with a generator seeded by `seed` and the task name, so a task's draw does not
    depend on which other tasks are loaded.
    """
    instances = task.instances
    if max_instances is not None and 0 < max_instances < len(instances):
        if sampling == "first":
            instances = instances[:max_instances]
        else:
            instances = random.Random(f"{seed}/{task.name}").sample(instances, max_instances)
    return replace(task, instances=list(instances))


def load_split_tasks(
    root: str | Path,
    split: str = "default",
    subset: str = "test",
    max_instances: int | None = TEST_INSTANCES_PER_TASK,
    sampling: Sampling | None = None,
    seed: int = 0,
) -> list[Task]:
    """Load the tasks a split lists, in its order, each cut to `max_instances` instances.

    `sampling` defaults to "random" for the train subset and "first" otherwise. Instance ids must be
    unique across the loaded tasks (predictions are matched to instances by id).
    """
    list_path = split_file(root, split, subset)
    sampling = sampling or ("random" if subset == "train" else "first")
    tasks_dir = Path(root) / "tasks"
    tasks, owner = [], {}
    for line, name in read_task_list(list_path):
        task_path = tasks_dir / f"{name}.json"
        if not task_path.is_file():
            raise DataError(list_path, line, None, f"task {name!r} has no file {task_path}")
        task = select_instances(load_task_json(task_path), max_instances, sampling, seed)
        if not task.categories:
            raise DataError(task_path, None, "Categories", "empty list (the first category groups scores)")
        for instance in task.instances:
            if instance.id in owner:
                clash = f"instance id {instance.id!r} is also used by {owner[instance.id]}"
                raise DataError(task_path, None, "Instances", clash)
            owner[instance.id] = name
        tasks.append(task)
    return tasks


def task_track(task: Task, split: str) -> str:
    """The leaderboard track: the split's own name for the two official splits; otherwise "xlingual" when
    the task's input or output language is not English (as for the tasks of the official xlingual split)."""
    if split in SPLITS:
        return split
    languages = set(task.input_language) | set(task.output_language)
    return "default" if languages <= {"English"} else "xlingual"


def eval_instances(tasks: list[Task], encoding: PromptEncoding, split: str = "default") -> list[EvalInstance]:
    """Flatten `tasks` into prompts with the given encoding, in task then instance order."""
    out = []
    for task in tasks:
        instruction = encode_instruction(task, encoding)
        track = task_track(task, split)
        for instance in task.instances:
            out.append(
                EvalInstance(
                    id=instance.id,
                    task=task.name,
                    category=task.categories[0],
                    track=track,
                    instruction_text=instruction,
                    instance_input=instance.input,
                    prompt=encode_prompt(task, instance.input, encoding),
                    references=list(instance.outputs),
                )
            )
    return out


def load_superni(
    root: str | Path,
    split: str = "default",
    encoding: str | PromptEncoding = "def+2pos",
    subset: str = "test",
    max_instances: int | None = TEST_INSTANCES_PER_TASK,
    sampling: Sampling | None = None,
    seed: int = 0,
) -> list[EvalInstance]:
    """`load_split_tasks` then `eval_instances`: the instances of a split, ready to predict and score."""
    if isinstance(encoding, str):
        encoding = PromptEncoding.parse(encoding)
    tasks = load_split_tasks(root, split, subset, max_instances, sampling, seed)
    return eval_instances(tasks, encoding, split)
