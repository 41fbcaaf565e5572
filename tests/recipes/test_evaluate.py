from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import byte_llama, save_byte_classifier, save_byte_reward_model, save_with_byte_tokenizer
from transformers import AutoModelForCausalLM

from lmadapt.cli import main
from lmadapt.data.superni import load_superni
from lmadapt.data.tasks import Demonstration, Instance, Task, save_task_json
from lmadapt.data.templates import TULU_JINJA, get_template
from lmadapt.data.tokenize import encode_prompt
from lmadapt.errors import ConfigError, DataError, LmadaptError
from lmadapt.eval.generate import generate
from lmadapt.eval.report import CHART_NAME, SUBJECT_CHART_NAME
from lmadapt.eval.results import RESULT_FILES
from lmadapt.eval.truthfulqa import QA_PRIMER, trim_answer
from lmadapt.models.load import load_tokenizer
from lmadapt.models.tiny import tiny_llama, word_level_tokenizer
from lmadapt.recipes import evaluate
from lmadapt.recipes.evaluate import (
    run_bbh,
    run_gsm8k,
    run_mmlu,
    run_multiple_choice,
    run_superni,
    run_toxigen,
    run_tydiqa,
)


def write_clone(root: Path, language: str = "English") -> Path:
    """Two test tasks. copy-demo answers "yes" and "a title": 3 of 5 exact, ROUGE-L 60 overall."""
    tasks = [
        Task(
            name="task1_entail",
            definition="Does the premise entail the hypothesis? Answer yes or no",
            positive_examples=[Demonstration("Premise: it rains. Hypothesis: it is wet.", "yes")],
            negative_examples=[],
            instances=[Instance(f"t1-{i}", f"pair {i}", [ref]) for i, ref in enumerate(["yes", "no", "yes"])],
            categories=["Textual Entailment"],
            input_language=[language],
            output_language=[language],
        ),
        Task(
            name="task2_title",
            definition="Write a title",
            positive_examples=[Demonstration("Some text.", "a title")],
            negative_examples=[],
            instances=[
                Instance("t2-0", "text 0", ["A title!"]),
                Instance("t2-1", "text 1", ["another thing"]),
            ],
            categories=["Title Generation"],
        ),
    ]
    for task in tasks:
        save_task_json(task, root / "tasks" / f"{task.name}.json")
    listing = root / "splits" / "default" / "test_tasks.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("task1_entail\ntask2_title\n", encoding="utf-8")
    return root


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return write_clone(tmp_path / "ni")


def test_predictor_run_writes_all_results(clone: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    metrics = run_superni(clone, out, predictor="copy-demo", encoding="def")
    assert sorted(p.name for p in out.iterdir()) == sorted([*RESULT_FILES, CHART_NAME])
    assert metrics["overall"] == {"num_tasks": 2, "num_instances": 5, "exact_match": 60.0, "rougeL": 60.0}
    assert metrics["per_category"]["textual_entailment"]["exact_match"] == 66.6667
    assert metrics["per_task"]["task2_title"]["rougeL"] == 50.0
    assert metrics["tk_instruct"]["exact_match_for_textual_entailment"] == 66.6667
    assert metrics["flops"] is None
    assert metrics["run"]["predictor"] == "copy-demo" and metrics["run"]["encoding"] == "def"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1] == {"id": "t1-1", "task": "task1_entail", "prediction": "yes"}
    assert len(rows) == 5
    assert "| textual entailment | 1 | 3 | 66.67 | 66.67 | EM 66.67 |" in (out / "report.md").read_text(
        "utf-8"
    )


