"""A local text classifier directory (AutoModelForSequenceClassification) that scores texts for toxicity.

Which label means toxic is read from the classifier's config, never guessed: ToxiGen's classifiers
(tomh/toxigen_roberta, toxigen_hatebert) have two labels with the default names LABEL_0 / LABEL_1, and
LABEL_1 is toxic, so that is the default for such a config; a config with other label names needs the
toxic one named (`toxic_label`, a name or an index).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lmadapt.errors import ConfigError
from lmadapt.eval.progress import Progress
from lmadapt.models.load import check_model_dir, load_tokenizer

_DEFAULT_NAMES = {0: "LABEL_0", 1: "LABEL_1"}
TOXIGEN_TOXIC_INDEX = 1


def toxic_label_index(id2label: Mapping[int, str], toxic_label: str | None, path: str | Path) -> int:
    """The index of the toxic label (module docstring); a ConfigError names the labels when unsure."""
    labels = ", ".join(f"{i}: {name}" for i, name in sorted(id2label.items()))
    if toxic_label is None:
        if dict(id2label) != _DEFAULT_NAMES:
            raise ConfigError(
                f"{path}: say which of its labels ({labels}) is toxic with --toxic-label (ToxiGen's own "
                "classifiers have LABEL_0 / LABEL_1, LABEL_1 toxic)"
            )
        return TOXIGEN_TOXIC_INDEX
    for index, name in id2label.items():
        if toxic_label in (name, str(index)):
            return index
    raise ConfigError(f"{path}: no label {toxic_label!r} among {labels}")


class ToxicityClassifier:
    """The classifier under `path` (safetensors weights, no remote code); the config is read at once so a
    label problem is reported before any generation, the weights load on first use."""

    def __init__(self, path: str | Path, toxic_label: str | None, batch_size: int):
        from transformers import AutoConfig

        if batch_size < 1:
            raise ConfigError(f"classifier batch size must be at least 1, got {batch_size}")
        self.path, self.batch_size = check_model_dir(path), batch_size
        self.config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        id2label = {int(i): name for i, name in self.config.id2label.items()}
        self.toxic_index = toxic_label_index(id2label, toxic_label, path)
        self.labels = id2label

    @functools.cached_property
    def _loaded(self) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, local_files_only=True, use_safetensors=True
        )
        return model.to(device).eval(), load_tokenizer(self.path)

    @property
    def max_length(self) -> int:
        """What the classifier reads of a text: its tokenizer's limit, or its position table's when the
        tokenizer states none."""
        limit = self._loaded[1].model_max_length
        positions = getattr(self.config, "max_position_embeddings", None)
        return positions if positions is not None and limit > positions else limit

    @torch.no_grad()
    def toxic_probabilities(self, texts: Sequence[str], desc: str) -> list[float]:
        """The toxic label's softmax probability for each text, `batch_size` texts per forward pass."""
        model, tokenizer = self._loaded
        probabilities: list[float] = []
        with Progress(len(texts), desc) as progress:
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                inputs = tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                logits = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits
                probabilities += logits.float().softmax(dim=-1)[:, self.toxic_index].tolist()
                progress.update(len(batch))
        return probabilities

    def settings(self) -> dict[str, Any]:
        return {
            "classifier": str(self.path),
            "labels": self.labels,
            "toxic_label": f"{self.toxic_index}: {self.labels[self.toxic_index]}",
        }
