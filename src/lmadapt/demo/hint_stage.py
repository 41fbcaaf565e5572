"""The demo's HINT stage: `lmadapt hint` at the SFT stage's underlying model and training budget."""

from __future__ import annotations

from collections.abc import Sequence

from lmadapt.config import (
    HintConfig,
    HintDataConfig,
    HintTrainConfig,
    HypernetworkConfig,
    ModelConfig,
    apply_override,
    from_dict,
    to_dict,
)
from lmadapt.demo.stages import Context, StageResult, train_and_score, training_budget
from lmadapt.recipes import hint

DEMO_MODULES = HypernetworkConfig(adapter_size=32, prefix_length=8)


def hint_config(ctx: Context, overrides: Sequence[str] = ()) -> HintConfig:
    """The stage's config, with `key.sub=value` overrides (as on the `lmadapt hint` command line) on top."""
    s = ctx.settings
    cfg = HintConfig(
        model=ModelConfig(path=str(ctx.base_model)),
        hint=DEMO_MODULES,
        data=HintDataConfig(
            superni=str(ctx.suite_dir),
            encoding=str(ctx.encoding),
            max_instances_per_task=s.train_instances,
            template="tulu",
            instance_format="compact",  # the tiny model matches the demonstrations' "Input: Output:" frame
            max_input_length=192,
            max_target_length=64,
            seed=s.seed,
        ),
        train=HintTrainConfig(**training_budget(ctx, "hint")),  # the SFT stage's, field for field
    )
    if not overrides:
        return cfg
    raw = to_dict(cfg)
    for item in overrides:
        apply_override(raw, item)
    return from_dict(HintConfig, raw)


def stage_hint(ctx: Context, overrides: Sequence[str] = ()) -> StageResult:
    """HINT with the SFT stage's steps, batch and schedule; scored like every stage (compiled modules
    through `eval superni`), so its FLOPs and seconds per instance sit next to concatenation's."""
    cfg = hint_config(ctx, overrides)
    description = f"HINT: the hypernetwork reads the instruction once per task ({ctx.encoding})"
    return train_and_score(ctx, "hint", description, hint.run, cfg)[1]
