"""The training loop's additions for elastic retraining: context-aware loss terms, early stopping, time budget,
length-grouped batches (on a tiny model; the loop itself is tests/pipeline/learning/test_loop.py's)."""

from __future__ import annotations

import torch

from aet.pipeline.config import TrainSettings
from aet.pipeline.learning.loop import StepContext, Trainer, length_grouped
from tests.pipeline.tiny_model import synthetic_examples, tiny_model

DATA = synthetic_examples(48, seed=1)


class Recorder:
    """A loss term that wants the step's context and attention maps; contributes a constant."""

    wants_context = True
    needs_attentions = True

    def __init__(self) -> None:
        self.seen: list[StepContext] = []

    def __call__(self, model, enc, labels, context: StepContext) -> torch.Tensor:
        self.seen.append(context)
        return torch.tensor(0.25)


def test_context_terms_get_the_batch_and_attention_maps_and_are_logged() -> None:
    model, recorder = tiny_model(), Recorder()
    result = Trainer(
        model, TrainSettings(epochs=1, batch_size=16, seed=1), loss_terms=[("rec", recorder)], progress=False
    ).fit(DATA)
    assert len(recorder.seen) == 3 and result.steps == 3 and result.samples == 48
    ctx = recorder.seen[0]
    assert len(ctx.batch) == 16 and ctx.outputs.attentions is not None
    assert len(ctx.outputs.attentions) == 2 and ctx.outputs.logits.shape == (16, 3)
    assert sorted(e.id for c in recorder.seen for e in c.batch) == sorted(e.id for e in DATA)  # each once
    assert result.history[0]["train_rec"] == 0.25


def test_early_stopping_after_patience_epochs_without_gain() -> None:
    model = tiny_model()
    frozen = TrainSettings(epochs=5, batch_size=16, learning_rate=1e-12, seed=1)  # validation cannot improve
    result = Trainer(model, frozen, progress=False, patience=2).fit(DATA, DATA[:12])
    assert result.stopped == "early_stopping"
    assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.best_epoch == 0


def test_time_budget_stops_training_and_keeps_the_best_weights() -> None:
    model = tiny_model()
    result = Trainer(model, TrainSettings(epochs=3, batch_size=8, seed=1), progress=False, time_budget_s=0.0).fit(
        DATA, DATA[:12]
    )
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