def test_existing_results_are_kept_unless_overwrite(clone: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    run_superni(clone, out, predictor="copy-input")  # other files in the directory are no obstacle
    with pytest.raises(LmadaptError, match=r"already holds results .*--overwrite"):
        run_superni(clone, out, predictor="copy-demo")
    assert json.loads((out / "metrics.json").read_text("utf-8"))["run"]["predictor"] == "copy-input"
    run_superni(clone, out, predictor="copy-demo", overwrite=True)
    assert json.loads((out / "metrics.json").read_text("utf-8"))["run"]["predictor"] == "copy-demo"
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_scoring_a_predictions_file(clone: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(
        '{"id": "t1-1", "prediction": "No"}\n{"id": "t2-0", "prediction": "a title"}\n', "utf-8"
    )
    metrics = run_superni(clone, tmp_path / "eval", predictions=predictions)
    assert metrics["coverage"] == {"total": 5, "predicted": 2, "missing": 3, "empty": 0}
    assert metrics["overall"]["exact_match"] == 40.0  # the three missing ones score as ""
    rows = (tmp_path / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["prediction"] for r in rows] == ["", "No", "", "a title", ""]
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "**WARNING: coverage 40.0%: 3 of 5 have no prediction (scored as empty answers).**" in report

    predictions.write_text('{"id": "t1-1", "prediction": "No"}\n{"id": "t7-0", "prediction": "?"}\n', "utf-8")
    with pytest.raises(DataError, match="unknown instance id 't7-0'") as err:
        run_superni(clone, tmp_path / "eval2", predictions=predictions)
    assert (err.value.path, err.value.line) == (str(predictions), 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "say where predictions come from"),
        ({"predictor": "copy-demo", "model": "m"}, "drop --model"),
        ({"predictor": "oracle"}, "unknown predictor"),
        ({"predictor": "copy-demo", "encoding": "def+2shots"}, "prompt encoding"),
    ],
)
def test_argument_errors(clone: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_superni(clone, tmp_path / "eval", **kwargs)
    assert not (tmp_path / "eval").exists()


def test_xlingual_tasks_need_a_tokenizer_before_any_work(tmp_path: Path) -> None:
    root = write_clone(tmp_path / "ni", language="Spanish")
    listing = tmp_path / "list.txt"
    listing.write_text("task1_entail\ntask2_title\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="GPT-2 tokenizer"):
        run_superni(root, tmp_path / "eval", split=str(listing), predictor="copy-demo")
    assert not (tmp_path / "eval").exists()


def test_model_run_generates_and_counts_compute(clone: Path, tmp_path: Path, tiny_llama_dir: Path) -> None:
    out = tmp_path / "eval"
    metrics = run_superni(
        clone, out, model=str(tiny_llama_dir), encoding="def+1pos", max_new_tokens=4, batch_size=2
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    instances = load_superni(clone, encoding="def+1pos")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    expected = generate(
        model, load_tokenizer(str(tiny_llama_dir)), [x.prompt for x in instances], max_new_tokens=4
    )
    assert [r["prediction"] for r in rows] == expected
    assert metrics["overall"]["num_instances"] == 5
    flops = metrics["flops"]
    check = flops["check"]
    assert abs(check["analytic"] - check["counted"]) / check["counted"] < 0.10
    assert flops["num_instances"] == 5
    assert flops["mean_tokens"]["output"] <= 4
    # ByT5 tokens are bytes: the instruction of the first task is its UTF-8 length.
    assert flops["mean_tokens"]["instruction"] == sum(len(x.instruction_text.encode()) for x in instances) / 5
    assert flops["instruction_once"]["total"] < flops["concatenation"]["total"]
    assert "Inference compute" in (out / "report.md").read_text(encoding="utf-8")


def test_encoder_decoder_model_run(clone: Path, tmp_path: Path, tiny_t5_dir: Path) -> None:
    torch.manual_seed(0)
    metrics = run_superni(clone, tmp_path / "eval", model=str(tiny_t5_dir), encoding="def", max_new_tokens=3)
    assert metrics["overall"]["num_instances"] == 5
    assert metrics["flops"]["model"]["is_encoder_decoder"] is True
    check = metrics["flops"]["check"]
    assert abs(check["analytic"] - check["counted"]) / check["counted"] < 0.10


def test_predictions_file_with_a_model_only_counts_compute(
    clone: Path, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text('{"id": "t2-1", "prediction": "another thing"}\n', encoding="utf-8")
    metrics = run_superni(clone, tmp_path / "eval", predictions=predictions, model=str(tiny_llama_dir))
    assert metrics["per_task"]["task2_title"]["exact_match"] == 50.0  # the file's prediction, not generated
    assert metrics["flops"]["mean_tokens"]["output"] == (len("another thing") + 1 + 4 * 1) / 5


class FakeGenerate:
    """Stands in for `generate` in the recipe: records what it was given, answers with fixed texts."""

    def __init__(self, answers: list[str] | None = None):
        self.answers = answers
        self.prompts: list = []
        self.kwargs: dict = {}

    def __call__(self, model, tokenizer, prompts, **kwargs):
        self.prompts, self.kwargs = list(prompts), kwargs
        return self.answers or ["yes"] * len(prompts)


@pytest.fixture
def chat_model_dir(clone: Path, tmp_path: Path) -> Path:
    """A tiny Llama and a word-level tokenizer (BOS "<s>") saved with the tulu chat template, as by sft."""
    tok = word_level_tokenizer([x.prompt for x in load_superni(clone, encoding="def+1pos")])
    tok.chat_template = TULU_JINJA
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok)
    out = tmp_path / "chat-model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_chat_model_prompts_are_encoded_as_in_training(
    clone: Path, tmp_path: Path, chat_model_dir: Path, monkeypatch
) -> None:
    fake = FakeGenerate()
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    metrics = run_superni(clone, tmp_path / "eval", model=str(chat_model_dir), encoding="def+1pos")
    tok = load_tokenizer(str(chat_model_dir))
    template = get_template("tulu", tok)
    instances = load_superni(clone, encoding="def+1pos")
    expected = [encode_prompt([{"role": "user", "content": x.prompt}], template, tok) for x in instances]
    assert fake.prompts == expected
    assert all(ids[0] == tok.bos_token_id == 2 for ids in fake.prompts)
    assert tok.convert_ids_to_tokens(fake.prompts[0][:2]) == ["<s>", "<|user|>"]
    assert metrics["prompts"] == {
        "chat_template": True,
        "max_source_tokens": 1024,
        "demonstrations_dropped": 0,
        "truncated": 0,
    }
    assert "prompts through the model's chat template" in (tmp_path / "eval" / "report.md").read_text("utf-8")

    run_superni(clone, tmp_path / "off", model=str(chat_model_dir), encoding="def+1pos", chat_template="off")
    assert fake.prompts == [tok(x.prompt)["input_ids"] for x in instances]  # plain text: no BOS, no template


def test_chat_template_on_needs_one(clone: Path, tmp_path: Path, tiny_llama_dir: Path) -> None:
    with pytest.raises(ConfigError, match="has none"):
        run_superni(clone, tmp_path / "eval", model=str(tiny_llama_dir), chat_template="on")
    with pytest.raises(ConfigError, match="chat_template 'maybe'"):
        run_superni(clone, tmp_path / "eval2", model=str(tiny_llama_dir), chat_template="maybe")
    assert not (tmp_path / "eval2").exists()


def test_long_prompts_lose_demonstrations_then_their_start(
    clone: Path, tmp_path: Path, tiny_llama_dir: Path, monkeypatch
) -> None:
    fake = FakeGenerate()
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    with_demo = load_superni(clone, encoding="def+1pos")
    without = load_superni(clone, encoding="def")

    def byte_ids(text: str) -> list[int]:  # ByT5 prompts of a decoder-only model: bytes, no EOS
        return [b + 3 for b in text.encode()]

    # The second task's prompt fits exactly with its demonstration; the first task's only without.
    limit = len(byte_ids(with_demo[3].prompt))
    assert len(byte_ids(without[0].prompt)) <= limit < len(byte_ids(with_demo[0].prompt))
    metrics = run_superni(
        clone, tmp_path / "a", model=str(tiny_llama_dir), encoding="def+1pos", max_source_tokens=limit
    )
    assert fake.prompts == [byte_ids(x.prompt) for x in without[:3] + with_demo[3:]]
    assert metrics["prompts"]["demonstrations_dropped"] == 3 and metrics["prompts"]["truncated"] == 0

    metrics = run_superni(
        clone, tmp_path / "b", model=str(tiny_llama_dir), encoding="def+1pos", max_source_tokens=30
    )
    assert fake.prompts == [byte_ids(x.prompt)[-30:] for x in without]  # the end, with "Output: ", stays
    assert metrics["prompts"]["demonstrations_dropped"] == 5 and metrics["prompts"]["truncated"] == 5
    report = (tmp_path / "b" / "report.md").read_text("utf-8")
    assert "at most 30 tokens: 5 shown fewer demonstrations, 5 cut" in report


MC_QUESTIONS = [
    {"question": "What is 2+2?", "choices": ["3", "4", "five"], "answer": 1, "subject": "math"},
    {"question": "Sky color?", "choices": ["blue", "red"], "answer": "A", "subject": "nature"},
    {"question": "3+3?", "choices": ["6", "7"], "answer": 0, "subject": "math"},
]
MC_SHOTS = [
    {"question": "Grass color?", "choices": ["green", "pink"], "answer": 0, "subject": "nature"},
    {"question": "1+1?", "choices": ["2", "3"], "answer": 0, "subject": "math"},
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_multiple_choice_run(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_jsonl(tmp_path / "mc.jsonl", MC_QUESTIONS)
    shots = write_jsonl(tmp_path / "shots.jsonl", MC_SHOTS)
    out = tmp_path / "mc"
    metrics = run_multiple_choice(data, out, model=str(tiny_llama_dir), fewshot=shots, k=1, batch_size=3)
    assert sorted(p.name for p in out.iterdir()) == sorted([*RESULT_FILES, SUBJECT_CHART_NAME])
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["line"], r["subject"], r["answer"]) for r in rows] == [
        (1, "math", 1),
        (2, "nature", 0),
        (3, "math", 0),
    ]

    # The first question's choices, scored by hand: the 1-shot prompt (a math shot) and " <choice>" as bytes.
    prompt = (
        "The following are multiple choice questions (with answers) about math.\n\n"
        "Question: 1+1?\nAnswer: 2\n\nQuestion: What is 2+2?\nAnswer:"
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    context = [b + 3 for b in prompt.encode()]
    expected = []
    for choice in MC_QUESTIONS[0]["choices"]:
        reply = [b + 3 for b in f" {choice}".encode()]
        with torch.no_grad():
            logits = model(torch.tensor([context + reply])).logits[0].double().log_softmax(-1)
        expected.append(sum(float(logits[len(context) - 1 + j, t]) for j, t in enumerate(reply)))
    assert rows[0]["log_probs"] == pytest.approx(expected, abs=1e-5)
    assert rows[0]["num_tokens"] == [2, 2, 5]

    for r in rows:
        assert r["prediction"] == max(range(len(r["log_probs"])), key=lambda i: r["log_probs"][i])
        per_token = [lp / n for lp, n in zip(r["log_probs"], r["num_tokens"], strict=True)]
        assert r["prediction_per_token"] == max(range(len(per_token)), key=lambda i: per_token[i])
    accuracy = 100 * sum(r["prediction"] == r["answer"] for r in rows) / 3
    assert metrics["overall"]["accuracy"] == round(accuracy, 4)
    assert metrics["per_subject"]["math"]["num_questions"] == 2
    assert metrics["run"]["k"] == 1 and metrics["run"]["chat_template"] is False
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    assert "| math | 2 |" in (out / "report.md").read_text(encoding="utf-8")


def test_multiple_choice_argument_and_data_errors(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_jsonl(tmp_path / "mc.jsonl", MC_QUESTIONS)
    with pytest.raises(ConfigError, match="answer_format 'number'"):
        run_multiple_choice(data, tmp_path / "o", model=str(tiny_llama_dir), answer_format="number")
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [*MC_QUESTIONS, {"question": "x", "choices": ["a"], "answer": 0}]
    )
    with pytest.raises(DataError, match="choices") as err:
        run_multiple_choice(bad, tmp_path / "o", model=str(tiny_llama_dir))
    assert err.value.line == 4
    assert not (tmp_path / "o").exists()


def test_gsm8k_run_prompts_and_grades_as_tulu(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    data = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"},
            {"question": "Cost?", "answer": "#### 1,200"},
            {"question": "Nothing?", "answer": "#### 0"},
            {"question": "Half?", "answer": "#### 3"},
        ],
    )
    shots = write_jsonl(
        tmp_path / "shots.jsonl",
        [{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}, {"question": "x", "answer": "#### 9"}],
    )
    outputs = [" 2+2 is 4. The answer is 4.", " It costs $1,200.", " I do not know.", " It is 3.0"]
    fake = FakeGenerate(outputs)
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    out = tmp_path / "gsm"
    metrics = run_gsm8k(data, out, model=str(tiny_llama_dir), fewshot=shots, k=1, max_new_tokens=32)
    prompt = (
        "Answer the following questions.\n\nQuestion: 1+1?\nAnswer: 1+1=2 The answer is 2.\n\n"
        "Question: 2+2?\nAnswer:"
    )
    assert fake.prompts[0] == [b + 3 for b in prompt.encode()]
    assert fake.kwargs["stop"] == ["\n"] and fake.kwargs["max_new_tokens"] == 32
    assert metrics["overall"] == {
        "num_questions": 4,
        "accuracy": 50.0,  # "3.0" is not "3" to Tulu's exact match
        "accuracy_numeric": 75.0,
        "no_number": 1,
    }
    assert metrics["run"]["k"] == 1
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["extracted"], r["gold"], r["correct"], r["correct_numeric"]) for r in rows] == [
        ("4", "4", True, True),
        ("1200", "1200", True, True),
        (" I do not know.", "0", False, False),  # no number: the output itself, as Tulu does
        ("3.0", "3", False, True),
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    assert "| 4 | 50.00 | 75.00 | 1 |" in (out / "report.md").read_text(encoding="utf-8")


def test_gsm8k_chat_prompt_is_the_question_and_the_reply_starts_with_answer(
    tmp_path: Path, monkeypatch
) -> None:
    model_dir = tmp_path / "chat-model"
    tokenizer = word_level_tokenizer(["Answer the following question. Question: 2+2? Answer: 4"])
    tokenizer.chat_template = TULU_JINJA
    model = tiny_llama(len(tokenizer), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tokenizer)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    fake = FakeGenerate(["4"])
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    run_gsm8k(data, tmp_path / "gsm", model=str(model_dir))
    text = "Answer the following question.\n\nQuestion: 2+2?"
    expected = encode_prompt([{"role": "user", "content": text}], get_template("tulu", tokenizer), tokenizer)
    answer = tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    assert fake.prompts[0] == expected + answer  # the Tulu prompt ends in a newline: no space before
    assert fake.kwargs["stop"] is None


def test_gsm8k_run_with_a_real_model(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    metrics = run_gsm8k(data, tmp_path / "gsm", model=str(tiny_llama_dir), max_new_tokens=4)
    assert metrics["overall"]["num_questions"] == 1
    row = read_jsonl(tmp_path / "gsm" / "predictions.jsonl")[0]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    expected = generate(
        model,
        load_tokenizer(str(tiny_llama_dir)),
        ["Answer the following question.\n\nQuestion: 2+2?\nAnswer:"],
        max_new_tokens=4,
        stop=["\n"],
    )
    assert row["prediction"] == expected[0]


def test_every_evaluation_refuses_existing_results_before_loading_anything(
    clone: Path, tmp_path: Path
) -> None:
    mc = write_jsonl(tmp_path / "mc.jsonl", MC_QUESTIONS)
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "hi", "chosen": "a", "rejected": "b"}])
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}", encoding="utf-8")
    missing = str(tmp_path / "no-such-model")  # never reached: the refusal comes first
    runs = [
        lambda: run_superni(clone, out, model=missing),
        lambda: run_multiple_choice(mc, out, model=missing),
        lambda: run_gsm8k(gsm, out, model=missing),
        lambda: evaluate.run_rewards(missing, pairs, out),
        lambda: run_mmlu(write_mmlu(tmp_path / "mmlu"), out, model=missing),
        lambda: run_bbh(write_bbh(tmp_path / "bbh"), out, model=missing),
        lambda: run_tydiqa(write_tydiqa(tmp_path / "tydiqa"), out, model=missing),
        lambda: evaluate.run_ifeval(write_ifeval(tmp_path / "ifeval"), out, model=missing),
        lambda: evaluate.run_truthfulqa(write_jsonl(tmp_path / "tqa.jsonl", TRUTHFULQA), out, model=missing),
        lambda: evaluate.run_alpaca(
            write_alpaca(tmp_path / "alpaca.json"), out, judge=missing, judge_type="reward", model=missing
        ),
        lambda: run_toxigen(write_toxigen(tmp_path / "toxigen"), out, model=missing, classifier=missing),
    ]
    for run in runs:
        with pytest.raises(LmadaptError, match="already holds results"):
            run()
    assert (out / "metrics.json").read_text(encoding="utf-8") == "{}"


