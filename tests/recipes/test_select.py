from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from support import logged_losses, tiny_run_config

from lmadapt.cli import main
from lmadapt.config import SFTConfig
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.recipes import sft
from lmadapt.recipes.select import run


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("method", ["rds", "random"])
def test_manifest_points_at_the_lines_the_output_holds(select_config, pool_file, method):
    result = run(select_config(f"selection.method={method}"))
    outputs, manifest = _lines(result.output), _lines(result.manifest)
    assert len(outputs) == len(manifest) == 20
    pool_lines = pool_file.read_text().splitlines()
    for number, (row, entry) in enumerate(zip(outputs, manifest, strict=True), start=1):
        assert entry["output_line"] == number and entry["source"] == str(pool_file)
        original = json.loads(pool_lines[entry["line"] - 1])  # the line, read back from the pool file
        assert row == {
            "messages": [
                {"role": "user", "content": original["prompt"]},
                {"role": "assistant", "content": original["completion"]},
            ]
        }
        assert (entry["method"], entry["budget"]) == (method, 20)
    assert len({e["line"] for e in manifest}) == 20


def test_rds_round_robin_picks_the_target_kinds_and_says_which_query_chose_each(select_config):
    result = run(select_config())
    manifest = _lines(result.manifest)
    # two tasks take turns; rev's two queries take turns within it
    assert [e["task"] for e in manifest[:4]] == ["rev", "cnt", "rev", "cnt"]
    assert [e["query"].rsplit(":", 1)[1] for e in manifest[:6:2]] == ["1", "2", "1"]
    assert all(e["model"] and -1 <= e["score"] <= 1 and e["strategy"] == "round_robin" for e in manifest)
    kinds = Counter(row["messages"][0]["content"].split()[0] for row in _lines(result.output))
    assert kinds["uppercase"] < kinds["reverse"] and kinds["uppercase"] < kinds["count"], kinds


def test_same_seed_same_selection_and_output_is_never_overwritten_unasked(select_config, tmp_path):
    first = run(select_config("selection.method=random", "selection.seed=5"))
    manifest = first.manifest.read_text()
    with pytest.raises(LmadaptError, match="already exist"):
        run(select_config("selection.method=random", "selection.seed=6"))
    assert first.manifest.read_text() == manifest
    again = run(select_config("selection.method=random", "selection.seed=5", "overwrite=true"))
    assert again.manifest.read_text() == manifest
    other = run(select_config("selection.method=random", "selection.seed=6", "overwrite=true"))
    assert other.manifest.read_text() != manifest
    rds = [run(select_config("overwrite=true", f"output={tmp_path / f'r{i}.jsonl'}")) for i in range(2)]
    assert rds[0].output.read_text() == rds[1].output.read_text()


def test_top_mean_and_union_fill_the_budget_with_distinct_examples(select_config):
    for strategy in ("top_mean", "union"):
        result = run(
            select_config(
                f"selection.strategy={strategy}",
                "overwrite=true",
                "selection.fraction=0.1",
                "selection.count=null",
            )
        )
        manifest = _lines(result.manifest)
        assert len(manifest) == 12 and len({e["line"] for e in manifest}) == 12
        assert all(e["strategy"] == strategy for e in manifest)
        if strategy == "union":
            assert all(e["retrievals"] >= 1 for e in manifest)


def test_sft_trains_on_the_selected_output(select_config, tmp_path, tiny_llama_dir):
    selected = run(select_config()).output
    cfg = tiny_run_config(SFTConfig, tmp_path, tiny_llama_dir, selected, "train.max_steps=6", "train.lr=3e-3")
    result = sft.run(cfg)
    assert len(logged_losses(result.out_dir)) == 6


def test_cli_bad_query_row_is_one_line_and_exit_code_2(select_config, tmp_path, capsys):
    cfg = select_config()
    Path(cfg.queries[0].path).write_text('{"input": "reverse abc"}\n{"inputs": "x"}\n')
    config = tmp_path / "select.yaml"
    config.write_text(
        f"model: {{path: {cfg.model.path}}}\npool: [{{path: {cfg.pool[0].path}}}]\n"
        f"queries: [{{path: {cfg.queries[0].path}}}]\nselection: {{count: 5}}\n"
        f"output: {tmp_path / 'out.jsonl'}\n"
    )
    assert main(["select", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmadapt: error: {cfg.queries[0].path}:2:") and "\n" not in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("field", ["pool.0.path", "queries.0.path", "model.path"])
def test_a_missing_input_is_named_by_its_field_before_any_work(select_config, tmp_path, field):
    cfg = select_config(f"{field}={tmp_path / 'typo'}")
    with pytest.raises(ConfigError, match=rf"^{field}: no such file or directory: .*typo$"):
        run(cfg)
    assert not (tmp_path / "selected.jsonl").exists() and not (tmp_path / "cache").exists()
