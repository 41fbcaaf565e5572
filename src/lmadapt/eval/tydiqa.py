"""TyDi QA GoldP, 1-shot, as Tulu 2 scored it (open-instruct's eval/tydiqa): SQuAD F1 and EM per language.

Files: the official tydiqa-goldp-v1.1-dev.json (questions) and tydiqa-goldp-v1.1-train.json (shots), in
the SQuAD layout (data -> paragraphs -> {context, qas: [{id, question, answers: [{text}]}]}); a question's
language is its id's prefix before the first "-" ("finnish-123..." is finnish).

Sampling: one generator seeded 42 draws, languages in sorted order, first the questions kept per language
(`random.sample`, only when a limit is below the language's count), then each language's shots from the
train file, as Tulu drew them.

Prompt, in the question's language (`TEMPLATES`): the instruction, a blank line, each shot as
"Passage: <context>\\nQuestion: <question>\\nAnswer: <first answer>" followed by a blank line, then
"Passage: <context>\\nQuestion: <question>\\n" and "Answer:" (through a chat template: the reply starts
with "Answer:"). A context (shots' included) longer than the token budget is cut to its first tokens, counted
as Tulu counted them (the tokenizer's default encoding, special tokens included) and decoded without
special tokens (Tulu's decode left a BOS's text, "<s>", in front of cut Llama contexts).

Greedy generation of at most 50 tokens; a plain prompt's answer ends at the first newline, a chat model
ends its reply itself. Scores per language: SQuAD EM and F1 (`eval.squad`) and Tulu's "recall" (a gold
answer, lowercased, is inside the lowercased prediction); each averaged over languages.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.errors import DataError
from lmadapt.eval.squad import squad_scores

DEV_FILE = "tydiqa-goldp-v1.1-dev.json"
TRAIN_FILE = "tydiqa-goldp-v1.1-train.json"
SAMPLE_SEED = 42
TULU_SHOTS = 1
TULU_MAX_CONTEXT_TOKENS = 512
TULU_MAX_NEW_TOKENS = 50
PLAIN_STOP = "\n"

# language -> (instruction, passage word, question word, answer word), as open-instruct prompted each.
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "english": (
        "Answer the following question based on the information in the given passage.",
        "Passage:",
        "Question:",
        "Answer:",
    ),
    "arabic": (
        "أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.",
        "المقطع:",
        "السؤال:",
        "الإجابة:",
    ),
    "bengali": (
        "প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।",
        "অধ্যায়:",
        "প্রশ্ন:",
        "উত্তর:",
    ),
    "finnish": (
        "Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.",
        "Kappale:",
        "Kysymys:",
        "Vastaus:",
    ),
    "indonesian": (
        "Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.",
        "Bagian:",
        "Pertanyaan:",
        "Jawaban:",
    ),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": (
        "Ответьте на следующий вопрос на основе информации в данном отрывке.",
        "Отрывок:",
        "Вопрос:",
        "Ответ:",
    ),
    "swahili": (
        "Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.",
        "Kifungu:",
        "Swali:",
        "Jibu:",
    ),
    "telugu": (
        "ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.",
        "పేరా:",
        "ప్రశ్న:",
        "సమాధానం:",
    ),
}


@dataclass(frozen=True)
class QAExample:
    id: str
    language: str
    context: str
    question: str
    answers: list[str]


def load_examples(path: str | Path) -> list[QAExample]:
    """The questions of a SQuAD-layout file, in file order; a malformed record is a DataError naming it."""
    path = Path(path)
    try:
        articles = json.loads(path.read_text("utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(
            str(path), None, "data", f'expected the SQuAD layout {{"data": [...]}}: {err}'
        ) from err
    examples = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                answers = [answer.get("text") for answer in qa.get("answers", [])]
                if not isinstance(qa.get("id"), str) or "-" not in qa["id"]:
                    raise DataError(str(path), None, f"{where}.id", "expected a '<language>-...' string")
                if not answers or not all(isinstance(text, str) for text in answers):
                    raise DataError(str(path), None, f"{where}.answers", "expected at least one {text}")
                language = qa["id"].split("-")[0]
                if language not in TEMPLATES:
                    raise DataError(str(path), None, f"{where}.id", f"no prompt for language {language!r}")
                examples.append(QAExample(qa["id"], language, paragraph["context"], qa["question"], answers))
    if not examples:
        raise DataError(str(path), None, None, "no questions in the file")
    return examples


def _by_language(examples: Sequence[QAExample]) -> dict[str, list[QAExample]]:
    grouped: dict[str, list[QAExample]] = {}
    for example in examples:
        grouped.setdefault(example.language, []).append(example)
    return dict(sorted(grouped.items()))


def sample(
    questions: Sequence[QAExample],
    train: Sequence[QAExample],
    max_per_language: int | None,
    shots: int,
) -> tuple[list[QAExample], dict[str, list[QAExample]]]:
    """(questions kept, language -> its shots), drawn as the module docstring says."""
    rng = random.Random(SAMPLE_SEED)
    kept = []
    for group in _by_language(questions).values():
        kept += (
            rng.sample(group, max_per_language)
            if max_per_language and len(group) > max_per_language
            else group
        )
    pools = _by_language(train)
    chosen = {}
    for language in sorted({q.language for q in kept}):
        pool = pools.get(language, [])
        if len(pool) < shots:
            raise DataError(TRAIN_FILE, None, None, f"{language}: {len(pool)} examples for {shots} shots")
        chosen[language] = rng.sample(pool, shots) if shots else []
    return kept, chosen


def cut_context(context: str, tokenizer: Any, max_tokens: int | None) -> str:
    """`context` cut to its first `max_tokens` tokens (module docstring); None or 0 keeps it whole."""
    ids = tokenizer.encode(context)
    if not max_tokens or len(ids) <= max_tokens:
        return context
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def build_prompt(
    example: QAExample, shots: Sequence[QAExample], chat: bool, cut: Callable[[str], str]
) -> str:
    """The prompt in the example's language; `cut` shortens contexts (`cut_context`)."""
    instruction, passage, question, answer = TEMPLATES[example.language]
    text = instruction + "\n\n"
    if shots:
        blocks = [
            f"{passage} {cut(s.context)}\n{question} {s.question}\n{answer} {s.answers[0]}" for s in shots
        ]
        text += "\n\n".join(blocks) + "\n\n"
    text += f"{passage} {cut(example.context)}\n{question} {example.question}\n"
    return text if chat else text + answer


def answer_word(example: QAExample) -> str:
    return TEMPLATES[example.language][3]


def tydiqa_metrics(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict[str, Any]:
    """SQuAD EM / F1 and Tulu's recall (x100, 4 decimals) per language, and their means over languages."""
    raw: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    pairs = list(zip(examples, predictions, strict=True))
    for language in sorted({e.language for e in examples}):
        mine = [(e, p) for e, p in pairs if e.language == language]
        found = [any(gold.strip().lower() in p.strip().lower() for gold in e.answers) for e, p in mine]
        raw[language] = {
            **squad_scores([p for _, p in mine], [e.answers for e, _ in mine]),
            "recall": 100 * sum(found) / len(mine),
        }
        counts[language] = len(mine)
    names = ("exact_match", "f1", "recall")
    average = {name: round(sum(s[name] for s in raw.values()) / len(raw), 4) for name in names}
    return {
        "overall": {"num_questions": len(examples), "num_languages": len(raw), **average},
        "per_language": {
            language: {"num_questions": counts[language], **{n: round(s[n], 4) for n in names}}
            for language, s in raw.items()
        },
    }
