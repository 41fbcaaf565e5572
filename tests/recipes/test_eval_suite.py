from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from recipes.test_evaluate import write_bbh, write_mmlu
from support import byte_llama, save_with_byte_tokenizer

from lmadapt.cli import main
from lmadapt.config import load_config
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval import sources
from lmadapt.eval.suite import SuiteConfig
from lmadapt.recipes import evaluate
from lmadapt.recipes.eval_suite import SETTINGS_FILE, run_suite
from lmadapt.recipes.evaluate import RUNNERS


def write_suite(path: Path, out: Path, models: dict[str, Path], evals: list[dict]) -> Path:
    text = yaml.safe_dump({"out": str(out), "models": {k: str(v) for k, v in models.items()}, "evals": evals})
    path.write_text("# lmadapt eval suite " + str(path) + "\n" + text, encoding="utf-8")
    return path


@pytest.fixture
def two_models(tmp_path: Path) -> dict[str, Path]:
    return {
        "first": save_with_byte_tokenizer(byte_llama(0), tmp_path / "first"),
        "second": save_with_byte_tokenizer(byte_llama(1), tmp_path / "second"),
    }


@pytest.fixture
def suite_evals(tmp_path: Path) -> list[dict]:
    mmlu, bbh = write_mmlu(tmp_path / "mmlu"), write_bbh(tmp_path / "bbh")
    return [
        {"eval": "mmlu", "name": "mmlu-0shot", "args": {"data": str(mmlu), "k": 0}},
        {"eval": "bbh", "args": {"data": str(bbh), "max_new_tokens": 3}},
    ]


def test_suite_runs_every_evaluation_on_every_model_loading_each_once(
    tmp_path: Path, two_models, suite_evals, monkeypatch
) -> None:
    loads = []
    real_load = sources._load
    monkeypatch.setattr(sources, "_load", lambda path: loads.append(path) or real_load(path))
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", two_models, suite_evals)
    cfg = load_config(SuiteConfig, config)

    metrics = run_suite(cfg, RUNNERS)

    assert sorted(loads) == sorted(str(p) for p in two_models.values())
    # Each headline is the number its own evaluation reports when run alone.
    alone = evaluate.run_mmlu(
        suite_evals[0]["args"]["data"], tmp_path / "alone", model=str(two_models["second"]), k=0
    )
    mmlu = metrics["evaluations"]["mmlu-0shot"]
    assert mmlu["scores"]["second"] == alone["overall"]["accuracy_micro"]
    assert mmlu["paper"] == {"setting": "0-shot accuracy", "Tulu 2 7B": 50.4, "Tulu 2+DPO 7B": 50.7}
    own = json.loads((tmp_path / "out/first/bbh/metrics.json").read_text())
    assert metrics["evaluations"]["bbh"]["scores"]["first"] == own["overall"]["exact_match"]
    report = (tmp_path / "out/report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| evaluation"))
    assert header.split(" | ")[2:4] == ["first", "second"] and "Tulu 2 7B (paper)" in header
    assert "| 50.4 | 50.7 | 0-shot accuracy |" in report
    assert (tmp_path / "out/suite.png").stat().st_size > 0
    assert json.loads((tmp_path / "out/metrics.json").read_text()) == metrics


def test_a_second_run_keeps_finished_results_and_runs_only_new_evaluations(
    tmp_path: Path, two_models, suite_evals, monkeypatch
) -> None:
    models = {"first": two_models["first"]}
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", models, suite_evals[:1])
    first = run_suite(load_config(SuiteConfig, config), RUNNERS)

    calls = []

    def counted(run):
        @functools.wraps(run)  # the suite checks arguments against the signature
        def counted_run(**kwargs):
            calls.append(kwargs["out"])
            return run(**kwargs)

        return counted_run

    runners = {name: counted(run) for name, run in RUNNERS.items()}
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", models, suite_evals)
    second = run_suite(load_config(SuiteConfig, config), runners)
    assert calls == [tmp_path / "out/first/bbh"]
    assert second["evaluations"]["mmlu-0shot"]["scores"] == first["evaluations"]["mmlu-0shot"]["scores"]

    # Other settings for a finished evaluation: refused before anything runs, unless overwrite.
    suite_evals[0]["args"]["k"] = 1
    cfg = load_config(SuiteConfig, write_suite(tmp_path / "s.yaml", tmp_path / "out", models, suite_evals))
    calls.clear()
    with pytest.raises(LmadaptError, match="other settings"):
        run_suite(cfg, runners)
    assert calls == []
    run_suite(cfg, runners, overwrite=True)
    assert len(calls) == 2
    settings = json.loads((tmp_path / "out/first/mmlu-0shot" / SETTINGS_FILE).read_text())
    assert settings["args"]["k"] == 1


