"""Replay scenarios: phases of real corpora in a fixed order, with seeded labels and a virtual clock.

A scenario file (YAML) names the phases, each a corpus of ``../shared/data``
and how many of its messages to stream, the share of messages that get a
label and how many messages later the label arrives, and the seed. Building
it gives a :class:`Stream`:

- the **bootstrap** set: labeled examples from the first phase's train split,
  the only data the bootstrap champion is trained on;
- the **stream**: each phase's messages, drawn from that corpus's train split
  without overlap (with the bootstrap set or with an earlier phase on the same
  corpus), with virtual event times ``interval_s`` apart;
- the **labels**: a seeded ``label_fraction`` of the messages, due
  ``label_delay`` messages after their own (event time drives the delay);
- one **test set** per corpus, from its test split (or a stable hash split),
  never streamed or trained on.

``quick`` holds overrides for ``--quick`` (smaller phases for CI).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aet.pipeline.bench.corpora import TWINS, corpus_path, example, load_corpus, split_corpus, subsample
from aet.pipeline.learning.examples import Example
from aet.pipeline.records import LABELS, Message

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
StrategyName = Literal["static", "river", "river-emb", "periodic", "aet", "oracle"]
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Phase(BaseModel):
    """One stretch of the stream: ``n`` messages of one corpus."""

    model_config = ConfigDict(extra="forbid")

    name: str
    corpus: str
    n: int = Field(ge=1)


class Scenario(BaseModel):
    """A scenario file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    seed: int = 13
    phases: list[Phase] = Field(min_length=1)
    bootstrap: int = Field(default=1500, ge=10, description="first-phase train examples the champion is trained on")
    source: Literal["news", "chat"] | None = Field(
        default=None,
        description="publish every message under this source (one feed whose "
        "language changes); default: each corpus's own source",
    )
    label_fraction: float = Field(default=0.3, gt=0, le=1)
    label_delay: int = Field(default=20, ge=0, description="messages between a message and its label")
    interval_s: float = Field(default=60.0, gt=0, description="virtual seconds between two messages")
    chunk: int = Field(default=32, ge=1, description="messages published per lock-step")
    n_test: int = Field(default=400, ge=10, description="test examples per corpus")
    window: int = Field(default=100, ge=10, description="labeled messages per prequential window (the plot)")
    mode: Literal["full", "attention", "lora"] = "attention"
    periodic_every: int = Field(default=300, ge=10, description="labels between two retrains of 'periodic'")
    oracle_epochs: int = Field(
        default=4,
        ge=1,
        description="most epochs of the oracle's offline fit (early stopping on validation keeps the best): "
        "an upper bound must be trained to convergence, one epoch was not",
    )
    strategies: list[StrategyName] = Field(default_factory=lambda: list(get_args(StrategyName)))
    settings: dict[str, Any] = Field(default_factory=dict, description="AET settings overrides (monitor, retrain...)")
    quick: dict[str, Any] = Field(default_factory=dict, description="overrides for --quick; 'phase_n' sizes phases")

    @model_validator(mode="after")
    def _independent(self) -> Scenario:
        corpora = {p.corpus for p in self.phases}
        for twins in TWINS:
            if twins <= corpora:
                raise ValueError(f"{sorted(twins)} share texts (see the shared data README): do not mix them")
        return self

    def quick_variant(self) -> Scenario:
        """The scenario with its ``quick`` overrides applied."""
        overrides = dict(self.quick)
        sizes = overrides.pop("phase_n", None)
        data = self.model_dump()
        data.update(overrides, quick={})
        if sizes is not None:
            if len(sizes) != len(self.phases):
                raise ValueError(f"quick.phase_n has {len(sizes)} sizes for {len(self.phases)} phases")
            data["phases"] = [{**p, "n": n} for p, n in zip(data["phases"], sizes, strict=True)]
        data["name"] = f"{self.name} (quick)"
        return Scenario.model_validate(data)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario from a YAML file, or by name from ``examples/scenarios``."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SCENARIOS / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
        raise FileNotFoundError(f"no scenario {name_or_path!r}: give a YAML file or one of {known}")
    return Scenario.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class StreamItem:
    """One streamed message, its phase and position, and its label if one will arrive."""

    index: int
    phase: int
    message: Message
    truth: int
    labeled: bool

    def example(self) -> Example:
        return Example(text=self.message.text, label=self.truth, source=self.message.source, id=self.message.id)


