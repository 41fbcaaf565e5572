from __future__ import annotations

import pytest

from lmadapt.config import SFTConfig, from_dict, load_config, save_config
from lmadapt.errors import ConfigError


def test_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "# lmadapt sft r.yaml\n"
        "model: {path: /m}\n"
        "data:\n  sources: [{path: a.jsonl, fraction: 0.5}]\n"
        "train: {lr: 1e-4, batch_size: 4}\n"
    )
    cfg = load_config(
        SFTConfig, recipe, ["train.lr=3e-4", "data.sources.1.path=b.jsonl", "model.lora.enabled=true"]
    )
    assert cfg.model.path == "/m"
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 4
    assert [s.path for s in cfg.data.sources] == ["a.jsonl", "b.jsonl"]
    assert cfg.data.sources[0].fraction == 0.5
    assert cfg.model.lora.enabled is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
        ("trian.lr=1", "unknown config key 'trian'; did you mean 'train'?"),
        ("model.lora.rank=4", "valid keys here: alpha, dropout, enabled, r, target_modules"),
        ("train.schedule=cosin", "did you mean 'cosine'?"),
        ("train.batch_size=many", "'train.batch_size' must be int"),
        ("data.sources.0.count=x", "'data.sources.0.count'"),
        ("novalue", "must look like key.sub=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, [override])
    assert expected in str(e.value)


def test_unknown_key_in_yaml_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  warmup_ration: 0.1\n")
    with pytest.raises(ConfigError, match=r"train.warmup_ration'; did you mean 'train.warmup_ratio'"):
        load_config(SFTConfig, recipe)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(
        SFTConfig, None, ["data.sources.0.path=x.jsonl", "train.betas=[0.9, 0.95]", "train.epochs=2"]
    )
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(SFTConfig, tmp_path / "config.yaml") == cfg


def test_mappings_are_checked_key_by_key():
    from lmadapt.eval.suite import SuiteConfig

    raw = {"models": {"a": "/m/a", "b": 7}, "evals": [{"eval": "mmlu", "args": {"k": 0}}]}
    cfg = from_dict(SuiteConfig, raw)
    assert cfg.models == {"a": "/m/a", "b": "7"} and cfg.evals[0].args == {"k": 0}
    with pytest.raises(ConfigError, match="'models' must be a mapping"):
        from_dict(SuiteConfig, {"models": ["a"]})
    with pytest.raises(ConfigError, match=r"'models\.a' must be str"):
        from_dict(SuiteConfig, {"models": {"a": ["x"]}})