def test_a_failed_evaluation_is_reported_and_the_others_run(tmp_path: Path, two_models, suite_evals, capsys):
    (tmp_path / "empty").mkdir()
    suite_evals.append({"eval": "bbh", "name": "broken", "args": {"data": str(tmp_path / "empty")}})
    models = {"first": two_models["first"]}
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", models, suite_evals)

    assert main(["eval", "suite", str(config)]) == 2
    err = capsys.readouterr().err
    assert "1 evaluation(s) failed (broken on first)" in err
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert set(metrics["evaluations"]["bbh"]["scores"]) == {"first"}
    assert metrics["evaluations"]["broken"]["errors"]["first"]
    assert "| broken | exact match ↑ | failed |" in (tmp_path / "out/report.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e[0].update(eval="mmmlu"), "evals.0.eval: unknown evaluation 'mmmlu'; did you mean"),
        (lambda e: e[0]["args"].update(kk=1), "evals.0.args.kk: not a setting of `eval mmlu`"),
        (lambda e: e[0]["args"].update(out="x"), "evals.0.args.out: the suite sets it"),
        (lambda e: e[1]["args"].pop("data"), "evals.1.args: `eval bbh` needs data"),
        (lambda e: e[1].update(name="mmlu-0shot"), "a second evaluation labelled 'mmlu-0shot'"),
        (lambda e: e[1].update(name="../up"), "evals.1.name '../up' must be a plain directory name"),
    ],
)
def test_suite_mistakes_are_named_before_anything_runs(tmp_path: Path, suite_evals, change, message) -> None:
    change(suite_evals)
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", {"m": tmp_path / "no-model"}, suite_evals)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_suite(load_config(SuiteConfig, config), RUNNERS)
    assert not (tmp_path / "out").exists()


def test_missing_models_and_data_are_named_before_anything_runs(tmp_path: Path, two_models, suite_evals):
    models = {"first": two_models["first"], "typo": tmp_path / "secnod"}
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", models, suite_evals)
    with pytest.raises(ConfigError, match=r"models\.typo: no such model directory: .*secnod"):
        run_suite(load_config(SuiteConfig, config), RUNNERS)
    suite_evals[1]["args"]["data"] = str(tmp_path / "bhh")
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", {"first": two_models["first"]}, suite_evals)
    with pytest.raises(ConfigError, match=r"evals\.1\.args\.data: no such file or directory: .*bhh"):
        run_suite(load_config(SuiteConfig, config), RUNNERS)
    assert not (tmp_path / "out").exists()


def test_a_file_missing_inside_a_release_fails_that_evaluation_only(tmp_path: Path, two_models, suite_evals):
    (tmp_path / "tydiqa").mkdir()  # the directory exists, its dev file does not
    suite_evals.insert(0, {"eval": "tydiqa", "args": {"data": str(tmp_path / "tydiqa")}})
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", {"first": two_models["first"]}, suite_evals)
    metrics = run_suite(load_config(SuiteConfig, config), RUNNERS)
    assert "No such file" in metrics["evaluations"]["tydiqa"]["errors"]["first"]
    assert set(metrics["evaluations"]["bbh"]["scores"]) == {"first"}


def test_model_labels_are_plain_directory_names(tmp_path: Path, suite_evals) -> None:
    config = write_suite(tmp_path / "s.yaml", tmp_path / "out", {"..": tmp_path}, suite_evals)
    with pytest.raises(ConfigError, match=r"models label '\.\.'"):
        run_suite(load_config(SuiteConfig, config), RUNNERS)


def test_training_runs_the_suite_at_each_evaluation_on_the_model_it_saves(
    tmp_path: Path, tiny_llama_dir: Path, write_reverse_data, suite_evals
) -> None:
    from support import tiny_run_config

    from lmadapt.config import SFTConfig
    from lmadapt.recipes import sft

    suite = write_suite(tmp_path / "suite.yaml", tmp_path / "unused", {"x": tmp_path / "unused"}, suite_evals)
    data = write_reverse_data(tmp_path / "train.jsonl", 16)
    cfg = tiny_run_config(
        SFTConfig,
        tmp_path,
        tiny_llama_dir,
        data,
        "train.max_steps=4",
        "train.eval_every=2",
        "train.lr=1e-2",
        f"train.eval_suite={suite}",
    )
    out = sft.run(cfg).out_dir

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    suite_rows = [row for row in logged if "suite/mmlu-0shot" in row]
    assert [row["step"] for row in suite_rows] == [2, 4] and all("suite/bbh" in row for row in suite_rows)
    # The last evaluation is what `lmadapt eval` gives the saved model (same weights, same chat template).
    saved = evaluate.run_mmlu(suite_evals[0]["args"]["data"], tmp_path / "saved", model=str(out), k=0)
    assert suite_rows[-1]["suite/mmlu-0shot"] == saved["overall"]["accuracy_micro"]
    step4 = json.loads(
        (out / "eval_suite/step-4/model/mmlu-0shot/predictions.jsonl").read_text().splitlines()[0]
    )
    again = json.loads((tmp_path / "saved/predictions.jsonl").read_text().splitlines()[0])
    assert step4["log_probs"] == again["log_probs"]
    assert not (tmp_path / "unused").exists()


def test_eval_suite_mistakes_stop_training_before_it_starts(
    tmp_path: Path, tiny_llama_dir, write_reverse_data
):
    from support import tiny_run_config

    from lmadapt.config import RewardConfig, SFTConfig
    from lmadapt.recipes import reward, sft

    suite = write_suite(tmp_path / "suite.yaml", tmp_path / "o", {}, [{"eval": "mmlu", "args": {}}])
    data = write_reverse_data(tmp_path / "train.jsonl", 8)
    cfg = tiny_run_config(SFTConfig, tmp_path, tiny_llama_dir, data, f"train.eval_suite={suite}")
    with pytest.raises(ConfigError, match=r"evals\.0\.args: `eval mmlu` needs data"):
        sft.run(cfg)
    assert not (tmp_path / "run").exists()
    cfg = tiny_run_config(RewardConfig, tmp_path, tiny_llama_dir, data, f"train.eval_suite={suite}")
    with pytest.raises(ConfigError, match="only sft and dpo runs take it"):
        reward.run(cfg)
