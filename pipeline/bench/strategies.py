"""The baselines AET is compared with on a replayed stream, all seeing the same messages and delayed labels.

Each strategy predicts a chunk of messages with the model it has at that
moment (``predict``), then receives the labels that arrived meanwhile
(``learn``): prequential evaluation, predictions always made before the label
is known. ``evaluate`` scores its final model on a held-out test set.

- :class:`Static`: the bootstrap champion, never retrained;
- :class:`RiverText`: river's online TF-IDF + logistic regression, trained on
  the bootstrap set and then on every label as it arrives;
- :class:`RiverEmbedding` (``river-emb``): the frozen bootstrap encoder's
  sentence embeddings into river's online softmax regression, which learns the
  bootstrap set and then every label — an online peer that reads what the
  transformer reads;
- :class:`Periodic`: plain fine-tuning (cross-entropy on the new labels only,
  no replay, no anchor, no distillation, no gate) every ``every`` labels;
- :class:`Oracle`: the champion fine-tuned offline on every phase's streamed
  messages with all their labels (an upper bound no online system can reach).

The AET strategy itself is the real loop on the bus (pipeline/bench/stream.py).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence
from typing import Any

from aet.pipeline.bench.scenario import StreamItem
from aet.pipeline.config import RoundSettings
from aet.pipeline.evaluation import Report, report
from aet.pipeline.learning.examples import Example, stratified_split
from aet.pipeline.learning.loop import evaluate
from aet.pipeline.learning.round import adapt
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)


class Strategy(abc.ABC):
    """A model that predicts a stream and learns from its delayed labels."""

    name = "strategy"

    def __init__(self) -> None:
        self.retrains = 0
        self.train_seconds = 0.0
        self.swaps: list[int] = []  # stream positions after which a new model served

    @abc.abstractmethod
    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        """Predicted label indices for ``items``, in order."""

    def learn(self, items: Sequence[StreamItem], position: int) -> None:  # noqa: B027 - optional hook
        """Labels of ``items`` arrived after ``position`` messages; learn from them if the strategy does."""

    @abc.abstractmethod
    def evaluate(self, examples: Sequence[Example]) -> Report:
        """Accuracy and macro-F1 of the current model on ``examples``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the strategy holds."""


class Static(Strategy):
    """The bootstrap champion, never retrained."""

    name = "static"

    def __init__(self, model: SentimentModel) -> None:
        super().__init__()
        self.model = model

    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        return self.model.predict_proba([it.message.text for it in items]).argmax(axis=1).tolist()

    def evaluate(self, examples: Sequence[Example]) -> Report:
        return evaluate(self.model, examples)


class Periodic(Static):
    """Plain fine-tuning on the labels of the last period, every ``every`` labels, swapped in at once."""

    name = "periodic"

    def __init__(self, model: SentimentModel, config: RoundSettings, every: int) -> None:
        super().__init__(model)
        self.config = config
        self.every = every
        self.pending: list[Example] = []

    def learn(self, items: Sequence[StreamItem], position: int) -> None:
        self.pending.extend(it.example() for it in items)
        if len(self.pending) < self.every:
            return
        train, validation = stratified_split(self.pending, 0.1, self.config.seed)
        result = adapt(
            self.model,
            recent=train,
            validation=validation,
            settings=self.config,
            version=f"periodic-{self.retrains + 1}",
            new_fisher=False,
        )
        self.model = result.model
        self.retrains += 1
        self.train_seconds += result.seconds["round"]
        self.swaps.append(position)
        self.pending = []
        log.info("periodic: retrain %d at message %d (%.1fs)", self.retrains, position, result.seconds["round"])


def plain(config: RoundSettings) -> RoundSettings:
    """``config`` with cross-entropy only: no rehearsal, no elastic anchor, no attention distillation."""
    return config.model_copy(update={"rehearsal": False, "lambda_ewc": 0.0, "lambda_att": 0.0})


class Oracle(Static):
    """The champion fine-tuned offline on all of the stream's messages with their labels."""

    name = "oracle"

    def __init__(self, model: SentimentModel, examples: Sequence[Example], config: RoundSettings) -> None:
        train, validation = stratified_split(list(examples), 0.1, config.seed)
        started = time.perf_counter()
        result = adapt(model, recent=train, validation=validation, settings=config, version="oracle", new_fisher=False)
        super().__init__(result.model)
        self.retrains = 1
        self.train_seconds = time.perf_counter() - started