@dataclass
class Stream:
    """A built scenario: bootstrap set, stream, label schedule and test sets."""

    scenario: Scenario
    bootstrap: list[Example]
    items: list[StreamItem]
    tests: dict[str, list[Example]]
    phase_bounds: list[tuple[int, int]] = field(default_factory=list)  # [start, end) stream index per phase
    splits: dict[str, str] = field(default_factory=dict)

    def labels_due(self, start: int, end: int) -> list[StreamItem]:
        """Labeled items whose label arrives once messages [start, end) have been published."""
        delay = self.scenario.label_delay
        return [it for it in self.items[max(0, start - delay) : max(0, end - delay)] if it.labeled]

    def label_tail(self) -> list[StreamItem]:
        """Labels still due after the last message (the stream ends, the labels keep coming)."""
        n, delay = len(self.items), self.scenario.label_delay
        return [it for it in self.items[max(0, n - delay) :] if it.labeled]

    def phase_of(self, index: int) -> int:
        for k, (start, end) in enumerate(self.phase_bounds):
            if start <= index < end:
                return k
        raise IndexError(index)


def build_stream(scenario: Scenario, data_dir: Path | None = None, start: datetime = START) -> Stream:
    """Draw the bootstrap set, the phases' messages, the labels and the test sets, all seeded.

    Event times run from ``start``, ``interval_s`` apart.
    """
    seed = scenario.seed
    pools: dict[str, list[dict[str, Any]]] = {}
    tests: dict[str, list[Example]] = {}
    splits: dict[str, str] = {}
    for corpus in dict.fromkeys(p.corpus for p in scenario.phases):
        rows = load_corpus(corpus_path(corpus, data_dir))
        train, test, how = split_corpus(rows, use_given_split=True, salt="scenario-test")
        by_id = {str(r["id"]): r for r in rows}
        pool = [by_id[e.id] for e in train]
        random.Random(f"{seed}:{corpus}").shuffle(pool)
        pools[corpus] = pool
        tests[corpus] = subsample(test, scenario.n_test, seed)
        splits[corpus] = how
    first = scenario.phases[0].corpus
    boot_rows, pools[first] = pools[first][: scenario.bootstrap], pools[first][scenario.bootstrap :]
    bootstrap = [example(r) for r in boot_rows]
    rng = random.Random(seed)
    items: list[StreamItem] = []
    bounds = []
    for k, phase in enumerate(scenario.phases):
        pool = pools[phase.corpus]
        if len(pool) < phase.n:
            raise ValueError(
                f"phase {phase.name}: {phase.corpus} has {len(pool)} unused train messages, {phase.n} asked for"
            )
        rows, pools[phase.corpus] = pool[: phase.n], pool[phase.n :]
        first_index = len(items)
        for r in rows:
            i = len(items)
            message = Message(
                id=f"{phase.name}:{r['id']}",
                source=scenario.source or r.get("source") or "news",
                channel=phase.corpus,
                text=r["text"],
                ts=start + timedelta(seconds=i * scenario.interval_s),
                entities=_entities(r),
                meta={"phase": phase.name, "corpus": phase.corpus},
            )
            items.append(StreamItem(i, k, message, LABELS.index(r["label"]), rng.random() < scenario.label_fraction))
        bounds.append((first_index, len(items)))
    return Stream(scenario, bootstrap, items, tests, bounds, splits)


def _entities(r: dict[str, Any]) -> list[str]:
    given = r.get("entities") or r.get("entity") or []
    return [str(e) for e in (given if isinstance(given, list) else [given])]
