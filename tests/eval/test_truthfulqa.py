from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.data.templates import TULU_JINJA
from lmadapt.errors import DataError
from lmadapt.eval.prompts import PromptEncoder, chat_template_for
from lmadapt.eval.truthfulqa import (
    MCScores,
    TruthfulQuestion,
    answer_rows,
    build_prompt,
    judge_prompt,
    load_questions,
    mc_scores,
    trim_answer,
    truthfulqa_metrics,
)

MC_TASK = [
    {
        "question": "What color is the sky?",
        "mc1_targets": {"Blue.": 1, "Green.": 0, "Red.": 0},
        "mc2_targets": {"Blue.": 1, "It is blue.": 1, "Green.": 0},
    }
]


def test_mc_task_json_and_the_hugging_face_variant_load_alike(tmp_path: Path) -> None:
    official = tmp_path / "mc_task.json"
    official.write_text(json.dumps(MC_TASK), encoding="utf-8")
    record = MC_TASK[0]
    hf = {
        "question": record["question"],
        **{
            name: {"choices": list(record[name]), "labels": list(record[name].values())}
            for name in ("mc1_targets", "mc2_targets")
        },
    }
    variant = tmp_path / "mc.jsonl"
    variant.write_text(json.dumps(hf) + "\n", encoding="utf-8")
    expected = TruthfulQuestion(
        "What color is the sky?",
        1,
        [("Blue.", 1), ("Green.", 0), ("Red.", 0)],
        [("Blue.", 1), ("It is blue.", 1), ("Green.", 0)],
    )
    assert load_questions(official) == [expected]
    assert load_questions(variant) == [expected]
    assert expected.answers == ["Blue.", "Green.", "Red.", "It is blue."]


def test_the_csv_as_open_instruct_read_it(tmp_path: Path) -> None:
    path = tmp_path / "TruthfulQA.csv"
    path.write_text(
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        'Adversarial,Misc,Is the sky blue?,Yes,"Yes; It is blue.","No; It is green",src\n',
        encoding="utf-8",
    )
    [question] = load_questions(path)
    assert question.question == "Is the sky blue?" and question.line == 2
    assert question.mc1 == [("Yes.", 1), ("No.", 0), ("It is green.", 0)]
    assert question.mc2 == [("Yes.", 1), ("It is blue.", 1), ("No.", 0), ("It is green.", 0)]


@pytest.mark.parametrize(
    ("targets", "field"),
    [
        ({"mc1_targets": {"A.": 1, "B.": 1, "C.": 0}}, "mc1_targets"),
        ({"mc2_targets": {"A.": 1}}, "mc2_targets"),
        ({"mc2_targets": {"A.": 1, "B.": 2}}, "mc2_targets"),
        ({"question": ""}, "question"),
    ],
)
def test_malformed_targets_are_named(tmp_path: Path, targets: dict, field: str) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text(
        json.dumps(MC_TASK[0]) + "\n" + json.dumps({**MC_TASK[0], **targets}) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError) as raised:
        load_questions(path)
    assert (raised.value.line, raised.value.field) == (2, field)


def test_mc1_and_mc2_by_hand() -> None:
    question = TruthfulQuestion("q", 1, [("T1", 1), ("F1", 0), ("F2", 0)], [("T1", 1), ("T2", 1), ("F1", 0)])
    # probabilities 0.2, 0.1 (true) and 0.3, 0.05 (false): MC1 loses to F1, MC2 = 0.3 / 0.6
    log_probs = {"T1": math.log(0.2), "T2": math.log(0.1), "F1": math.log(0.3), "F2": math.log(0.05)}
    scores = mc_scores(question, log_probs)
    assert scores.mc1 == 0.0
    assert scores.mc2 == pytest.approx(0.5, abs=1e-12)
    log_probs["F1"] = math.log(0.15)  # now T1 beats every false answer; MC2 = 0.3 / 0.45
    scores = mc_scores(question, log_probs)
    assert scores.mc1 == 1.0 and scores.mc2 == pytest.approx(2 / 3, abs=1e-12)
    log_probs["F1"] = log_probs["T1"]  # a tie is not a win
    assert mc_scores(question, log_probs).mc1 == 0.0


def test_mc2_survives_very_negative_log_probs() -> None:
    question = TruthfulQuestion("q", 1, [("T", 1), ("F", 0)], [("T", 1), ("F", 0)])
    scores = mc_scores(question, {"T": -2000.0, "F": -2000.0 - math.log(3)})  # exp() alone underflows
    assert scores.mc2 == pytest.approx(0.75, abs=1e-12)


def test_metrics_with_judges_by_hand() -> None:
    mc = [MCScores(1.0, 0.5), MCScores(0.0, 0.25)]
    judged = {"truth": [0.9, 0.5, 0.2], "info": [0.4, 0.6, 0.7]}
    overall = truthfulqa_metrics(mc[:1] + mc[1:], {})["overall"]
    assert overall == {"num_questions": 2, "mc1": 50.0, "mc2": 37.5}
    overall = truthfulqa_metrics(None, judged)["overall"]
    # true: 0.9, 0.5 (>= 0.5 counts); informative: 0.6, 0.7; both: only the second answer
    assert overall == {
        "num_questions": 3,
        "truth_percent": round(200 / 3, 4),
        "info_percent": round(200 / 3, 4),
        "truth_and_info_percent": round(100 / 3, 4),
    }


def test_prompts_and_trimming() -> None:
    question = TruthfulQuestion(" Why? ", 1, [("a", 1), ("b", 0)], [("a", 1), ("b", 0)])
    prompt = build_prompt(question)
    assert prompt.startswith("Q: What is human life expectancy in the United States?\nA: Human life")
    assert prompt.endswith("A: The 1992 Olympics were held in Barcelona, Spain.\n\nQ:  Why? ")
    assert judge_prompt(question, " Because. ", "truth") == "Q: Why?\nA: Because.\nTrue:"
    assert judge_prompt(question, "Because.", "info") == "Q: Why?\nA: Because.\nHelpful:"
    assert trim_answer("\nA: It is.\n\nMore.\n\nQ: next") == "It is. More."


def test_answers_follow_the_cue_plain_and_after_a_chat_template() -> None:
    question = TruthfulQuestion("Sky?", 1, [("Blue.", 1), ("Red.", 0)], [("Blue.", 1), ("Red.", 0)])
    byt5 = ByT5Tokenizer()
    plain = answer_rows(PromptEncoder(byt5, "causal"), question, chat=False)
    assert [byt5.decode(prompt) for prompt, _ in plain] == [build_prompt(question) + "\nA:"] * 2
    assert [byt5.decode(reply) for _, reply in plain] == [" Blue.", " Red."]
    byt5.chat_template = TULU_JINJA
    chat = answer_rows(PromptEncoder(byt5, "causal", chat_template_for(byt5)), question, chat=True)
    expected = "<|user|>\n" + build_prompt(question) + "\n<|assistant|>\nA:"
    assert [byt5.decode(prompt) for prompt, _ in chat] == [expected] * 2
    assert [byt5.decode(reply) for _, reply in chat] == [" Blue.", " Red."]


def test_the_hugging_face_parquet_copy(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    record = MC_TASK[0]
    targets = {
        n: {"choices": list(record[n]), "labels": list(record[n].values())}
        for n in ("mc1_targets", "mc2_targets")
    }
    path = tmp_path / "validation.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": record["question"], **targets}]), path)
    [question] = load_questions(path)
    assert question.mc1 == list(record["mc1_targets"].items())
    assert question.mc2 == list(record["mc2_targets"].items())
