from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.data.tasks import PromptEncoding
from lmadapt.demo import Context, DemoSettings
from lmadapt.demo.stages import build_base_model
from lmadapt.demo.suite import FAMILIES, build_suite, export_superni

# A demo small enough for a test: two training families and one held-out family, a 1-layer model.
TINY = DemoSettings(
    max_steps=4,
    warmup_steps=1,
    train_instances=6,
    eval_instances=2,
    hidden_size=32,
    num_layers=1,
    batch_size=4,
    max_new_tokens=4,
    dpo_steps=2,
    dpo_pairs_per_task=2,
    dpo_batch_size=4,
    grpo_prompts_per_task=2,
    grpo_prompts_per_step=2,
    grpo_generations=2,
    grpo_steps=2,
    workers=1,
)


@pytest.fixture
def tiny_settings() -> DemoSettings:
    return TINY


@pytest.fixture
def demo_context(tmp_path: Path) -> Context:
    families = (FAMILIES[0], FAMILIES[1], FAMILIES[-1])
    suite = build_suite(train_instances=6, eval_instances=2, families=families)
    return Context(
        out=tmp_path,
        settings=TINY,
        suite=suite,
        suite_dir=export_superni(suite, tmp_path / "suite"),
        base_model=build_base_model(suite, TINY, tmp_path / "base"),
        encoding=PromptEncoding.parse(TINY.encoding),
    )
