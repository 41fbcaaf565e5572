from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.data.superni import eval_instances, load_split_tasks
from lmadapt.data.tasks import Demonstration, Instance, PromptEncoding, Task
from lmadapt.errors import ConfigError
from lmadapt.eval.metrics import score
from lmadapt.eval.predictors import PREDICTORS, copy_demo, copy_input, get_predictor, predict

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superni"


def task(name: str, demos: list[str]) -> Task:
    return Task(
        name=name,
        definition="Answer.",
        positive_examples=[Demonstration(f"in {d}", d) for d in demos],
        negative_examples=[],
        instances=[Instance(f"{name}-{i}", f"  question {i}\n", [f"answer {i}"]) for i in range(2)],
        categories=["Question Answering"],
    )


def test_copy_input_and_copy_demo() -> None:
    tasks = [task("a", ["first demo", "second demo"]), task("b", [])]
    instances = eval_instances(tasks, PromptEncoding())
    assert copy_input(tasks[0], instances[1]) == "  question 1\n"  # the raw input, not the prompt
    assert copy_demo(tasks[0], instances[1]) == "first demo"
    assert copy_demo(tasks[1], instances[2]) == ""
    assert predict("copy-demo", tasks, instances) == ["first demo", "first demo", "", ""]
    assert predict("copy-input", tasks, instances) == [x.instance_input for x in instances]
    assert set(PREDICTORS) == {"copy-input", "copy-demo"}


def test_unknown_predictor() -> None:
    with pytest.raises(ConfigError, match="copy-input, copy-demo"):
        get_predictor("copy-output")


# The official leaderboard script's per-task scores for these predictions (run offline on the sample).
OFFICIAL = {
    "copy-input": {
        "task036_qasc_topic_word_to_generate_related_fact": (0.0, 42.0072),
        "task1557_jfleg_answer_generation": (18.0, 87.0179),
        "task1159_bard_analogical_reasoning_containers": (0.0, 2.0),
    },
    "copy-demo": {
        "task036_qasc_topic_word_to_generate_related_fact": (0.0, 2.0667),
        "task1557_jfleg_answer_generation": (0.0, 6.8295),
        "task1159_bard_analogical_reasoning_containers": (21.0, 21.0),
    },
}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_heuristics_match_the_official_script_on_sample_tasks(name: str, tmp_path: Path) -> None:
    if not (SHARED / "tasks").is_dir():
        pytest.skip(f"SuperNI sample not found at {SHARED}")
    listing = tmp_path / "tasks.txt"
    listing.write_text("\n".join(OFFICIAL[name]), encoding="utf-8")
    tasks = load_split_tasks(SHARED, split=str(listing))
    instances = eval_instances(tasks, PromptEncoding(num_pos=2))
    results = score(
        predict(name, tasks, instances),
        [x.references for x in instances],
        task_names=[x.task for x in instances],
    )["default"]["per_task"]
    for task_name, (em, rouge) in OFFICIAL[name].items():
        assert (results[f"exact_match_for_{task_name}"], results[f"rougeL_for_{task_name}"]) == (em, rouge)
