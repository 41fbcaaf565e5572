"""Target-task queries: the prompts of a few (unlabelled) examples of each task to select data for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmadapt.config import QuerySourceConfig
from lmadapt.data.formats import Messages, RecordLocation, parse_prompt, read_records, record_unit
from lmadapt.data.superni import load_split_tasks
from lmadapt.data.tasks import PromptEncoding, Task, encode_prompt, load_task_json
from lmadapt.errors import ConfigError, DataError


@dataclass(frozen=True)
class Query:
    task: str
    messages: Messages  # the prompt only
    origin: str  # where it came from: "file:line" or "task file#instance id"


def read_queries(configs: Sequence[QuerySourceConfig]) -> list[Query]:
    """Every query of every source, in order; DataError (file, line, field) for a bad record."""
    if not configs:
        raise ConfigError("queries: none given (list target-task files under queries:)")
    queries: list[Query] = []
    for cfg in configs:
        if not cfg.path:
            raise ConfigError("queries: an entry has no path")
        path = Path(cfg.path)
        if path.is_dir():
            max_instances = cfg.max_instances or None
            tasks = load_split_tasks(path, cfg.split, cfg.subset, max_instances, "first")
            queries += [q for task in tasks for q in _task_queries(task, path / "tasks", cfg)]
        elif _is_task_file(path):
            queries += _task_queries(load_task_json(path), path.parent, cfg)
        else:
            queries += _prompt_queries(path, cfg)
    return queries


def _is_task_file(path: Path) -> bool:
    """A SuperNI task file: one JSON object with a "Definition" (a prompt file is JSON lines or a list)."""
    if path.suffix != ".json" or not path.is_file() or record_unit(path) != "line":
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False  # JSON lines, or broken: the prompt reader reports it with its line
    return isinstance(record, dict) and "Definition" in record


def _task_queries(task: Task, tasks_dir: Path, cfg: QuerySourceConfig) -> list[Query]:
    encoding = PromptEncoding.parse(cfg.encoding)
    instances = task.instances[: cfg.max_instances] if cfg.max_instances else task.instances
    if not instances:
        raise DataError(tasks_dir / f"{task.name}.json", None, "Instances", "no instances to use as queries")
    return [
        Query(
            task.name,
            [{"role": "user", "content": encode_prompt(task, instance.input, encoding)}],
            f"{tasks_dir / task.name}.json#{instance.id}",
        )
        for instance in instances
    ]


def _prompt_queries(path: Path, cfg: QuerySourceConfig) -> list[Query]:
    unit = record_unit(path) if path.exists() else "line"
    queries = []
    for line, record in read_records(path):
        where = RecordLocation(str(path), line, unit)
        task = record.get("task", cfg.task or path.stem)
        if not isinstance(task, str) or not task.strip():
            raise where.error("task", f"expected a non-empty task name, got {task!r}")
        queries.append(Query(task, parse_prompt(record, where), f"{path}:{line}"))
    if not queries:
        raise DataError(str(path), None, None, "no records found")
    return queries