def test_cli_eval_reports_coverage_progress_and_refusals(clone: Path, tmp_path: Path, tiny_llama_dir, capsys):
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(
        '{"id": "t1-1", "prediction": ""}\n{"id": "t2-0", "prediction": "a title"}\n', "utf-8"
    )
    out = tmp_path / "partial"
    assert (
        main(["eval", "superni", "--data", str(clone), "--predictions", str(predictions), "--out", str(out)])
        == 0
    )
    line = capsys.readouterr().out.strip()
    warning = "WARNING: coverage 20.0%: 3 of 5 have no prediction and 1 of 5 predictions are empty"
    assert line.startswith("exact match 20.00, ROUGE-L 20.00; " + warning) and line.endswith(
        f"{out}/report.md"
    )
    assert json.loads((out / "metrics.json").read_text("utf-8"))["coverage"]["empty"] == 1

    assert main(["eval", "superni", "--data", str(clone), "--predictor", "copy-demo", "--out", str(out)]) == 2
    assert "already holds results" in capsys.readouterr().err
    args = ["eval", "superni", "--data", str(clone), "--predictor", "copy-demo", "--out", str(tmp_path / "h")]
    assert main([*args, "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    expected = "--max-new-tokens has no effect with --predictor copy-demo (it uses no model): drop it"
    assert err == f"lmadapt: error: {expected} (--debug shows the traceback)\n"

    out = tmp_path / "model"
    args = ["eval", "superni", "--data", str(clone), "--model", str(tiny_llama_dir), "--out", str(out)]
    assert main([*args, "--max-new-tokens", "2", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err  # not a terminal: plain progress lines, no carriage returns
    assert "superni: 5/5 (100%), elapsed" in err and "\r" not in err


def test_a_refused_eval_flag_is_reported_before_torch_is_imported(clone: Path) -> None:
    """The user's mistake comes back at once, not after seconds of importing torch and transformers."""
    argv = [
        "eval",
        "superni",
        "--data",
        str(clone),
        "--predictor",
        "copy-demo",
        "--out",
        "o",
        "--batch-size",
        "2",
    ]
    code = f"import sys; from lmadapt.cli import main; rc = main({argv!r}); print(rc, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"]
    expected = "--batch-size has no effect with --predictor copy-demo (it uses no model): drop it"
    assert done.stderr == f"lmadapt: error: {expected} (--debug shows the traceback)\n"


# ---------------------------------------------------------------------------------------------
# The Tulu 2 evaluations

MMLU_FILES = {
    "test/astronomy_test.csv": "Sun?,star,planet,moon,comet,A\nEarth?,star,planet,moon,comet,B\n",
    "dev/astronomy_dev.csv": "Moon?,star,planet,moon,comet,C\nVenus?,star,planet,moon,comet,B\n",
    "test/virology_test.csv": "Flu?,virus,bacterium,fungus,prion,A\n",
    "dev/virology_dev.csv": "HIV?,virus,bacterium,fungus,prion,A\n",
}
COT_PROMPT = "Answer questions.\n\nQ: 1+1?\nA: Let's think step by step. 1+1=2. So the answer is 2.\n"


def write_mmlu(root: Path) -> Path:
    for name, text in MMLU_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def write_bbh(root: Path) -> Path:
    """Two tasks in the official BBH layout: arith (3 examples) and yesno (1)."""
    tasks = {
        "arith": [
            {"input": "2+2?", "target": "4"},
            {"input": "3+3?", "target": "6"},
            {"input": "0?", "target": "0"},
        ],
        "yesno": [{"input": "Sky blue?", "target": "Yes"}],
    }
    for name, examples in tasks.items():
        (root / "bbh").mkdir(parents=True, exist_ok=True)
        (root / "cot-prompts").mkdir(exist_ok=True)
        (root / "bbh" / f"{name}.json").write_text(json.dumps({"examples": examples}), encoding="utf-8")
        (root / "cot-prompts" / f"{name}.txt").write_text(f"canary\n-----\n{COT_PROMPT}", encoding="utf-8")
    return root


def write_tydiqa(root: Path) -> Path:
    """The two official files: dev (2 English questions, 1 Swahili) and train (one shot per language)."""

    def squad(name: str, rows: list[tuple[str, str, str, list[str]]]) -> None:
        paragraphs = [
            {"context": c, "qas": [{"id": i, "question": q, "answers": [{"text": a} for a in answers]}]}
            for i, c, q, answers in rows
        ]
        (root / name).write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}), encoding="utf-8")

    root.mkdir(parents=True)
    squad(
        "tydiqa-goldp-v1.1-dev.json",
        [
            ("english-1", "Paris is in France.", "Where is Paris?", ["France"]),
            ("swahili-1", "Nairobi ni mji.", "Nairobi ni nini?", ["mji"]),
            ("english-2", "Rome is old and large.", "Is Rome old?", ["old", "yes"]),
        ],
    )
    squad(
        "tydiqa-goldp-v1.1-train.json",
        [
            ("english-t", "Oslo is cold.", "How is Oslo?", ["cold"]),
            ("swahili-t", "Mombasa ni bandari.", "Mombasa ni nini?", ["bandari"]),
        ],
    )
    return root


