"""The training loop: seeded training, loss terms on their hooks, early stopping, time budget, length-grouped batches.

Fast checks run on a tiny model; the slow ones train MiniLM.
"""

from __future__ import annotations

import pytest
import torch

from aet.pipeline.config import FitSettings
from aet.pipeline.learning.examples import Example, load_examples
from aet.pipeline.learning.loop import TrainingInterrupted, TrainingLoop, class_weights, length_grouped
from aet.pipeline.learning.terms import LossTerm, Step
from aet.pipeline.model import SentimentModel
from tests.conftest import EXAMPLES
from tests.pipeline.tiny_model import synthetic_examples, tiny_model

DATA = synthetic_examples(48, seed=1)


class Constant(LossTerm):
    """A loss term that adds a constant."""

    name = "constant"

    def __call__(self, step: Step) -> torch.Tensor:
        return torch.tensor(5.0)


class Recorder(LossTerm):
    """A loss term that needs attention maps, records its hooks and steps, and contributes a constant."""

    name = "rec"
    needs_attentions = True

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen: list[Step] = []
        self.hooks: list[str] = []
        self.fail_at = fail_at

    def setup(self, student: SentimentModel) -> None:
        self.hooks.append("setup")

    def teardown(self) -> None:
        self.hooks.append("teardown")

    def __call__(self, step: Step) -> torch.Tensor:
        self.hooks.append("step")
        self.seen.append(step)
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("injected failure")
        return torch.tensor(0.25)


def test_terms_get_the_step_with_the_batch_and_attention_maps_and_are_logged() -> None:
    model, recorder = tiny_model(), Recorder()
    result = TrainingLoop(model, FitSettings(epochs=1, batch_size=16, seed=1), terms=[recorder], progress=False).fit(
        DATA
    )
    assert len(recorder.seen) == 3 and result.steps == 3 and result.samples == 48
    step = recorder.seen[0]
    assert len(step.examples) == 16 and step.outputs.attentions is not None
    assert len(step.outputs.attentions) == 2 and step.outputs.logits.shape == (16, 3)
    assert step.model is model and step.labels.tolist() == [e.label for e in step.examples]
    assert step.encoded["input_ids"].shape[0] == 16
    assert sorted(e.id for s in recorder.seen for e in s.examples) == sorted(e.id for e in DATA)  # each once
    assert result.history[0]["train_rec"] == 0.25
    assert recorder.hooks == ["setup", "step", "step", "step", "teardown"]


def test_teardown_runs_when_training_fails_or_is_interrupted() -> None:
    failing = Recorder(fail_at=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        TrainingLoop(tiny_model(), FitSettings(epochs=1, batch_size=16, seed=1), terms=[failing], progress=False).fit(
            DATA
        )
    assert failing.hooks == ["setup", "step", "step", "teardown"]
    stopped = Recorder()
    loop = TrainingLoop(
        tiny_model(),
        FitSettings(epochs=1, batch_size=16, seed=1),
        terms=[stopped],
        progress=False,
        interrupt=lambda: True,
    )
    with pytest.raises(TrainingInterrupted):
        loop.fit(DATA)
    assert stopped.hooks == ["setup", "step", "teardown"]


def test_the_learning_rate_defaults_to_the_full_mode_rate_without_a_trainable() -> None:
    assert TrainingLoop(tiny_model(), FitSettings(), progress=False).learning_rate == 1e-4
    assert TrainingLoop(tiny_model(), FitSettings(learning_rate=3e-3), progress=False).learning_rate == 3e-3


def test_early_stopping_after_patience_epochs_without_gain() -> None:
    model = tiny_model()
    frozen = FitSettings(epochs=5, batch_size=16, learning_rate=1e-12, seed=1, patience=2)  # validation cannot improve
    result = TrainingLoop(model, frozen, progress=False).fit(DATA, DATA[:12])
    assert result.stopped == "early_stopping"
    assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.best_epoch == 0


def test_time_budget_stops_training_and_keeps_the_best_weights() -> None:
    model = tiny_model()
    budget = FitSettings(epochs=3, batch_size=8, seed=1, time_budget_s=1e-9)  # any step outlasts it
    result = TrainingLoop(model, budget, progress=False).fit(DATA, DATA[:12])
    assert result.stopped == "time_budget" and result.steps == 1 and len(result.history) == 1
    assert "val_macro_f1" in result.history[0]


def test_length_grouped_batches_cover_every_example_once() -> None:
    lengths = [len(e.text) for e in DATA] + [5] * 16 + [300] * 16
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    grouped = length_grouped(order, lengths, 16, torch.Generator().manual_seed(0), window=8)
    assert sorted(grouped) == sorted(order)
    batches = [grouped[i : i + 16] for i in range(0, len(grouped), 16)]
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert min(spreads) == 0  # the very short and very long texts end up in batches of their own


@pytest.fixture(scope="module")
def small_data() -> list[Example]:
    return load_examples(EXAMPLES / "train.jsonl")[:48]


def _train_once(data: list[Example], terms: list[LossTerm] | None = None) -> tuple[SentimentModel, list[dict]]:
    torch.manual_seed(0)
    model = SentimentModel.load("minilm", version="t", new_head=True, device="cpu")
    fit = FitSettings(epochs=1, batch_size=16, seed=3)
    result = TrainingLoop(model, fit, terms=terms or [], progress=False).fit(data)
    return model, result.history


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(small_data: list[Example]) -> None:
    a, _ = _train_once(small_data)
    b, _ = _train_once(small_data)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.slow
def test_extra_loss_terms_are_added_to_the_objective(small_data: list[Example]) -> None:
    _, plain = _train_once(small_data)
    _, with_term = _train_once(small_data, [Constant()])
    assert with_term[0]["train_loss"] == pytest.approx(plain[0]["train_loss"] + 5.0, abs=1e-4)


def test_class_weights_balance_the_classes_and_keep_the_loss_scale() -> None:
    labels = [1] * 70 + [0] * 10 + [2] * 20
    assert class_weights(labels, "none", 3) is None
    balanced = class_weights(labels, "balanced", 3)
    assert balanced is not None
    counts = torch.tensor([10.0, 70.0, 20.0])
    assert torch.allclose(balanced * counts, torch.full((3,), float((balanced * counts).mean())))  # equal class mass
    assert float((balanced * counts).sum()) == pytest.approx(100.0)  # mean example weight 1
    sqrt = class_weights(labels, "sqrt", 3)
    assert sqrt is not None and balanced[0] > sqrt[0] > 1.0 > sqrt[1] > balanced[1]
    no_neutral = class_weights([0, 0, 2], "balanced", 3)
    assert no_neutral is not None and float(no_neutral[1]) == 0.0  # an absent class weighs nothing
