"""Heuristic SuperNI baselines that need no model (the two rows of the SuperNI paper's results table).

On the official default test split they score 14.20 (copy-input) and 28.54 (copy-demo) overall ROUGE-L,
so running them is an end-to-end check of a loader and metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lmadapt.data.superni import EvalInstance
from lmadapt.data.tasks import Task
from lmadapt.errors import ConfigError

Predictor = Callable[[Task, EvalInstance], str]


def copy_input(task: Task, instance: EvalInstance) -> str:
    """The instance input, unchanged."""
    return instance.instance_input


def copy_demo(task: Task, instance: EvalInstance) -> str:
    """The output of the task's first positive example ("" when the task has none)."""
    return task.positive_examples[0].output if task.positive_examples else ""


PREDICTORS: dict[str, Predictor] = {"copy-input": copy_input, "copy-demo": copy_demo}


def get_predictor(name: str) -> Predictor:
    if name not in PREDICTORS:
        raise ConfigError(f"unknown predictor {name!r}; choose one of {', '.join(PREDICTORS)}")
    return PREDICTORS[name]


def predict(name: str, tasks: Sequence[Task], instances: Sequence[EvalInstance]) -> list[str]:
    """One prediction per instance, from the named heuristic; every instance's task must be in `tasks`."""
    predictor = get_predictor(name)
    by_name = {task.name: task for task in tasks}
    return [predictor(by_name[instance.task], instance) for instance in instances]
