"""``aet bench recipe``: which training recipe reaches what a small, imbalanced labeled set allows?

The bootstrap of a champion and every adaptation round train through one loop
(pipeline/learning/loop.py), on a few hundred to a few thousand labels whose
classes are rarely balanced. This benchmark bootstraps the backbone (fresh
head, every weight) on ``n`` seeded train examples of one corpus with each
recipe variant — class weighting, epochs with early stopping, learning rate —
from the same seed and split, and reports each variant's validation macro-F1
per epoch (the best epoch is kept, as the loop does) and its macro-F1 and
accuracy on the corpus's own test split, which is never trained on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from aet.pipeline.bench.corpora import corpus_path, load_corpus, split_corpus, subsample
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.config import FitSettings
from aet.pipeline.learning.examples import stratified_split
from aet.pipeline.learning.loop import TrainingLoop, evaluate, seed_everything
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)

#: Each variant is a change to the bootstrap's FitSettings; ``default`` is the settings as they are.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "unweighted": {"class_weighting": "none"},
    "sqrt-weights": {"class_weighting": "sqrt"},
    "balanced": {"class_weighting": "balanced"},
    "epochs-8": {"epochs": 8, "patience": 2},
    "sqrt-epochs-8": {"class_weighting": "sqrt", "epochs": 8, "patience": 2},
    "balanced-epochs-8": {"class_weighting": "balanced", "epochs": 8, "patience": 2},
    "balanced-lr-2x": {"class_weighting": "balanced", "learning_rate": 2e-4},
}


def recipe_benchmark(
    *,
    base: FitSettings,
    corpus: str = "twitter_financial_news_sentiment",
    data_dir: Path | None = None,
    n: int = 1500,
    n_test: int = 1000,
    variants: list[str] | None = None,
    backbone: str = "minilm",
    max_length: int = 64,
    out: Path = Path("bench-results"),
    progress: bool = False,
) -> dict[str, Any]:
    """Bootstrap with each variant on the same data; validation curve, test macro-F1 and seconds per variant."""
    chosen = variants or list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: choose from {sorted(VARIANTS)}")
    train_rows, test_rows, how = split_corpus(load_corpus(corpus_path(corpus, data_dir)), use_given_split=True)
    examples = subsample(train_rows, n, base.seed)
    test = subsample(test_rows, n_test, base.seed)
    train, validation = stratified_split(examples, base.validation_fraction, base.seed)
    results: list[dict[str, Any]] = []
    for name in chosen:
        fit = base.model_copy(update=VARIANTS[name])
        seed_everything(fit.seed)
        model = SentimentModel.load(backbone, version=name, max_length=max_length, device="cpu", new_head=True)
        started = time.perf_counter()
        trained = TrainingLoop(model, fit, progress=progress, group_by_length=True).fit(train, validation)
        seconds = time.perf_counter() - started
        scores = evaluate(model, test)
        results.append(
            {
                "variant": name,
                "changes": VARIANTS[name],
                "test_macro_f1": round(scores["macro_f1"], 4),
                "test_accuracy": round(scores["accuracy"], 4),
                "best_epoch": trained.best_epoch,
                "stopped": trained.stopped,
                "validation_macro_f1": [round(h.get("val_macro_f1", 0.0), 4) for h in trained.history],
                "train_seconds": round(seconds, 1),
            }
        )
        log.info("recipe %s: %s", name, results[-1])
    counts = {label: sum(e.label == i for e in train) for i, label in enumerate(("negative", "neutral", "positive"))}
    report = {
        "benchmark": "recipe",
        "corpus": corpus,
        "split": how,
        "n_train": len(train),
        "n_validation": len(validation),
        "n_test": len(test),
        "train_labels": counts,
        "base": base.model_dump(mode="json"),
        "backbone": backbone,
        "environment": environment(),
        "results": results,
    }
    chart = bar_chart({r["variant"]: r["test_macro_f1"] for r in results}, "test macro-F1", f"recipe on {corpus}")
    write_report(report, out, "recipe", chart)
    return report
