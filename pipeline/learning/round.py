"""One adaptation round: copy the champion, train it with the AET objective, merge, and re-estimate the Fisher.

This is the machine-learning core shared by the trainer role (pipeline/roles/trainer.py)
and ``aet bench adapt`` (pipeline/bench/adapt.py); it touches neither the bus
nor the database. The training loop is :class:`aet.pipeline.learning.loop.Trainer`; the
objective's extra terms come from pipeline/learning/objective.py and what trains from
pipeline/learning/trainable.py.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aet.pipeline.config import RetrainSettings, TrainSettings
from aet.pipeline.learning.loop import Example, Trainer, TrainResult
from aet.pipeline.learning.objective import (
    AttentionDistillation,
    ElasticAnchor,
    Tensors,
    estimate_fisher,
    merge_fisher,
    restore_attention,
    use_eager_attention,
)
from aet.pipeline.learning.trainable import (
    disable_attention_dropout,
    merge_lora,
    prepare,
    restore_dropout,
    trained_names,
)
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)
DEFAULT_LEARNING_RATE = {"full": 1e-4, "attention": 5e-4, "lora": 2e-3}


@dataclass(frozen=True)
class Objective:
    """Which terms of the AET objective are on, and their weights."""

    replay: bool = True
    lambda_ewc: float = 1.0
    lambda_att: float = 1.0

    def describe(self) -> str:
        parts = ["ce"] + (["replay"] if self.replay else [])
        parts += [f"ewc({self.lambda_ewc:g})"] if self.lambda_ewc > 0 else []
        parts += [f"att({self.lambda_att:g})"] if self.lambda_att > 0 else []
        return "+".join(parts)


@dataclass(frozen=True)
class AdaptConfig:
    """Everything one round needs besides the data (built from :class:`RetrainSettings`)."""

    mode: str = "attention"
    objective: Objective = field(default_factory=Objective)
    epochs: int = 2
    learning_rate: float | None = None
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    patience: int | None = 1
    time_budget_s: float | None = None
    replay_ratio: float = 0.5
    fisher_gamma: float = 0.9
    fisher_samples: int = 128
    fisher_batch_size: int = 8
    estimate_fisher: bool = True
    group_by_length: bool = True
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    seed: int = 13

    @classmethod
    def from_settings(cls, s: RetrainSettings, **overrides: Any) -> AdaptConfig:
        base = cls(
            mode=s.mode,
            objective=Objective(replay=s.replay, lambda_ewc=s.lambda_ewc, lambda_att=s.lambda_att),
            epochs=s.epochs,
            learning_rate=s.learning_rate,
            batch_size=s.batch_size,
            weight_decay=s.weight_decay,
            warmup_fraction=s.warmup_fraction,
            patience=s.patience,
            time_budget_s=s.time_budget_s,
            replay_ratio=s.replay_ratio,
            fisher_gamma=s.fisher_gamma,
            fisher_samples=s.fisher_samples,
            fisher_batch_size=s.fisher_batch_size,
            lora_r=s.lora_r,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            seed=s.seed,
        )
        return replace(base, **overrides)

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.mode]

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.epochs,
            learning_rate=self.lr,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            warmup_fraction=self.warmup_fraction,
            seed=self.seed,
        )


@dataclass
class AdaptResult:
    """The adapted model (a plain checkpoint: LoRA merged) and what the round measured."""

    model: SentimentModel
    fisher: Tensors | None
    fisher_info: dict[str, Any]
    train: TrainResult
    trainable_parameters: int
    seconds: dict[str, float]
    counts: dict[str, int]
    config: AdaptConfig

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts for the registry and reports."""
        c = self.config
        return {
            "mode": c.mode,
            "objective": c.objective.describe(),
            "weights": {
                "replay": c.objective.replay,
                "lambda_ewc": c.objective.lambda_ewc,
                "lambda_att": c.objective.lambda_att,
            },
            "learning_rate": c.lr,
            "epochs": c.epochs,
            "batch_size": c.batch_size,
            "seed": c.seed,
            "best_epoch": self.train.best_epoch,
            "stopped": self.train.stopped,
            "history": self.train.history,
            "trainable_parameters": self.trainable_parameters,
            "samples_per_s": round(self.train.samples_per_s, 2),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "counts": self.counts,
            "fisher": self.fisher_info,
        }


def clone_model(model: SentimentModel, version: str) -> SentimentModel:
    """A trainable copy of ``model`` (same tokenizer, deep-copied weights) named ``version``."""
    return SentimentModel(
        model=copy.deepcopy(model.model),
        tokenizer=model.tokenizer,
        version=version,
        max_length=model.max_length,
        batch_size=model.batch_size,
    )


def replay_sample(replay: Sequence[Example], n_recent: int, ratio: float, seed: int) -> list[Example]:
    """At most ``ratio`` replay examples per recent one, drawn with ``seed`` (all of them when fewer)."""
    k = min(len(replay), int(math.ceil(ratio * n_recent)))
    return sorted(random.Random(seed).sample(list(replay), k), key=lambda e: (e.source, e.label, e.id, e.text))


