"""Supervised fine-tuning of the sentiment model, and bootstrapping the first champion.

The loop is plain cross-entropy today. It takes extra loss terms (a callable
per term, each returning a scalar tensor) so that the elastic objective of
DESIGN.md — EWC anchor and attention distillation — plugs in without a second
training loop. Everything random is seeded; the best epoch on the validation
split is kept.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from aet.pipeline.config import Settings, TrainSettings
from aet.pipeline.evaluation import report
from aet.pipeline.model import SentimentModel
from aet.pipeline.records import LABELS

log = logging.getLogger(__name__)
LossTerm = Callable[[SentimentModel, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class StepContext:
    """What a loss term that sets ``wants_context = True`` receives as a fourth argument.

    ``batch`` is the step's examples in row order and ``outputs`` the model's
    output for them; it carries ``attentions`` when a term sets
    ``needs_attentions = True`` (the forward pass then runs with
    ``output_attentions=True``, once, for the task loss and every term).
    """

    batch: Sequence[Example]
    outputs: Any


class TrainingInterrupted(RuntimeError):
    """Training was abandoned on request (e.g. SIGTERM to the trainer); nothing it made is kept."""


class TrainingDataError(ValueError):
    """Training data that cannot train a 3-way classifier (missing, unreadable, too few, one class)."""


@dataclass(frozen=True)
class Example:
    """One labeled text."""

    text: str
    label: int
    source: str = "news"
    id: str = ""


def load_examples(path: Path) -> list[Example]:
    """Read labeled rows (``text``, ``label``; optional ``source``, ``id``) from a JSONL file.

    Unlabeled rows are skipped; a row with an unknown label or no text is an
    error naming the line, since silently training on a subset would hide it.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training data not found: {path}")
    out: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{path} line {i}: not JSON ({exc})") from exc
            label = row.get("label")
            if label in (None, ""):
                continue
            if label not in LABELS:
                raise TrainingDataError(f"{path} line {i}: unknown label {label!r} (expected one of {LABELS})")
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise TrainingDataError(f"{path} line {i}: no text")
            out.append(
                Example(
                    text=text, label=LABELS.index(label), source=row.get("source", "news"), id=str(row.get("id", i))
                )
            )
    return out


def check_trainable(examples: Sequence[Example], minimum: int = 16) -> None:
    """Refuse data that cannot train a meaningful classifier, saying why."""
    if len(examples) < minimum:
        raise TrainingDataError(f"only {len(examples)} labeled examples; at least {minimum} are needed")
    classes = {e.label for e in examples}
    if len(classes) < 2:
        raise TrainingDataError(
            f"all labeled examples have the label {LABELS[classes.pop()]!r}; need at least two classes"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stratified_split(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (train, validation) keeping each class's share, deterministically for a seed."""
    rng = random.Random(seed)
    train, val = [], []
    for c in range(len(LABELS)):
        group = [e for e in examples if e.label == c]
        rng.shuffle(group)
        k = int(round(len(group) * fraction))
        val.extend(group[:k])
        train.extend(group[k:])
    rng.shuffle(train)
    return train, val


def evaluate(model: SentimentModel, examples: Sequence[Example]) -> dict[str, object]:
    """Accuracy and macro-F1 of ``model`` on ``examples``."""
    if not examples:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0}
    probs = model.predict_proba([e.text for e in examples])
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


class Trainer:
    """Fine-tunes a :class:`SentimentModel` in place on labeled examples."""

    def __init__(
        self,
        model: SentimentModel,
        settings: TrainSettings,
        loss_terms: Iterable[tuple[str, LossTerm]] = (),
        parameters: Iterable[torch.nn.Parameter] | None = None,
        progress: bool = True,
        patience: int | None = None,
        time_budget_s: float | None = None,
        group_by_length: bool = False,
        interrupt: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.loss_terms = list(loss_terms)
        self.parameters = [
            p for p in (parameters if parameters is not None else model.model.parameters()) if p.requires_grad
        ]
        self.progress = progress
        self.patience = patience  # stop after this many epochs without a validation gain (None: run every epoch)
        self.time_budget_s = time_budget_s  # stop (after validating) once training has run this long
        self.group_by_length = group_by_length  # batches of similar lengths (less padding), in random order
        self.interrupt = interrupt  # checked every step: True abandons training (TrainingInterrupted)

    def fit(self, train: Sequence[Example], validation: Sequence[Example] = ()) -> TrainResult:
        """Train for ``epochs``; with a validation split, keep the weights of the best epoch."""
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
        want_attentions = any(getattr(t, "needs_attentions", False) for _, t in self.loss_terms)
        optimizer = torch.optim.AdamW(self.parameters, lr=s.learning_rate, weight_decay=s.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, int(steps * s.warmup_fraction), steps)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )
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
            term_totals = {name: 0.0 for name, _ in self.loss_terms}
            for start in range(0, len(order), s.batch_size):
                batch = [train[i] for i in order[start : start + s.batch_size]]
                enc = self.model.encode([e.text for e in batch])
                labels = torch.tensor([e.label for e in batch], device=device)
                with autocast:
                    outputs = forward(**enc, output_attentions=True) if want_attentions else forward(**enc)
                    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
                    for name, term in self.loss_terms:
                        if getattr(term, "wants_context", False):
                            value = term(self.model, enc, labels, StepContext(batch, outputs))
                        else:
                            value = term(self.model, enc, labels)
                        loss = loss + value
                        term_totals[name] += float(value.detach()) * len(batch)
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
                if self.time_budget_s is not None and time.perf_counter() - started > self.time_budget_s:
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
            if result.stopped is None and self.patience is not None and stale >= self.patience and epoch < s.epochs - 1:
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


def train_bootstrap_model(
    settings: Settings, data: Path, version: str, progress: bool = True
) -> tuple[SentimentModel, dict[str, object]]:
    """Fine-tune the configured backbone with a fresh 3-label head on ``data``.

    Returns the model and the metrics and facts to register with it.
    """
    examples = load_examples(data)
    check_trainable(examples)
    train, val = stratified_split(examples, settings.train.validation_fraction, settings.train.seed)
    seed_everything(settings.train.seed)
    model = SentimentModel.load(
        settings.model.backbone,
        version=version,
        max_length=settings.model.max_length,
        batch_size=settings.model.batch_size,
        device=settings.model.device,
        new_head=True,
    )
    result = Trainer(model, settings.train, progress=progress).fit(train, val)
    info = {
        "trained_on": str(Path(data).resolve()),
        "n_train": len(train),
        "n_validation": len(val),
        "train_settings": settings.train.model_dump(),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "train_seconds": round(result.seconds, 2),
    }
    return model, {"validation": evaluate(model, val), "info": info}
