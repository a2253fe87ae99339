"""Bootstrapping the first champion: a fine-tuned MiniLM clearly beats an untrained head."""

from __future__ import annotations

import pytest
import torch

from aet.pipeline.learning.examples import load_examples
from aet.pipeline.learning.loop import evaluate
from aet.pipeline.model import SentimentModel
from tests.conftest import EXAMPLES


@pytest.mark.slow
def test_bootstrapped_champion_beats_an_untrained_head(champion_artifact: dict[str, str]) -> None:
    """The session champion (trained on examples/train.jsonl) is measured on the unseen stream file."""
    stream = load_examples(EXAMPLES / "stream.jsonl")
    champion = SentimentModel.load(champion_artifact["artifact_path"], version="c", device="cpu")
    torch.manual_seed(0)
    untrained = SentimentModel.load("minilm", version="u", new_head=True, device="cpu")
    trained_f1 = evaluate(champion, stream)["macro_f1"]
    untrained_f1 = evaluate(untrained, stream)["macro_f1"]
    assert trained_f1 > 0.6, trained_f1
    assert trained_f1 > untrained_f1 + 0.2, (trained_f1, untrained_f1)
