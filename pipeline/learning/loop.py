"""The training loop: fine-tune a :class:`SentimentModel` in place on labeled examples.

Both the bootstrap (pipeline/learning/bootstrap.py) and every adaptation
round (pipeline/learning/round.py) train through :class:`TrainingLoop`: AdamW
with a linear warm-up schedule, bf16 autocast on CUDA, data parallelism under
torchrun, early stopping on a validation split (the best epoch's weights are
kept) and a time budget. The objective is the cross-entropy plus the extra
loss terms it is given (pipeline/learning/terms/). Everything random is
seeded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from aet.pipeline.config import FitSettings
from aet.pipeline.evaluation import Report, report
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.terms import LossTerm, Step
from aet.pipeline.learning.trainable import Trainable
from aet.pipeline.model import SentimentModel
from aet.pipeline.records import LABELS

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Training was abandoned on request (e.g. SIGTERM to the trainer); nothing it made is kept."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so that a run repeats exactly for a seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model: SentimentModel, examples: Sequence[Example], *, by_source: bool = False) -> Report:
    """Accuracy, macro-F1, count and predicted-label mix of ``model`` on ``examples`` (see evaluation.report).

    ``by_source``: each example is scored as its source is served (with that source's fast-path head, if any).
    """
    if not examples:
        return report([], [])
    texts = [e.text for e in examples]
    probs = model.predict_proba(texts, [e.source for e in examples]) if by_source else model.predict_proba(texts)
    return report([e.label for e in examples], probs.argmax(axis=1).tolist())


@dataclass
class TrainResult:
    """What a training run measured."""

    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_s: float = 0.0
    steps: int = 0
    samples: int = 0  # examples processed (on this rank)
    stopped: str | None = None  # "early_stopping" or "time_budget" when training ended before ``epochs``


class TrainingLoop:
    """Fine-tunes a :class:`SentimentModel` in place: cross-entropy plus the given loss terms.

    ``fit`` says how (epochs, learning rate, batches, early stopping, time
    budget, seed); ``trainable`` which parameters train (default: every
    parameter, at the ``full`` mode's default learning rate). Every term's
    ``setup`` runs before the first step and its ``teardown`` after the last.
    """

    def __init__(
        self,
        model: SentimentModel,
        fit: FitSettings,
        *,
        terms: Sequence[LossTerm] = (),
        trainable: Trainable | None = None,
        progress: bool = True,
        group_by_length: bool = False,
        interrupt: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.settings = fit
        self.terms = list(terms)
        chosen = trainable.parameters if trainable is not None else model.model.parameters()
        self.parameters = [p for p in chosen if p.requires_grad]
        self.learning_rate = fit.learning_rate_for(trainable.mode if trainable is not None else "full")
        self.progress = progress
        self.group_by_length = group_by_length  # batches of similar lengths (less padding), in random order
        self.interrupt = interrupt  # checked every step: True abandons training (TrainingInterrupted)

    def fit(self, train: Sequence[Example], validation: Sequence[Example] = ()) -> TrainResult:
        """Train for ``epochs``; with a validation split, keep the weights of the best epoch."""
        try:
            for term in self.terms:
                term.setup(self.model)
            return self._fit(train, validation)
        finally:
            for term in reversed(self.terms):
                term.teardown()

    def _fit(self, train: Sequence[Example], validation: Sequence[Example]) -> TrainResult:
        s = self.settings
        seed_everything(s.seed)
        net = self.model.model
        device = self.model.device
        generator = torch.Generator().manual_seed(s.seed)
        rank, world = _distributed()
        # Data-parallel (torchrun): every rank draws the same permutation and takes its share of it.
        forward = (
            net
            if world == 1
            else torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None
            )
        )
        per_rank = len(train) // world
        steps = s.epochs * max(1, -(-per_rank // s.batch_size))
        want_attentions = any(term.needs_attentions for term in self.terms)
        optimizer = torch.optim.AdamW(self.parameters, lr=self.learning_rate, weight_decay=s.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, int(steps * s.warmup_fraction), steps)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )
        weights = class_weights([e.label for e in train], s.class_weighting, len(LABELS))
        weights = weights.to(device) if weights is not None else None
        result, best_score, best_state = TrainResult(best_epoch=s.epochs - 1), -1.0, None
        started = time.perf_counter()
        bar = tqdm(total=steps, desc="train", unit="step", disable=not self.progress or rank != 0)
        stale = 0
        for epoch in range(s.epochs):
            net.train()
            order = torch.randperm(len(train), generator=generator).tolist()
            if self.group_by_length:
                order = length_grouped(order, [len(e.text) for e in train], s.batch_size, generator)
            order = order[rank * per_rank : (rank + 1) * per_rank] if world > 1 else order
            total, seen = 0.0, 0
            term_totals = {term.name: 0.0 for term in self.terms}
            for start in range(0, len(order), s.batch_size):
                batch = [train[i] for i in order[start : start + s.batch_size]]
                enc = self.model.encode([e.text for e in batch])
                labels = torch.tensor([e.label for e in batch], device=device)
                with autocast:
                    outputs = forward(**enc, output_attentions=True) if want_attentions else forward(**enc)
                    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weights)
                    step = Step(model=self.model, encoded=enc, labels=labels, examples=batch, outputs=outputs)
                    for term in self.terms:
                        value = term(step)
                        loss = loss + value
                        term_totals[term.name] += float(value.detach()) * len(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
                optimizer.step()
                schedule.step()
                total += loss.item() * len(batch)
                seen += len(batch)
                result.steps += 1
                result.samples += len(batch)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                if s.time_budget_s is not None and time.perf_counter() - started > s.time_budget_s:
                    result.stopped = "time_budget"
                    break
                if self.interrupt is not None and self.interrupt():
                    bar.close()
                    raise TrainingInterrupted(f"training interrupted at epoch {epoch}, step {result.steps}")
            record = {"epoch": epoch, "train_loss": total / max(1, seen)}
            record.update({f"train_{name}": v / max(1, seen) for name, v in term_totals.items()})
            if validation:
                metrics = evaluate(self.model, validation)
                score = _from_rank0(metrics["macro_f1"], world)  # every rank takes the same decisions
                record.update(val_accuracy=metrics["accuracy"], val_macro_f1=score)
                if score > best_score:
                    best_score, result.best_epoch, stale = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    stale += 1
            result.history.append(record)
            log.info("epoch %d: %s", epoch, record)
            if result.stopped is None and s.patience is not None and stale >= s.patience and epoch < s.epochs - 1:
                result.stopped = "early_stopping"
            if result.stopped is not None:
                result.best_epoch = result.best_epoch if best_state is not None else epoch
                break
        bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        result.seconds = time.perf_counter() - started
        result.samples_per_s = result.samples * world / result.seconds if result.seconds else 0.0
        return result


def class_weights(labels: Sequence[int], how: str, classes: int) -> torch.Tensor | None:
    """Cross-entropy weights per class from the label counts (``none``: ``None``).

    ``balanced`` weighs each class by the inverse of its count, ``sqrt`` by the
    inverse square root (a milder correction); classes absent from ``labels``
    get weight 0. Normalised so that the mean weight over the examples is 1, so
    the loss keeps its scale and the learning rate its meaning.
    """
    if how == "none" or not labels:
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(np.float64)
    power = {"balanced": 1.0, "sqrt": 0.5}[how]
    raw = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0) ** power, 0.0)
    raw *= counts.sum() / float((raw * counts).sum())
    return torch.tensor(raw, dtype=torch.float32)


def length_grouped(
    order: list[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator, window: int = 32
) -> list[int]:
    """Reorder a shuffled ``order`` so each batch holds texts of similar length, batches in random order.

    Windows of ``window`` batches are sorted by length and cut into batches;
    then the batches are shuffled, so every example is still seen once per epoch.
    """
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [i for b in shuffled for i in batches[b]]


def _distributed() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _from_rank0(value: float, world: int) -> float:
    """Rank 0's ``value`` on every rank (a no-op without data parallelism)."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return float(box[0])