class RiverText(Strategy):
    """river: TF-IDF (uni- and bigrams) into one-vs-rest logistic regression, learning one label at a time."""

    name = "river"

    def __init__(self, bootstrap: Sequence[Example]) -> None:
        super().__init__()
        from river import feature_extraction, linear_model, multiclass, optim

        tfidf = feature_extraction.TFIDF(lowercase=True, ngram_range=(1, 2))
        classifier = multiclass.OneVsRestClassifier(linear_model.LogisticRegression(optimizer=optim.SGD(0.5)))
        # Any: river annotates a pipeline's input as a dict, but its TF-IDF step reads a str.
        model: Any = tfidf | classifier
        self.model = model
        started = time.perf_counter()
        for e in bootstrap:
            self.model.learn_one(e.text, e.label)
        self.train_seconds = time.perf_counter() - started

    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        return [self._predict(it.message.text) for it in items]

    def learn(self, items: Sequence[StreamItem], position: int) -> None:
        started = time.perf_counter()
        for it in items:
            self.model.learn_one(it.message.text, it.truth)
        self.train_seconds += time.perf_counter() - started

    def evaluate(self, examples: Sequence[Example]) -> Report:
        return report([e.label for e in examples], [self._predict(e.text) for e in examples])

    def _predict(self, text: str) -> int:
        label = self.model.predict_one(text)
        return 1 if label is None else int(label)  # before any label: neutral


class RiverEmbedding(Strategy):
    """The frozen bootstrap encoder's embeddings into river's online softmax regression, learning every label.

    The embedding is the encoder's mean-pooled last hidden state (what the
    sentence-embedding backbone was trained to produce), standardised online;
    the classifier learns the bootstrap set first, then each label as it arrives.
    """

    name = "river-emb"

    def __init__(self, encoder: SentimentModel, bootstrap: Sequence[Example], learning_rate: float = 0.01) -> None:
        super().__init__()
        from river import linear_model, optim, preprocessing

        self.encoder = encoder
        model: Any = preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(learning_rate))
        self.model = model
        self.embedded: dict[str, dict[int, float]] = {}
        started = time.perf_counter()
        for row, e in zip(self._rows([e.text for e in bootstrap]), bootstrap, strict=True):
            self.model.learn_one(row, e.label)
        self.train_seconds = time.perf_counter() - started

    def _rows(self, texts: Sequence[str]) -> list[dict[int, float]]:
        vectors = self.encoder.embed(list(texts))
        return [{i: float(v) for i, v in enumerate(vector)} for vector in vectors]

    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        rows = self._rows([it.message.text for it in items])
        self.embedded.update({it.message.id: row for it, row in zip(items, rows, strict=True)})
        return [self._predict(row) for row in rows]

    def learn(self, items: Sequence[StreamItem], position: int) -> None:
        started = time.perf_counter()
        for it in items:
            row = self.embedded.pop(it.message.id, None) or self._rows([it.message.text])[0]
            self.model.learn_one(row, it.truth)
        self.train_seconds += time.perf_counter() - started

    def evaluate(self, examples: Sequence[Example]) -> Report:
        return report([e.label for e in examples], [self._predict(r) for r in self._rows([e.text for e in examples])])

    def _predict(self, row: dict[int, float]) -> int:
        label = self.model.predict_one(row)
        return 1 if label is None else int(label)  # before any label: neutral
