"""A tiny BERT sentiment classifier for fast, seeded training tests (no pretrained weights needed).

Two layers, hidden size 32, the real MiniLM tokenizer (so texts tokenize as
in production), eager attention, labels negative/neutral/positive.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from aet.pipeline.learning.examples import Example
from aet.pipeline.model import SentimentModel, resolve_backbone
from aet.pipeline.records import LABELS

POSITIVE = ["soars", "beats estimates", "record profit", "upgraded", "surges", "strong growth", "rallies"]
NEGATIVE = ["plunges", "misses estimates", "heavy loss", "downgraded", "slumps", "layoffs", "crashes"]
NEUTRAL = ["holds meeting", "publishes report", "names director", "schedules call", "files notice", "opens office"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne"]


def tiny_model(
    seed: int = 0, version: str = "tiny", hidden_size: int = 32, intermediate_size: int = 64
) -> SentimentModel:
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=intermediate_size,
        max_position_embeddings=64,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    net = BertForSequenceClassification(config)
    net.set_attn_implementation("eager")
    net.eval()
    return SentimentModel(model=net, tokenizer=tokenizer, version=version, max_length=32, batch_size=32)


def register_tiny(
    app: Any, *, seed: int = 0, status: str = "champion", info: dict[str, Any] | None = None, **model_kw: int
) -> Any:
    """Save a tiny model as the registry's next version (a sealed artifact) and register it."""
    version = app.registry.next_version()
    staged = app.artifacts.stage()
    tiny_model(seed, **model_kw).save(staged)
    path, digest = app.artifacts.commit(staged, version)
    return app.registry.register(
        version=version,
        status=status,
        artifact_path=str(path.resolve()),
        sha256=digest,
        backbone="tiny-bert",
        labels=list(LABELS),
        info=info,
    )


def synthetic_examples(n: int, seed: int = 0, source: str = "news", prefix: str = "") -> list[Example]:
    """Labeled headlines whose sentiment is carried by a phrase, with distinct texts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 3
        phrase = rng.choice((NEGATIVE, NEUTRAL, POSITIVE)[label])
        text = f"{prefix}{rng.choice(COMPANIES)} {phrase} in quarter {i}"
        out.append(Example(text=text, label=label, source=source, id=f"{source}-{prefix}{seed}-{i}"))
    return out