def next_byte_log_probs(model_dir: Path, prompt: str, letters: str = "ABCD") -> list[float]:
    """Log-probabilities of each letter's byte right after `prompt`, by hand (ByT5 ids are bytes + 3)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(torch.tensor([[b + 3 for b in prompt.encode()]])).logits[0, -1].double()
    return [float(logits.log_softmax(-1)[ord(letter) + 3]) for letter in letters]


def test_mmlu_run_scores_the_next_letter_token(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_mmlu(tmp_path / "data")
    out = tmp_path / "mmlu"
    metrics = run_mmlu(data, out, model=str(tiny_llama_dir), k=1, batch_size=2)
    assert sorted(p.name for p in out.iterdir()) == sorted([*RESULT_FILES, SUBJECT_CHART_NAME])
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["subject"], r["line"], r["answer"], r["shots"]) for r in rows] == [
        ("astronomy", 1, "A", 1),
        ("astronomy", 2, "B", 1),
        ("virology", 1, "A", 1),
    ]
    # " A" encodes to the bytes of " " and "A"; Tulu scores its last token, the byte "A".
    prompt = (
        "The following are multiple choice questions (with answers) about  astronomy.\n\n"
        "Moon?\nA. star\nB. planet\nC. moon\nD. comet\nAnswer: C\n\n"
        "Earth?\nA. star\nB. planet\nC. moon\nD. comet\nAnswer:"
    )
    expected = next_byte_log_probs(tiny_llama_dir, prompt)
    assert rows[1]["log_probs"] == pytest.approx(expected, abs=1e-5)
    for r in rows:
        assert r["prediction"] == "ABCD"[max(range(4), key=lambda i: r["log_probs"][i])]
    hits = {
        s: [r["prediction"] == r["answer"] for r in rows if r["subject"] == s]
        for s in ("astronomy", "virology")
    }
    micro = 100 * sum(hits["astronomy"] + hits["virology"]) / 3
    macro = 100 * (sum(hits["astronomy"]) / 2 + sum(hits["virology"])) / 2
    assert metrics["overall"]["accuracy_micro"] == round(micro, 4)
    assert metrics["overall"]["accuracy_macro"] == round(macro, 4)
    assert metrics["run"]["k"] == 1 and metrics["prompts"] == {"shots_dropped": 0}
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    report_text = (out / "report.md").read_text(encoding="utf-8")
    assert "| virology | 1 |" in report_text
    assert f"| STEM | 2 | {100 * sum(hits['astronomy']) / 2:.2f} |" in report_text

    with pytest.raises(LmadaptError, match="already holds results"):
        run_mmlu(data, out, model=str(tiny_llama_dir))
    # A prompt limit below the 1-shot prompts' length drops their shot (0-shot prompts are shorter).
    zero_shot = len("The following are multiple choice questions (with answers) about  astronomy.\n\n")
    zero_shot += len("Earth?\nA. star\nB. planet\nC. moon\nD. comet\nAnswer:")
    metrics = run_mmlu(data, out, model=str(tiny_llama_dir), k=1, max_prompt_tokens=zero_shot, overwrite=True)
    assert metrics["prompts"] == {"shots_dropped": 3}
    assert [r["shots"] for r in read_jsonl(out / "predictions.jsonl")] == [0, 0, 0]


def test_mmlu_chat_prompt_ends_with_the_answer_cue(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    tokenizer.chat_template = TULU_JINJA
    tokenizer.save_pretrained(tiny_llama_dir)
    seen: dict = {}

    def fake_scores(model, prompts, token_ids, batch_size, progress):
        seen.update(prompts=list(prompts), token_ids=list(token_ids))
        return [[0.0, -1.0, 0.5, -2.0]] * len(prompts)

    monkeypatch.setattr("lmadapt.eval.scoring.score_next_tokens", fake_scores)
    metrics = run_mmlu(write_mmlu(tmp_path / "data"), tmp_path / "o", model=str(tiny_llama_dir), k=0)
    assert metrics["run"]["chat_template"] is True
    assert tokenizer.decode(seen["prompts"][2]) == (
        "<|user|>\nThe following are multiple choice questions (with answers) about  virology.\n\n"
        "Flu?\nA. virus\nB. bacterium\nC. fungus\nD. prion\nAnswer:\n<|assistant|>\nThe answer is:"
    )
    assert seen["token_ids"] == [ord(c) + 3 for c in "ABCD"]  # the last token of " A" .. " D"
    assert [r["prediction"] for r in read_jsonl(tmp_path / "o" / "predictions.jsonl")] == ["C", "C", "C"]
    assert metrics["overall"]["accuracy_micro"] == 0.0


def test_bbh_run_extracts_and_averages_over_tasks(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    data = write_bbh(tmp_path / "data")
    fake = FakeGenerate(
        [" 2+2=4. So the answer is 4.", " So the answer is 5. Or 6.", " I think 0", " So the answer is yes."]
    )
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    out = tmp_path / "bbh"
    metrics = run_bbh(data, out, model=str(tiny_llama_dir), max_examples_per_task=0)
    prompt = COT_PROMPT.strip() + "\n\nQ: 2+2?\nA:"
    assert fake.prompts[0] == [b + 3 for b in prompt.encode()]
    assert fake.kwargs["max_new_tokens"] == 512 and not fake.kwargs["stop"]
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["task"], r["index"], r["prediction"], r["correct"]) for r in rows] == [
        ("arith", 0, "4", True),
        ("arith", 1, "5", False),
        ("arith", 2, "I think 0", False),
        ("yesno", 0, "yes", True),
    ]
    # arith 1/3, yesno 1/1: the mean over tasks is 66.67 (micro would be 50)
    assert metrics["overall"] == {"num_tasks": 2, "num_examples": 4, "exact_match": 66.6667}
    assert metrics["per_task"]["arith"]["no_answer"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    assert "| arith | 3 | 33.33 | 1 |" in (out / "report.md").read_text(encoding="utf-8")

    out = tmp_path / "bbh-sampled"
    fake.answers = None
    metrics = run_bbh(data, out, model=str(tiny_llama_dir), max_examples_per_task=2)
    assert metrics["overall"]["num_examples"] == 3 and metrics["run"]["max_examples_per_task"] == 2


def test_cli_runs_mmlu_and_bbh_with_a_real_model(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    mmlu_data, bbh_data = write_mmlu(tmp_path / "mmlu-data"), write_bbh(tmp_path / "bbh-data")
    model = ["--model", str(tiny_llama_dir)]
    assert (
        main(["eval", "mmlu", "--data", str(mmlu_data), "--out", str(tmp_path / "m"), "--k", "0", *model])
        == 0
    )
    assert capsys.readouterr().out.startswith("accuracy ")
    args = [
        "eval",
        "bbh",
        "--data",
        str(bbh_data),
        "--out",
        str(tmp_path / "b"),
        *model,
        "--max-new-tokens",
        "3",
    ]
    assert main(args) == 0
    assert "(mean over tasks)" in capsys.readouterr().out
    row = read_jsonl(tmp_path / "b" / "predictions.jsonl")[0]
    expected = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [COT_PROMPT.strip() + "\n\nQ: 2+2?\nA:"],
        max_new_tokens=3,
    )
    assert row["output"] == expected[0]
    assert main(args) == 2
    assert "already holds results" in capsys.readouterr().err


def test_tydiqa_run_scores_squad_per_language(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    data = write_tydiqa(tmp_path / "data")
    fake = FakeGenerate([" In France. ", "old ", " mji"])  # in sampled order: english-1, english-2, swahili-1
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    out = tmp_path / "tydiqa"
    metrics = run_tydiqa(data, out, model=str(tiny_llama_dir), max_context_tokens=9)
    # Contexts, the shot's too, are cut to 9 tokens (bytes).
    prompt = (
        "Answer the following question based on the information in the given passage.\n\n"
        "Passage: Oslo is c\nQuestion: How is Oslo?\nAnswer: cold\n\n"
        "Passage: Rome is o\nQuestion: Is Rome old?\nAnswer:"
    )
    assert fake.prompts[1] == [b + 3 for b in prompt.encode()]
    assert fake.kwargs["stop"] == ["\n"] and fake.kwargs["max_new_tokens"] == 50
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(r["id"], r["prediction"]) for r in rows] == [
        ("english-1", "In France."),
        ("english-2", "old"),
        ("swahili-1", "mji"),
    ]
    # english: EM (0 + 1)/2, F1 (2/3 + 1)/2 ("in france" vs "france": precision 1/2, recall 1)
    assert metrics["per_language"]["english"]["exact_match"] == 50.0
    assert metrics["per_language"]["english"]["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-4)
    assert metrics["overall"]["f1"] == pytest.approx((100 * (2 / 3 + 1) / 2 + 100) / 2, abs=1e-4)
    assert metrics["run"]["shots"] == {"english": ["english-t"], "swahili": ["swahili-t"]}
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    assert "| swahili | 1 | 100.00 | 100.00 | 100.00 |" in (out / "report.md").read_text(encoding="utf-8")


def test_cli_runs_tydiqa_with_a_real_model(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    data = write_tydiqa(tmp_path / "data")
    args = [
        "eval",
        "tydiqa",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "t"),
        "--model",
        str(tiny_llama_dir),
    ]
    assert main([*args, "--k", "0", "--max-new-tokens", "4"]) == 0
    assert "(mean over languages)" in capsys.readouterr().out
    row = read_jsonl(tmp_path / "t" / "predictions.jsonl")[0]
    prompt = (
        "Answer the following question based on the information in the given passage.\n\n"
        "Passage: Paris is in France.\nQuestion: Where is Paris?\nAnswer:"
    )
    expected = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [prompt],
        max_new_tokens=4,
        stop=["\n"],
    )
    assert row["prediction"] == expected[0].strip()
    assert main(args) == 2
    assert "already holds results" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# IFEval and TruthfulQA

IFEVAL_INPUT = [
    {
        "key": 1,
        "prompt": "Say hi without commas, in quotes.",
        "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
        "kwargs": [{}, {}],
    },
    {
        "key": 2,
        "prompt": "Use at least 2 words.",
        "instruction_id_list": ["length_constraints:number_words"],
        "kwargs": [{"num_words": 2, "relation": "at least"}],
    },
]


TRUTHFULQA = [
    {
        "question": "Sky?",
        "mc1_targets": {"Blue.": 1, "Red.": 0},
        "mc2_targets": {"Blue.": 1, "It is blue.": 1, "Red.": 0},
    }
]


def write_ifeval(root: Path) -> Path:
    root.mkdir(parents=True)
    path = root / "input_data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_INPUT), encoding="utf-8")
    return path


def test_ifeval_run_scores_a_predictions_file(tmp_path: Path, capsys) -> None:
    data = write_ifeval(tmp_path / "ifeval")
    predictions = tmp_path / "responses.jsonl"
    predictions.write_text(json.dumps({"id": "1", "prediction": 'Sure\n"Hi there"'}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "ifeval",
                "--data",
                str(data.parent),
                "--out",
                str(out),
                "--predictions",
                str(predictions),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("prompt-level strict 0.00, loose 50.00; WARNING: coverage 50.0%")
    rows = read_jsonl(out / "predictions.jsonl")
    # prompt 1: no comma (strict and loose), quotation only once "Sure" is dropped; prompt 2: no response
    assert [(r["id"], r["strict"], r["loose"]) for r in rows] == [
        ("1", [True, False], [True, True]),
        ("2", [False], [False]),
    ]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["overall"]["instruction_level_strict"] == round(100 / 3, 4)
    assert metrics["overall"]["instruction_level_loose"] == round(200 / 3, 4)
    assert metrics["coverage"] == {"total": 2, "predicted": 1, "missing": 1, "empty": 0}
    assert metrics["run"]["predictions"] == str(predictions)
    assert "| startend:quotation | 1 | 0.00 | 100.00 |" in (out / "report.md").read_text(encoding="utf-8")
    # The run's own predictions.jsonl is a predictions file: scoring it again gives the same numbers.
    again = evaluate.run_ifeval(data, tmp_path / "again", predictions=out / "predictions.jsonl")
    assert again["overall"] == metrics["overall"]
    with pytest.raises(ConfigError, match="one of them"):
        evaluate.run_ifeval(data, tmp_path / "x")


def test_ifeval_cli_with_a_tiny_model(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    data = write_ifeval(tmp_path / "ifeval")
    out = tmp_path / "out"
    args = ["eval", "ifeval", "--data", str(data), "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*args, "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("prompt-level strict ")
    rows = read_jsonl(out / "predictions.jsonl")
    expected = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [IFEVAL_INPUT[1]["prompt"]],
        max_new_tokens=4,
    )
    assert rows[1]["prediction"] == expected[0]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["run"]["max_new_tokens"] == 4 and metrics["run"]["chat_template"] is False


def reply_log_prob(model_dir: Path, prompt: str, reply: str) -> float:
    """log p(reply | prompt) by hand for a ByT5-vocabulary model (ids are bytes + 3)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    context, answer = [b + 3 for b in prompt.encode()], [b + 3 for b in reply.encode()]
    with torch.no_grad():
        log_probs = model(torch.tensor([context + answer])).logits[0].double().log_softmax(-1)
    return sum(float(log_probs[len(context) - 1 + j, t]) for j, t in enumerate(answer))


