"""Where an evaluation's predictions come from: a model, a HINT run, a heuristic, or a predictions file.

Each source is an object that owns its settings and answers for itself:

- `ModelSource`: a local Hugging Face directory. Any evaluation uses it through `encoder` (prompt text to
  ids, through the model's chat template per its `chat_template` setting, `eval.prompts`), then
  `generate` (greedy continuations), `score` (log-probability of replies after prompts) or
  `score_next_tokens` (log-probabilities of candidate next tokens).
- `lmadapt.hint.source.HintSource`: a run from `lmadapt hint` (it lives with HINT, which builds on eval).
- `HeuristicSource`: a model-free SuperNI baseline (`eval.predictors`).
- `PredictionsFile`: a JSONL file of {"id", "prediction"}; ids it lacks are missing predictions.

`recipes.evaluate.superni_source` builds the source a command asks for and refuses a setting the source
cannot honour, so nothing a user passes is silently ignored. Heavy libraries (torch, transformers) are
imported only when a model is used, so a refused setting is reported at once. A new evaluation writes
its prompts and its scorer and calls `ModelSource.generate` / `score` (or reads a `PredictionsFile` by
its ids).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lmadapt.config import ModelConfig
from lmadapt.data.superni import EvalInstance
from lmadapt.data.tasks import PromptEncoding, Task
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval.predictors import get_predictor, predict
from lmadapt.eval.progress import Progress
from lmadapt.eval.prompts import CHAT_TEMPLATE_MODES, PromptEncoder, chat_template_for, fit_superni_prompts
from lmadapt.eval.report import read_predictions

log = logging.getLogger("lmadapt")

DEFAULT_ENCODING = "def+2pos"
TK_INSTRUCT_MAX_SOURCE_TOKENS = 1024
SUPERNI_MAX_NEW_TOKENS = 128
DEFAULT_BATCH_SIZE = 16


@dataclass
class SuperNIPredictions:
    """Predictions for SuperNI instances, in their order (None: the source has none for that instance)."""

    texts: list[str | None]
    instances: list[EvalInstance]  # as prompted (a model may have been shown fewer demonstrations)
    prompts: dict[str, Any] | None = None  # how a model's prompts were encoded and fitted
    flops: dict[str, Any] | None = None  # inference compute, when a model is known


class SuperNISource(Protocol):
    def default_encoding(self) -> str:
        """The prompt encoding used when the user names none."""
        ...

    def predict_superni(
        self, tasks: Sequence[Task], instances: Sequence[EvalInstance], encoding: PromptEncoding
    ) -> SuperNIPredictions: ...

    def settings(self) -> dict[str, Any]:
        """What metrics.json records about where the predictions came from."""
        ...


# ---------------------------------------------------------------------------------------------
# A Hugging Face model

# path -> (model, tokenizer, kind) while `models_shared()` is active.
_shared_models: dict[str, tuple[Any, Any, str]] | None = None


def _load(path: str) -> tuple[Any, Any, str]:
    import torch

    from lmadapt.models.load import load_model, load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(path)
    model, kind = load_model(ModelConfig(path=path), device)
    model.to(device)
    return model, tokenizer, kind


@contextlib.contextmanager
def models_shared(preloaded: Mapping[str, tuple[Any, Any, str]] | None = None) -> Iterator[None]:
    """Within this block every `ModelSource` of one path shares one loaded model (a suite runs many
    evaluations on it). `preloaded` maps names to models already in memory, (model, tokenizer, kind),
    which sources of that `path` use as they are (an evaluation during training)."""
    global _shared_models
    outer = _shared_models
    _shared_models = {**(outer or {}), **(preloaded or {})}  # an inner block sees the outer's models
    try:
        yield
    finally:
        _shared_models = outer


@dataclass
class ModelSource:
    """A local model directory; greedy generation and reply scoring, `batch_size` prompts at a time."""

    path: str
    chat_template: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = SUPERNI_MAX_NEW_TOKENS
    max_source_tokens: int | None = TK_INSTRUCT_MAX_SOURCE_TOKENS  # SuperNI prompts; None or 0: whole

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ConfigError(
                f"chat_template {self.chat_template!r}: expected one of {', '.join(CHAT_TEMPLATE_MODES)}"
            )
        check_positive("batch_size", self.batch_size)
        check_positive("max_new_tokens", self.max_new_tokens)

    @functools.cached_property
    def _loaded(self) -> tuple[Any, PromptEncoder]:
        loaded = _shared_models.get(self.path) if _shared_models is not None else None
        if loaded is None:
            loaded = _load(self.path)
            if _shared_models is not None:
                _shared_models[self.path] = loaded
        model, tokenizer, kind = loaded
        return model, PromptEncoder(tokenizer, kind, chat_template_for(tokenizer, self.chat_template))

    @property
    def model(self) -> Any:
        return self._loaded[0]

    @property
    def encoder(self) -> PromptEncoder:
        """Turns prompt text into the ids this model is given (loads the model on first use)."""
        return self._loaded[1]

    def generate(
        self, prompt_ids: Sequence[list[int]], desc: str, stop: Sequence[str] | None = None, **sampling: Any
    ) -> list[str]:
        """Continuation of each prompt (ids from `encoder`), with a progress bar named `desc`: greedy, or
        sampled with `sampling` (do_sample, temperature, top_p, seed as `eval.generate.generate` takes)."""
        from lmadapt.eval.generate import generate

        log.info("generating %d answers with %s (batch size %d)", len(prompt_ids), self.path, self.batch_size)
        with Progress(len(prompt_ids), desc) as progress:
            return generate(
                self.model,
                self.encoder.tokenizer,
                prompt_ids,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                stop=stop,
                progress=progress,
                **sampling,
            )

    def score(self, rows: Sequence[tuple[list[int], list[int]]], desc: str) -> list[float]:
        """Summed log-probability of each (prompt ids, reply ids) row's reply (`eval.scoring`)."""
        from lmadapt.eval.scoring import score_replies

        log.info("scoring %d replies with %s (batch size %d)", len(rows), self.path, self.batch_size)
        with Progress(len(rows), desc) as progress:
            return score_replies(self.model, rows, self.batch_size, progress)

    def score_next_tokens(
        self, prompt_ids: Sequence[list[int]], token_ids: Sequence[int], desc: str
    ) -> list[list[float]]:
        """Log-probability of each of `token_ids` as the next token after each prompt (`eval.scoring`)."""
        from lmadapt.eval.scoring import score_next_tokens

        log.info("scoring %d prompts with %s (batch size %d)", len(prompt_ids), self.path, self.batch_size)
        with Progress(len(prompt_ids), desc) as progress:
            return score_next_tokens(self.model, prompt_ids, token_ids, self.batch_size, progress)

    def uses_chat_template(self) -> bool:
        return self.encoder.template is not None

    def default_encoding(self) -> str:
        return DEFAULT_ENCODING

    def predict_superni(
        self, tasks: Sequence[Task], instances: Sequence[EvalInstance], encoding: PromptEncoding
    ) -> SuperNIPredictions:
        """Prompts fitted to `max_source_tokens` as Tk-Instruct fits its sources (`eval.prompts`), then
        greedy generation; with the inference FLOPs of concatenated vs instruction-once processing."""
        by_name = {task.name: task for task in tasks}
        fitted, prompt_ids, stats = fit_superni_prompts(
            instances, by_name, encoding, self.encoder, self.max_source_tokens
        )
        prompts = {
            "chat_template": self.uses_chat_template(),
            "max_source_tokens": self.max_source_tokens or None,
            "demonstrations_dropped": stats.demonstrations_dropped,
            "truncated": stats.truncated,
        }
        texts: list[str | None] = list(self.generate(prompt_ids, "superni"))
        return SuperNIPredictions(texts, fitted, prompts, self.flops(fitted, texts))

    def flops(self, instances: Sequence[EvalInstance], texts: Sequence[str | None]) -> dict[str, Any]:
        """`eval.flops.superni_flops` of these predictions; an architecture the accounting does not know
        gives {"error": why} rather than costing the scores."""
        from lmadapt.eval.flops import superni_flops

        try:
            return superni_flops(self.model, self.encoder.tokenizer, instances, texts, self.max_new_tokens)
        except LmadaptError as err:
            log.warning("no FLOPs accounting: %s", err)
            return {"error": str(err)}

    def settings(self) -> dict[str, Any]:
        return {"model": self.path, "max_new_tokens": self.max_new_tokens}


