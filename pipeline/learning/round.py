"""One adaptation round: copy the champion, train it with the AET objective, merge, and re-estimate the Fisher.

This is the machine-learning core shared by the trainer role (pipeline/roles/trainer.py)
and ``aet bench adapt`` (pipeline/bench/adapt.py); it touches neither the bus
nor the database. A round is configured by one :class:`RoundSettings` (its fit,
its objective and what trains); the training loop is
:class:`aet.pipeline.learning.loop.TrainingLoop`, the objective's terms come from
pipeline/learning/objective.py and what trains from pipeline/learning/trainable.py.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aet.pipeline.config import RoundSettings
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.fisher import Tensors, estimate_fisher, merge_fisher
from aet.pipeline.learning.loop import TrainingLoop, TrainResult
from aet.pipeline.learning.objective import objective_terms, rehearsal_sample
from aet.pipeline.learning.trainable import merge_lora, prepare, trained_names
from aet.pipeline.model import SentimentModel


@dataclass
class RoundResult:
    """The adapted model (a plain checkpoint: LoRA merged) and what the round measured."""

    model: SentimentModel
    fisher: Tensors | None
    fisher_info: dict[str, Any]
    train: TrainResult
    trainable_parameters: int
    seconds: dict[str, float]
    counts: dict[str, int]
    settings: RoundSettings
    # What :func:`with_new_fisher` needs when the round skipped it: the champion's Fisher and the examples trained on.
    fisher_old: Tensors | None = None
    trained_on: Sequence[Example] = ()
    fisher_names: Sequence[str] = ()

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts for the registry and reports."""
        s = self.settings
        return {
            "mode": s.mode,
            "objective": s.describe(),
            "weights": {"rehearsal": s.rehearsal, "lambda_ewc": s.lambda_ewc, "lambda_att": s.lambda_att},
            "learning_rate": s.learning_rate_used,
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "seed": s.seed,
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


def adapt(
    champion: SentimentModel,
    *,
    recent: Sequence[Example],
    validation: Sequence[Example] = (),
    rehearsal: Sequence[Example] = (),
    champion_fisher: Tensors | None = None,
    settings: RoundSettings,
    version: str = "candidate",
    progress: bool = False,
    interrupt: Callable[[], bool] | None = None,
    new_fisher: bool = True,
) -> RoundResult:
    """Train a copy of ``champion`` on ``recent`` (+ rehearsal) with the objective of ``settings``.

    ``champion`` is not modified (its attention implementation is switched to
    eager for distillation and restored). ``champion_fisher`` is the Fisher
    stored with the champion; when it is missing and the elastic anchor is on,
    it is estimated now on the ``rehearsal`` examples (the champion's older data).
    The returned model has LoRA merged and, with ``new_fisher``, the returned
    Fisher is ``γ·F_champion + F_new``, ready to be saved with the new version
    (a data-parallel follower or a baseline that saves nothing skips it).
    """
    if not recent:
        raise ValueError("an adaptation round needs recent labeled examples")
    s = settings
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    drawn = rehearsal_sample(rehearsal, len(recent), s.rehearsal_ratio, s.seed)
    rehearsed = drawn if s.rehearsal else []
    train = list(recent) + rehearsed
    # The Fisher covers the weights this mode trains: what this round anchors and the next one (same mode) will.
    names = trained_names(champion.model, s.mode)
    fisher_old, fisher_source = champion_fisher, "stored with the champion" if champion_fisher is not None else None
    if s.lambda_ewc > 0 and (fisher_old is None or not set(names) <= set(fisher_old)):
        t = time.perf_counter()
        basis = list(rehearsal) or list(recent)
        missing = names if fisher_old is None else [n for n in names if n not in fisher_old]
        estimated = estimate_fisher(
            champion, basis, samples=s.fisher_samples, batch_size=s.fisher_batch_size, seed=s.seed, names=missing
        )
        fisher_old = {**(fisher_old or {}), **estimated}
        seconds["fisher_champion"] = time.perf_counter() - t
        fisher_source = f"estimated now on {'rehearsal' if rehearsal else 'recent'} examples"

    student = clone_model(champion, version)
    net = student.model
    trainable = prepare(net, s.mode, lora_r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout)
    terms = objective_terms(s, champion=champion, student=student, fisher=fisher_old, rehearsed=drawn)
    t = time.perf_counter()
    result = TrainingLoop(
        student,
        s,
        terms=terms,
        trainable=trainable,
        progress=progress,
        group_by_length=True,
        interrupt=interrupt,
    ).fit(train, validation)
    seconds["train"] = time.perf_counter() - t
    if s.mode == "lora":
        merge_lora(net)
    for p in net.parameters():
        p.requires_grad_(True)
    net.eval()

    seconds["round"] = time.perf_counter() - started
    counts = {"recent": len(recent), "rehearsal": len(rehearsed), "train": len(train), "validation": len(validation)}
    done = RoundResult(
        model=student,
        fisher=None,
        fisher_info={"gamma": s.fisher_gamma, "champion_fisher": fisher_source},
        train=result,
        trainable_parameters=trainable.count,
        seconds=seconds,
        counts=counts,
        settings=s,
        fisher_old=fisher_old,
        trained_on=train,
        fisher_names=names,
    )
    return with_new_fisher(done) if new_fisher else done


def with_new_fisher(result: RoundResult) -> RoundResult:
    """``result`` with the Fisher of its model on the round's examples, merged into the champion's (γ·F_old + F_new).

    A round computes it last, and the trainer only for a challenger the gate may keep: a rejected
    one never becomes a champion that the next round anchors to.
    """
    if result.fisher is not None or not result.trained_on:
        return result
    s = result.settings
    t = time.perf_counter()
    estimated = estimate_fisher(
        result.model,
        result.trained_on,
        samples=s.fisher_samples,
        batch_size=s.fisher_batch_size,
        seed=s.seed + 1,
        names=result.fisher_names,
    )
    fisher = merge_fisher(result.fisher_old, estimated, s.fisher_gamma)
    seconds = {**result.seconds, "fisher_new": time.perf_counter() - t}
    seconds["round"] = result.seconds["round"] + seconds["fisher_new"]
    info = {
        **result.fisher_info,
        "samples": min(s.fisher_samples, len(result.trained_on)),
        "batch_size": s.fisher_batch_size,
        "merged": result.fisher_old is not None,
        "tensors": len(fisher),
        "values": int(sum(v.numel() for v in fisher.values())),
    }
    return replace(result, fisher=fisher, fisher_info=info, seconds=seconds)