def adapt(
    champion: SentimentModel,
    *,
    recent: Sequence[Example],
    validation: Sequence[Example] = (),
    replay: Sequence[Example] = (),
    champion_fisher: Tensors | None = None,
    config: AdaptConfig,
    version: str = "candidate",
    progress: bool = False,
    interrupt: Callable[[], bool] | None = None,
) -> AdaptResult:
    """Train a copy of ``champion`` on ``recent`` (+ replay) with the objective of ``config``.

    ``champion`` is not modified (its attention implementation is switched to
    eager for distillation and restored). ``champion_fisher`` is the Fisher
    stored with the champion; when it is missing and the elastic anchor is on,
    it is estimated now on the replay examples (the champion's older data).
    The returned model has LoRA merged and the returned Fisher is
    ``γ·F_champion + F_new``, ready to be saved with the new version.
    """
    if not recent:
        raise ValueError("an adaptation round needs recent labeled examples")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    obj = config.objective
    replayed = replay_sample(replay, len(recent), config.replay_ratio, config.seed) if obj.replay else []
    train = list(recent) + replayed
    # The Fisher covers the weights this mode trains: what this round anchors and the next one (same mode) will.
    names = trained_names(champion.model, config.mode)
    fisher_old, fisher_source = champion_fisher, "stored with the champion" if champion_fisher is not None else None
    if obj.lambda_ewc > 0 and (fisher_old is None or not set(names) <= set(fisher_old)):
        t = time.perf_counter()
        basis = list(replay) or list(recent)
        missing = names if fisher_old is None else [n for n in names if n not in fisher_old]
        estimated = estimate_fisher(
            champion,
            basis,
            samples=config.fisher_samples,
            batch_size=config.fisher_batch_size,
            seed=config.seed,
            names=missing,
        )
        fisher_old = {**(fisher_old or {}), **estimated}
        seconds["fisher_champion"] = time.perf_counter() - t
        fisher_source = f"estimated now on {'replay' if replay else 'recent'} examples"

    student = clone_model(champion, version)
    net = student.model
    trainable = prepare(
        net, config.mode, lora_r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout
    )
    terms: list[tuple[str, Any]] = []
    if obj.lambda_ewc > 0 and fisher_old is not None:
        anchor = dict(champion.model.named_parameters())
        terms.append(("ewc", ElasticAnchor(net, anchor, fisher_old, obj.lambda_ewc)))
    restore: list[Any] = []
    if obj.lambda_att > 0:
        # Replay in the task loss: distil on the replay rows of each batch. Without it, the term
        # draws its own replay inputs (as many per step as replay would have put in a batch).
        inputs = replayed if obj.replay else replay_sample(replay, len(recent), config.replay_ratio, config.seed)
        own = 0 if obj.replay else max(1, round(config.batch_size * config.replay_ratio / (1 + config.replay_ratio)))
        if not inputs:
            log.warning("attention distillation is on but there are no replay inputs: the term stays zero")
        teacher_impl = use_eager_attention(champion.model)
        student_impl = use_eager_attention(net)
        dropped = disable_attention_dropout(net)
        restore = [teacher_impl, student_impl, dropped]
        terms.append(
            ("att", AttentionDistillation(champion.model, inputs, obj.lambda_att, own_batch=own, seed=config.seed))
        )
    try:
        t = time.perf_counter()
        result = Trainer(
            student,
            config.train_settings(),
            loss_terms=terms,
            parameters=trainable.parameters,
            progress=progress,
            patience=config.patience,
            time_budget_s=config.time_budget_s,
            group_by_length=config.group_by_length,
            interrupt=interrupt,
        ).fit(train, validation)
        seconds["train"] = time.perf_counter() - t
    finally:
        if restore:
            teacher_impl, student_impl, dropped = restore
            restore_attention(champion.model, teacher_impl)
            restore_attention(net, student_impl)
            restore_dropout(dropped)
        for p in champion.model.parameters():
            p.requires_grad_(True)
    if config.mode == "lora":
        merge_lora(net)
    for p in net.parameters():
        p.requires_grad_(True)
    net.eval()

    fisher, info = None, {"gamma": config.fisher_gamma, "champion_fisher": fisher_source}
    if config.estimate_fisher:
        t = time.perf_counter()
        fisher_new = estimate_fisher(
            student,
            train,
            samples=config.fisher_samples,
            batch_size=config.fisher_batch_size,
            seed=config.seed + 1,
            names=names,
        )
        fisher = merge_fisher(fisher_old, fisher_new, config.fisher_gamma)
        seconds["fisher_new"] = time.perf_counter() - t
        info.update(
            samples=min(config.fisher_samples, len(train)),
            batch_size=config.fisher_batch_size,
            merged=fisher_old is not None,
            tensors=len(fisher),
            values=int(sum(t.numel() for t in fisher.values())),
        )
    seconds["round"] = time.perf_counter() - started
    counts = {"recent": len(recent), "replay": len(replayed), "train": len(train), "validation": len(validation)}
    return AdaptResult(
        model=student,
        fisher=fisher,
        fisher_info=info,
        train=result,
        trainable_parameters=trainable.count,
        seconds=seconds,
        counts=counts,
        config=config,
    )
