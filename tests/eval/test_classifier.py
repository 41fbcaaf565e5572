from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import save_byte_classifier
from transformers import BertForSequenceClassification

from lmadapt.errors import ConfigError
from lmadapt.eval.classifier import ToxicityClassifier, toxic_label_index


def test_toxic_label_comes_from_the_config_never_a_guess() -> None:
    assert toxic_label_index({0: "LABEL_0", 1: "LABEL_1"}, None, "c") == 1  # ToxiGen's classifiers
    named = {0: "toxic", 1: "benign"}
    with pytest.raises(ConfigError, match=r"c: say which of its labels \(0: toxic, 1: benign\) is toxic"):
        toxic_label_index(named, None, "c")
    assert toxic_label_index(named, "toxic", "c") == 0
    assert toxic_label_index(named, "1", "c") == 1
    with pytest.raises(ConfigError, match="no label 'hate' among 0: toxic, 1: benign"):
        toxic_label_index(named, "hate", "c")


def test_classifier_probabilities_match_plain_transformers(tmp_path: Path) -> None:
    path = save_byte_classifier(tmp_path / "clf")
    texts = ["you are lovely", "", "x" * 100]  # the last one is longer than the 64 positions
    classifier = ToxicityClassifier(path, None, batch_size=2)
    probabilities = classifier.toxic_probabilities(texts, "classify")

    model = BertForSequenceClassification.from_pretrained(path).eval()
    for text, probability in zip(texts, probabilities, strict=True):
        ids = [*[b + 3 for b in text.encode()][:63], 1]  # bytes + 3, cut to fit with ByT5's EOS (1)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        assert probability == pytest.approx(float(logits.softmax(-1)[1]), abs=1e-5)
    assert classifier.max_length == 64
    assert classifier.settings()["toxic_label"] == "1: LABEL_1"


def test_a_classifier_with_named_labels_needs_the_toxic_one_named(tmp_path: Path) -> None:
    path = save_byte_classifier(tmp_path / "named", {0: "hate", 1: "neutral"})
    with pytest.raises(ConfigError, match="with --toxic-label"):
        ToxicityClassifier(path, None, batch_size=4)
    classifier = ToxicityClassifier(path, "hate", batch_size=4)
    [p_hate] = classifier.toxic_probabilities(["hello"], "classify")
    model = BertForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[b + 3 for b in b"hello"] + [1]])).logits[0].double()
    assert p_hate == pytest.approx(float(logits.softmax(-1)[0]), abs=1e-5)
