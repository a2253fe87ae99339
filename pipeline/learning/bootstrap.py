"""Bootstrapping the first champion: fine-tune the configured backbone, with a fresh 3-label head, on labeled data.

Every weight trains (the ``full`` mode) with plain cross-entropy under
``settings.train``; the adaptation rounds that follow start from this model.
"""

from __future__ import annotations

from pathlib import Path

from aet.pipeline.config import Settings
from aet.pipeline.learning.examples import check_trainable, load_examples, stratified_split
from aet.pipeline.learning.loop import TrainingLoop, evaluate, seed_everything
from aet.pipeline.model import SentimentModel


def train_bootstrap_model(
    settings: Settings, data: Path, version: str, progress: bool = True
) -> tuple[SentimentModel, dict[str, object]]:
    """Fine-tune the configured backbone with a fresh 3-label head on ``data``.

    Returns the model and the metrics and facts to register with it.
    """
    fit = settings.train
    examples = load_examples(data)
    check_trainable(examples)
    train, val = stratified_split(examples, fit.validation_fraction, fit.seed)
    seed_everything(fit.seed)
    model = SentimentModel.load(
        settings.model.backbone,
        version=version,
        max_length=settings.model.max_length,
        batch_size=settings.model.batch_size,
        device=settings.model.device,
        new_head=True,
    )
    loop = TrainingLoop(model, fit, progress=progress)
    result = loop.fit(train, val)
    info = {
        "trained_on": str(Path(data).resolve()),
        "n_train": len(train),
        "n_validation": len(val),
        "train_settings": {**fit.model_dump(), "learning_rate": loop.learning_rate},
        "best_epoch": result.best_epoch,
        "history": result.history,
        "train_seconds": round(result.seconds, 2),
    }
    return model, {"validation": evaluate(model, val), "info": info}