# ---------------------------------------------------------------------------------------------
# Without a model


@dataclass
class HeuristicSource:
    """A model-free SuperNI baseline by name ("copy-input", "copy-demo")."""

    name: str

    def __post_init__(self) -> None:
        get_predictor(self.name)  # an unknown name fails before any loading

    def default_encoding(self) -> str:
        return DEFAULT_ENCODING

    def predict_superni(
        self, tasks: Sequence[Task], instances: Sequence[EvalInstance], encoding: PromptEncoding
    ) -> SuperNIPredictions:
        return SuperNIPredictions(list(predict(self.name, tasks, instances)), list(instances))

    def settings(self) -> dict[str, Any]:
        return {"predictor": self.name}


@dataclass
class PredictionsFile:
    """Predictions read from a JSONL file of {"id", "prediction"}; `model`, when given, only counts the
    inference compute those predictions would have cost it (nothing is generated)."""

    path: str
    model: ModelSource | None = None

    def texts(self, ids: Sequence[str]) -> list[str | None]:
        """The file's prediction for each id (None where it has none); an id not among `ids`, a repeated
        id or a bad record is a DataError naming the file and line."""
        return read_predictions(self.path, ids)

    def default_encoding(self) -> str:
        return DEFAULT_ENCODING

    def predict_superni(
        self, tasks: Sequence[Task], instances: Sequence[EvalInstance], encoding: PromptEncoding
    ) -> SuperNIPredictions:
        texts = self.texts([instance.id for instance in instances])
        flops = self.model.flops(instances, texts) if self.model is not None else None
        return SuperNIPredictions(texts, list(instances), None, flops)

    def settings(self) -> dict[str, Any]:
        model = self.model.settings() if self.model is not None else {}
        return {"predictions": self.path, **model}


# ---------------------------------------------------------------------------------------------
# Choosing a source


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
