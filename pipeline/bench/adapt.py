"""``aet bench adapt``: does the AET objective adapt to a new corpus without forgetting the old one?

A champion is fine-tuned on one real corpus (the "old" domain) and then
adapted on another (the "new" domain) with each objective, in each training
mode, from the same champion and the same seeded data:

- ``plain``: cross-entropy on the new examples alone (plain fine-tuning)
- ``replay``: + replay of a class-balanced reservoir sample of old examples in the cross-entropy
- ``ewc``: plain + the elastic anchor (Fisher of the champion on old examples)
- ``att``: plain + attention distillation on old (replay) inputs, which are not in the cross-entropy
- ``aet``: the full objective: replay + elastic anchor + attention distillation

Each run reports new-domain and old-domain macro-F1 on test splits that are
never trained on (the new corpus's own test/valid split, or a stable hash
split; the old corpus's stable-hash held-out share), training seconds, the
whole round's seconds (training + Fisher re-estimation) and the number of
trainable parameters. ``aet bench gpu-train`` times one round alone, in bf16
on CUDA when there is a GPU, in float32 on the CPU otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aet.pipeline.bench.corpora import TWINS, corpus_path, example, load_corpus, split_corpus, subsample
from aet.pipeline.bench.data import EXAMPLES, shared_data_dir
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.config import FitSettings, ObjectiveSettings, RoundSettings, Settings
from aet.pipeline.learning.examples import Example, stratified_split
from aet.pipeline.learning.loop import TrainingLoop, evaluate, seed_everything
from aet.pipeline.learning.round import adapt
from aet.pipeline.learning.trainable import MODES
from aet.pipeline.model import SentimentModel, pick_device
from aet.pipeline.records import LABELS

log = logging.getLogger(__name__)
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"replay": False, "ewc": False, "att": False},
    "replay": {"replay": True, "ewc": False, "att": False},
    "ewc": {"replay": False, "ewc": True, "att": False},
    "att": {"replay": False, "ewc": False, "att": True},
    "aet": {"replay": True, "ewc": True, "att": True},
}


def _label_mix(examples: Sequence[Example]) -> dict[str, int]:
    return {label: sum(e.label == i for e in examples) for i, label in enumerate(LABELS)}


def train_champion(
    examples: Sequence[Example], *, epochs: int, seed: int, cache: Path | None, max_length: int, progress: bool
) -> tuple[SentimentModel, dict[str, Any]]:
    """Fine-tune MiniLM (fresh head, every weight) on the old corpus; cached by a digest of data and settings."""
    recipe = ["minilm", "lr=1e-4", "batch=16", "grouped", epochs, seed, max_length]
    digest = hashlib.sha256(json.dumps([[e.id, e.label] for e in examples] + recipe).encode())
    key = digest.hexdigest()[:16]
    path = cache / f"champion-{key}" if cache is not None else None
    if path is not None and (path / "config.json").is_file():
        model = SentimentModel.load(path, version="champion", max_length=max_length, device="cpu", new_head=False)
        facts = json.loads((path / "bench-facts.json").read_text()) if (path / "bench-facts.json").is_file() else {}
        return model, {**facts, "cached": str(path)}
    seed_everything(seed)
    model = SentimentModel.load("minilm", version="champion", max_length=max_length, device="cpu", new_head=True)
    train, val = stratified_split(examples, 0.1, seed)
    started = time.perf_counter()
    result = TrainingLoop(
        model,
        FitSettings(epochs=epochs, learning_rate=1e-4, batch_size=16, seed=seed),
        progress=progress,
        group_by_length=True,
    ).fit(train, val)
    facts = {
        "train_seconds": round(time.perf_counter() - started, 1),
        "n_train": len(train),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "history": result.history,
    }
    if path is not None:
        model.save(path)
        (path / "bench-facts.json").write_text(json.dumps(facts))
    return model, facts


def _objective(config: str, lambda_ewc: float, lambda_att: float) -> ObjectiveSettings:
    c = CONFIGS[config]
    return ObjectiveSettings(
        rehearsal=c["replay"], lambda_ewc=lambda_ewc if c["ewc"] else 0.0, lambda_att=lambda_att if c["att"] else 0.0
    )


def adapt_benchmark(
    *,
    old: str = "financial_phrasebank",
    new: str = "stockemotions",
    data_dir: Path | None = None,
    n_old_train: int | None = 2000,
    n_new: int = 600,
    n_test: int | None = 400,
    replay_capacity: int = 600,
    modes: Sequence[str] = MODES,
    configs: Sequence[str] = tuple(CONFIGS),
    epochs: int = 2,
    champion_epochs: int = 2,
    lambda_ewc: float | None = None,
    lambda_att: float | None = None,
    base: RoundSettings | None = None,
    max_length: int = 64,
    seed: int = 13,
    out: Path = Path("bench-results"),
    cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every (mode, objective) pair from one champion; write ``adapt.json`` and ``adapt.png`` under ``out``."""
    if {old, new} in TWINS or old == new:
        raise ValueError(f"{old} and {new} share texts (see the shared data README): pick independent corpora")
    unknown = [m for m in modes if m not in MODES] + [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown modes/configs {unknown}: modes {MODES}, configs {tuple(CONFIGS)}")
    torch.manual_seed(seed)
    base = base or RoundSettings(epochs=epochs, seed=seed, time_budget_s=None)
    lambda_ewc = base.lambda_ewc if lambda_ewc is None else lambda_ewc
    lambda_att = base.lambda_att if lambda_att is None else lambda_att
    started = time.perf_counter()

    old_train_all, old_test_all, old_how = split_corpus(load_corpus(corpus_path(old, data_dir)), use_given_split=False)
    new_train_all, new_test_all, new_how = split_corpus(load_corpus(corpus_path(new, data_dir)), use_given_split=True)
    old_train = subsample(old_train_all, n_old_train, seed)
    old_test = subsample(old_test_all, n_test, seed + 1)
    new_pool = subsample(new_train_all, n_new, seed + 2)
    new_test = subsample(new_test_all, n_test, seed + 3)
    recent_train, recent_val = stratified_split(new_pool, 0.1, seed)

    champion, champion_facts = train_champion(
        old_train,
        epochs=champion_epochs,
        seed=seed,
        cache=cache if cache is not None else out / "cache",
        max_length=max_length,
        progress=progress,
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings()
        retrain = settings.retrain.model_copy(update={"reservoir_per_source": replay_capacity, "seed": seed})
        scratch = scratch_app(settings, Path(tmp), retrain=retrain)
        try:
            reservoir = scratch.reservoir()
            reservoir.add(old_train)
            replay_all = reservoir.examples()
        finally:
            scratch.close()
    replay_train = replay_all

    def score(model: SentimentModel) -> dict[str, Any]:
        new_r, old_r = evaluate(model, new_test), evaluate(model, old_test)
        return {
            "new_f1": new_r["macro_f1"],
            "old_f1": old_r["macro_f1"],
            "new_accuracy": new_r["accuracy"],
            "old_accuracy": old_r["accuracy"],
            "new_predicted": new_r["predicted"],
            "old_predicted": old_r["predicted"],
        }

    champ_scores = score(champion)
    from aet.pipeline.learning.fisher import estimate_fisher

    t = time.perf_counter()
    champion_fisher = estimate_fisher(
        champion, replay_train, samples=base.fisher_samples, batch_size=base.fisher_batch_size, seed=seed
    )
    fisher_seconds = time.perf_counter() - t

    results = []
    for mode in modes:
        for config in configs:
            objective = _objective(config, lambda_ewc, lambda_att)
            switches = {
                "rehearsal": objective.rehearsal,
                "lambda_ewc": objective.lambda_ewc,
                "lambda_att": objective.lambda_att,
            }
            cfg = base.model_copy(update={"mode": mode, **switches})
            validation = recent_val  # early stopping on the new domain, as the trainer role does
            log.info("adapting: mode=%s objective=%s", mode, objective.describe())
            seed_everything(seed)
            r = adapt(
                champion,
                recent=recent_train,
                validation=validation,
                rehearsal=replay_train,
                champion_fisher=champion_fisher,
                settings=cfg,
                version=f"{mode}-{config}",
                progress=progress,
            )
            scores = score(r.model)
            results.append(
                {
                    "mode": mode,
                    "config": config,
                    "objective": objective.describe(),
                    "new_f1": round(scores["new_f1"], 4),
                    "old_f1": round(scores["old_f1"], 4),
                    "new_accuracy": round(scores["new_accuracy"], 4),
                    "old_accuracy": round(scores["old_accuracy"], 4),
                    "new_predicted": scores["new_predicted"],
                    "old_predicted": scores["old_predicted"],
                    "new_gain": round(scores["new_f1"] - champ_scores["new_f1"], 4),
                    "old_drop": round(champ_scores["old_f1"] - scores["old_f1"], 4),
                    "train_seconds": round(r.seconds["train"], 1),
                    "round_seconds": round(r.seconds["round"], 1),
                    "trainable_parameters": r.trainable_parameters,
                    "samples_per_s": round(r.train.samples_per_s, 1),
                    "learning_rate": cfg.learning_rate_used,
                    "best_epoch": r.train.best_epoch,
                    "stopped": r.train.stopped,
                    "examples": r.counts,
                    "history": r.train.history,
                }
            )
            log.info("%s", {k: v for k, v in results[-1].items() if k != "history"})
            del r

    report = {
        "benchmark": "adapt",
        "old_corpus": old,
        "new_corpus": new,
        "data": {
            "old_split": old_how,
            "new_split": new_how,
            "old_train_used_for_champion": len(old_train),
            "old_train_available": len(old_train_all),
            "old_test": len(old_test),
            "old_test_available": len(old_test_all),
            "new_train": len(recent_train),
            "new_validation": len(recent_val),
            "new_available": len(new_train_all),
            "new_test": len(new_test),
            "new_test_available": len(new_test_all),
            "replay_reservoir": len(replay_all),
            "replay_train": len(replay_train),
            "label_mix": {
                "old_test": _label_mix(old_test),
                "new_train": _label_mix(recent_train),
                "new_test": _label_mix(new_test),
                "replay": _label_mix(replay_all),
            },
            "note": "subsets drawn with fixed seeds to keep the run short on a CPU; test splits are never trained on. "
            "macro-F1 averages over the classes in the truth or the predictions (as scikit-learn does), "
            "so on a corpus without neutrals a single neutral prediction adds a class with F1 = 0; "
            "accuracy and the predicted label mix are reported alongside",
        },
        "settings": {
            "epochs": base.epochs,
            "batch_size": base.batch_size,
            "replay_ratio": base.rehearsal_ratio,
            "lambda_ewc": lambda_ewc,
            "lambda_att": lambda_att,
            "fisher_samples": base.fisher_samples,
            "fisher_batch_size": base.fisher_batch_size,
            "fisher_gamma": base.fisher_gamma,
            "patience": base.patience,
            "lora_r": base.lora_r,
            "lora_alpha": base.lora_alpha,
            "max_length": max_length,
            "seed": seed,
            "champion_epochs": champion_epochs,
        },
        "environment": environment(),
        "champion": {
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in champ_scores.items()},
            "facts": champion_facts,
            "fisher_seconds": round(fisher_seconds, 1),
        },
        "results": results,
        "targets": _targets(champ_scores, results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    bars = {"champion new": champ_scores["new_f1"] * 100, "champion old": champ_scores["old_f1"] * 100}
    for row in results:
        bars[f"{row['mode']}/{row['config']} new"] = row["new_f1"] * 100
        bars[f"{row['mode']}/{row['config']} old"] = row["old_f1"] * 100
    unit = "macro-F1 (points) on the new / old domain's test split"
    write_report(report, out, "adapt", bar_chart(bars, unit, "aet bench adapt"))
    return report


def _targets(champ: dict[str, float], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, per mode: AET ≥ +10 new-domain points; AET's old-domain loss ≤ half plain's;
    a round under 60 s."""
    out: dict[str, Any] = {}
    by = {(r["mode"], r["config"]): r for r in results}
    for mode in sorted({r["mode"] for r in results}):
        aet, plain = by.get((mode, "aet")), by.get((mode, "plain"))
        if aet is None:
            continue
        entry: dict[str, Any] = {
            "aet_new_gain_points": round(100 * aet["new_gain"], 1),
            "new_gain_at_least_10_points": aet["new_gain"] >= 0.10,
            "aet_round_seconds": aet["round_seconds"],
            "round_under_60s": aet["round_seconds"] < 60,
        }
        if plain is not None:
            entry["plain_old_drop_points"] = round(100 * plain["old_drop"], 1)
            entry["aet_old_drop_points"] = round(100 * aet["old_drop"], 1)
            entry["old_loss_at_most_half_of_plain"] = aet["old_drop"] <= max(0.0, plain["old_drop"]) / 2
        out[mode] = entry
    return out


def gpu_train_benchmark(
    *,
    data: Path | None = None,
    n: int = 1000,
    mode: str = "attention",
    epochs: int = 1,
    device: str = "auto",
    max_length: int = 64,
    seed: int = 13,
    out: Path = Path("bench-results"),
    progress: bool = True,
) -> dict[str, Any]:
    """Time one adaptation round (full AET objective) on ``n`` labeled examples: bf16 autocast on CUDA, float32 on CPU.

    The model is MiniLM with a fresh head (throughput does not depend on what it knows); replay examples are
    taken from the same file. Reports samples/s and peak memory.
    """
    path = data
    if path is None:
        shared = shared_data_dir()
        default = (
            (shared / "twitter_financial_news_sentiment" / "twitter_financial_news_sentiment.jsonl") if shared else None
        )
        path = default if default is not None and default.is_file() else EXAMPLES / "train.jsonl"
    rows = load_corpus(Path(path))
    examples = subsample([example(r) for r in rows], n + n // 2, seed)
    recent, replay = examples[:n], examples[n:]
    target = pick_device(device)
    seed_everything(seed)
    model = SentimentModel.load("minilm", version="gpu-check", max_length=max_length, device="cpu", new_head=True)
    net: torch.nn.Module = model.model
    net.to(target)  # float32 weights; bf16 comes from autocast on CUDA
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    config = RoundSettings.model_validate(
        {"mode": mode, "epochs": epochs, "patience": None, "time_budget_s": None, "seed": seed}
    )
    r = adapt(model, recent=recent, rehearsal=replay, settings=config, version="gpu-check", progress=progress)
    if target.type == "cuda":
        peak = {
            "cuda_peak_allocated_mib": round(torch.cuda.max_memory_allocated(target) / 2**20, 1),
            "cuda_peak_reserved_mib": round(torch.cuda.max_memory_reserved(target) / 2**20, 1),
        }
    else:
        peak = {"process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    report = {
        "benchmark": "gpu-train",
        "device": str(target),
        "precision": "bf16 autocast (float32 weights)" if target.type == "cuda" else "float32",
        "data": str(path),
        "examples": r.counts,
        "mode": mode,
        "objective": config.describe(),
        "epochs": epochs,
        "max_length": max_length,
        "trainable_parameters": r.trainable_parameters,
        "samples_per_s": round(r.train.samples_per_s, 1),
        "seconds": {k: round(v, 2) for k, v in r.seconds.items()},
        "peak_memory": peak,
        "environment": environment(),
        "gpu": torch.cuda.get_device_name(target) if target.type == "cuda" else None,
    }
    bars = {"samples/s": r.train.samples_per_s}
    write_report(report, out, "gpu-train", bar_chart(bars, "training samples/s", "aet bench gpu-train"))
    return report