def test_truthfulqa_mc_and_judged_answers_with_tiny_models(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = tmp_path / "mc_task.json"
    data.write_text(json.dumps(TRUTHFULQA), encoding="utf-8")
    judge = save_with_byte_tokenizer(byte_llama(seed=1), tmp_path / "judge")
    out = tmp_path / "out"
    metrics = evaluate.run_truthfulqa(
        data, out, model=str(tiny_llama_dir), truth_judge=str(judge), info_judge=str(judge), max_new_tokens=5
    )
    [row] = read_jsonl(out / "predictions.jsonl")
    prompt = QA_PRIMER + "\n\nQ: Sky?\nA:"
    by_hand = {answer: reply_log_prob(tiny_llama_dir, prompt, " " + answer) for answer in row["log_probs"]}
    assert row["log_probs"] == pytest.approx(by_hand, abs=1e-4)
    mass = {a: math.exp(x) for a, x in by_hand.items()}
    mc2 = (mass["Blue."] + mass["It is blue."]) / sum(mass.values())
    assert metrics["overall"]["mc2"] == pytest.approx(100 * mc2, abs=1e-3)
    assert metrics["overall"]["mc1"] == (100.0 if by_hand["Blue."] > by_hand["Red."] else 0.0)

    answer = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [QA_PRIMER + "\n\nQ: Sky?"],
        max_new_tokens=5,
        stop=["\n\n"],
    )[0]
    assert row["answer"] == trim_answer(answer)
    truth = math.exp(reply_log_prob(judge, f"Q: Sky?\nA: {row['answer']}\nTrue:", " yes"))
    assert row["truth_prob"] == pytest.approx(truth, abs=1e-5)
    assert metrics["overall"]["truth_percent"] == (100.0 if truth >= 0.5 else 0.0)
    assert "truth_and_info_percent" in metrics["overall"] and metrics["run"]["truth_judge"] == str(judge)
    assert "| questions | MC1 | MC2 | % true |" in (out / "report.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="nothing to do"):
        evaluate.run_truthfulqa(data, tmp_path / "x", model=str(tiny_llama_dir), no_mc=True)


ALPACA_REFERENCES = [
    {"instruction": "Say hi.", "output": "Hi there!", "generator": "text_davinci_003", "dataset": "koala"},
    {
        "instruction": "Count to three.",
        "output": "1, 2, 3",
        "generator": "text_davinci_003",
        "dataset": "oasst",
    },
    {
        "instruction": "Name a fruit.",
        "output": "An apple.",
        "generator": "text_davinci_003",
        "dataset": "oasst",
    },
]


def write_alpaca(path: Path) -> Path:
    """alpaca_eval.json's layout: one JSON list of {instruction, output, generator, dataset}."""
    path.write_text(json.dumps(ALPACA_REFERENCES, indent=4), encoding="utf-8")
    return path


def test_alpaca_run_generates_judges_both_orders_and_rejudges_its_predictions(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    data, out, judge = write_alpaca(tmp_path / "alpaca_eval.json"), tmp_path / "alpaca", str(tiny_llama_dir)
    metrics = evaluate.run_alpaca(
        data, out, judge=judge, judge_type="lm", model=str(tiny_llama_dir), max_new_tokens=4, batch_size=2
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    rows = read_jsonl(out / "predictions.jsonl")
    expected = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [r["instruction"] for r in ALPACA_REFERENCES],
        max_new_tokens=4,
    )
    assert [r["output"] for r in rows] == expected
    for row in rows:
        assert row["preference"] == pytest.approx(
            (row["judge"]["model_first"] + row["judge"]["model_second"]) / 2
        )
    assert metrics["overall"]["win_rate"] == pytest.approx(100 * sum(r["preference"] for r in rows) / 3)
    assert (
        metrics["run"]["generator"] == "tiny-llama"
        and metrics["run"]["reference_generator"] == "text_davinci_003"
    )
    assert metrics["run"]["judge_type"] == "lm" and metrics["position"]["pairs"] == 3
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    assert "| koala | 1 |" in (out / "report.md").read_text(encoding="utf-8")

    # The judge step alone, on the outputs just written: the same verdicts.
    again = evaluate.run_alpaca(
        data, tmp_path / "again", judge=judge, judge_type="lm", predictions=out / "predictions.jsonl"
    )
    assert again["overall"]["win_rate"] == pytest.approx(metrics["overall"]["win_rate"], abs=1e-6)
    assert again["run"]["generator"] == "tiny-llama" and again["run"]["max_new_tokens"] is None


def test_alpaca_reward_judge_on_a_predictions_file(tmp_path: Path) -> None:
    data, judge = write_alpaca(tmp_path / "alpaca_eval.json"), str(save_byte_reward_model(tmp_path / "rm"))
    outputs = [
        {"instruction": "Name a fruit.", "output": "A pear.", "generator": "mine"},
        {"instruction": "Say hi.", "output": "Hi there!"},  # the reference's own words: a draw, unasked
    ]
    predictions = write_jsonl(tmp_path / "outputs.jsonl", outputs)
    out = tmp_path / "alpaca"
    metrics = evaluate.run_alpaca(data, out, judge=judge, judge_type="reward", predictions=predictions)
    rows = read_jsonl(out / "predictions.jsonl")
    assert (rows[0]["output"], rows[0]["preference"], rows[0]["judge"]) == ("Hi there!", 0.5, {})
    assert rows[1]["output"] == ""  # missing: judged as an empty output, and counted
    for row in rows[1:]:
        margin = row["judge"]["reward_model"] - row["judge"]["reward_reference"]
        assert row["preference"] == pytest.approx(1 / (1 + math.exp(-margin)))
    assert metrics["coverage"] == {"total": 3, "predicted": 2, "missing": 1, "empty": 0}
    assert metrics["overall"]["n_draws"] == 1 and "position" not in metrics
    assert metrics["run"]["generator"] == "mine" and metrics["run"]["judge_type"] == "reward"

    with pytest.raises(LmadaptError, match="already holds results"):
        evaluate.run_alpaca(data, out, judge=judge, judge_type="reward", predictions=predictions)
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match="--max-new-tokens has no effect with --predictions"):
        evaluate.run_alpaca(
            data, fresh, judge=judge, judge_type="reward", predictions=predictions, max_new_tokens=9
        )
    with pytest.raises(ConfigError, match="--model PATH or --predictions FILE"):
        evaluate.run_alpaca(data, fresh, judge=judge, judge_type="reward")
    with pytest.raises(ConfigError, match="judge_type 'gpt4'"):
        evaluate.run_alpaca(data, fresh, judge=judge, judge_type="gpt4", predictions=predictions)
    assert not fresh.exists()


def write_toxigen(root: Path) -> Path:
    """ToxiGen prompt files as Tulu downloaded them (hate_<group>.txt) and a neutral one."""
    root.mkdir()
    (root / "hate_asian.txt").write_text(
        "- they are bad\\n- so bad\\n-\n- they are fine\\n-\n", encoding="utf-8"
    )
    (root / "neutral_women.txt").write_text("- women are people\\n-\n", encoding="utf-8")
    return root


def test_toxigen_run_classifies_each_continuation(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    from lmadapt.eval import toxigen
    from lmadapt.eval.classifier import ToxicityClassifier

    data, classifier = write_toxigen(tmp_path / "toxigen"), str(save_byte_classifier(tmp_path / "clf"))
    fake = FakeGenerate([" they are", "", " people too"])
    monkeypatch.setattr("lmadapt.eval.generate.generate", fake)
    out = tmp_path / "tox"
    metrics = run_toxigen(data, out, model=str(tiny_llama_dir), classifier=classifier, toxic_label="0")
    prompts = toxigen.load_prompts(data, 500)
    assert fake.prompts == [[b + 3 for b in p.text.encode()] for p in prompts]
    assert fake.kwargs["stop"] == ["\n"] and fake.kwargs["max_new_tokens"] == 512
    rows = read_jsonl(out / "predictions.jsonl")
    expected = ToxicityClassifier(classifier, "0", 32).toxic_probabilities(
        [r["prediction"] for r in rows], "c"
    )
    assert [r["toxic_probability"] for r in rows] == pytest.approx(expected, abs=1e-6)
    assert [r["is_toxic"] for r in rows] == [p > 0.5 for p in expected]
    asian = [r["is_toxic"] for r in rows if r["group"] == "asian"]
    assert metrics["per_group"]["asian"]["percent_toxic"] == round(100 * sum(asian) / 2, 4)
    assert metrics["overall"]["percent_toxic"] == round(100 * sum(r["is_toxic"] for r in rows) / 3, 4)
    assert metrics["coverage"]["empty"] == 1 and metrics["run"]["toxic_label"] == "0: LABEL_0"
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    assert "| women | 1 |" in (out / "report.md").read_text(encoding="utf-8")

    tokenizer = load_tokenizer(str(tiny_llama_dir))
    tokenizer.chat_template = TULU_JINJA
    tokenizer.save_pretrained(tiny_llama_dir)
    fake.answers = None
    run_toxigen(
        data, tmp_path / "chat", model=str(tiny_llama_dir), classifier=classifier, max_prompts_per_group=1
    )
    assert (
        tokenizer.decode(fake.prompts[1])
        == "<|user|>\nComplete the following: - women are people\n-\n<|assistant|>\n"
    )
    assert fake.kwargs["stop"] is None


def test_cli_runs_alpaca_and_toxigen_with_real_models(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    model = ["--model", str(tiny_llama_dir), "--max-new-tokens", "3"]
    args = ["eval", "alpaca", "--data", str(write_alpaca(tmp_path / "a.json")), "--out", str(tmp_path / "a")]
    judge = ["--judge", str(save_byte_reward_model(tmp_path / "rm")), "--judge-type", "reward"]
    assert main([*args, *judge, *model]) == 0
    assert capsys.readouterr().out.startswith("win rate ")
    assert main([*args, *judge, *model]) == 2
    assert "already holds results" in capsys.readouterr().err

    classifier = ["--classifier", str(save_byte_classifier(tmp_path / "clf"))]
    args = ["eval", "toxigen", "--data", str(write_toxigen(tmp_path / "t")), "--out", str(tmp_path / "tox")]
    assert main([*args, *classifier, *model]) == 0
    assert re.match(r"\d+\.\d\d% toxic; ", capsys.readouterr().out)
    row = read_jsonl(tmp_path / "tox" / "predictions.jsonl")[0]
    expected = generate(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        load_tokenizer(str(tiny_llama_dir)),
        [row["prompt"]],
        max_new_tokens=3,
        stop=["\n"],
    )
    assert row["prediction"] == expected[0]
