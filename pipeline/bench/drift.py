"""``aet bench drift-detect``: detection delay and false alarms of each drift detector on the shared corpora.

Every message of the corpora is scored and embedded once by the champion (one
forward pass gives both; cached under ``--out`` by the champion's sha256), then
streams are replayed through :class:`aet.pipeline.drift.DriftEngine` — the same
code the monitor runs — with one detector at a time, the default combination,
and a trivial periodic trigger as the baseline:

- **switch**: ``n_pre`` shuffled news sentences (Financial PhraseBank) then
  ``n_post`` shuffled news-headline tweets (Twitter Financial News), both
  ``source=news``; the delay is counted in messages after the switch and, for
  the label-based detector, in labels of post-switch messages joined before
  the alarm. Labels come for a seeded ``label_fraction`` of the messages,
  ``label_delay`` messages late;
- **stationary**: each corpus shuffled; every event is a false alarm, reported
  per 10,000 messages.

Shuffling with a fixed seed per repeat makes every number reproducible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aet.pipeline.bench.data import EXAMPLES, shared_data_dir
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.drift import DEFAULT_DETECTORS, DETECTOR_CLASSES, SIGNAL_OF, DriftConfig, DriftEngine
from aet.pipeline.records import LABELS
from aet.pipeline.roles.monitor_embedding import sampled_for_embedding

log = logging.getLogger(__name__)
PRE, POST = "financial_phrasebank", "twitter_financial_news_sentiment"
STATIONARY = ("twitter_financial_news_sentiment", "stockemotions", "financial_phrasebank")
TARGETS = {"labeled_delay_max": 300, "unlabeled_delay_max": 1000, "false_alarms_per_10k_max": 1.0}


@dataclass
class Signals:
    """What the monitor sees of a corpus: ids, sources, probabilities, embeddings, true labels."""

    corpus: str
    ids: list[str]
    sources: list[str]
    probs: np.ndarray  # (n, 3)
    embeddings: np.ndarray  # (n, hidden) float32
    labels: np.ndarray  # (n,) index into LABELS

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: Sequence[int] | np.ndarray) -> Signals:
        idx = list(index)
        return Signals(
            self.corpus,
            [self.ids[i] for i in idx],
            [self.sources[i] for i in idx],
            self.probs[idx],
            self.embeddings[idx],
            self.labels[idx],
        )


def default_shared_dir() -> Path | None:
    """The shared data directory (see :func:`aet.pipeline.bench.data.shared_data_dir`), else ``shared/data`` next to
    the repository."""
    found = shared_data_dir()
    if found is not None:
        return found
    repo_sibling = Path(__file__).resolve().parents[3] / "shared" / "data"
    return repo_sibling if repo_sibling.is_dir() else None


def load_corpus(shared: Path, name: str, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of ``<shared>/<name>/<name>.jsonl``; with ``limit``, a seeded random subset of that size."""
    path = shared / name / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def trained_ids(champion: Any) -> set[str]:
    """Ids of the rows the champion was trained on (``info['trained_on']``): never streamed by the benchmark."""
    path = (champion.info or {}).get("trained_on")
    if not path or not Path(path).is_file():
        return set()
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            if "id" in row:
                ids.add(str(row["id"]))
    return ids


def score_and_embed(model: Any, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and mean-pooled embeddings in one forward pass per batch (length-sorted).

    The same numbers as ``model.predict_proba`` and ``model.embed``, for half the work.
    """
    import torch

    from aet.pipeline.model import mean_pool

    net = model.model
    hidden = int(net.config.hidden_size)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = np.empty((len(texts), 3), dtype=np.float32)
    embs = np.empty((len(texts), hidden), dtype=np.float32)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = model.encode([texts[i] for i in idx])
            out = net(**enc, output_hidden_states=True)
            probs[idx] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
            embs[idx] = mean_pool(out.hidden_states[-1], enc["attention_mask"]).cpu().numpy()
    net.train(was_training)
    return probs, embs


def signals_for(
    model: Any, rows: list[dict[str, Any]], corpus: str, cache: Path | None = None, cache_key: str = ""
) -> Signals:
    """Score and embed ``rows`` (or read them from ``cache``)."""
    ids = [str(r["id"]) for r in rows]
    digest = hashlib.sha256(("\x1f".join(ids) + cache_key).encode()).hexdigest()[:16]
    path = cache / f"{corpus}-{digest}.npz" if cache is not None else None
    if path is not None and path.is_file():
        data = np.load(path)
        probs, embs = data["probs"], data["embeddings"]
    else:
        probs, embs = score_and_embed(model, [r["text"] for r in rows])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, probs=probs, embeddings=embs)
    labels = np.array([LABELS.index(r["label"]) for r in rows])
    return Signals(corpus, ids, [r.get("source", "news") for r in rows], probs, embs, labels)


# ------------------------------------------------------------------ replaying signals through the engine


@dataclass
class RunResult:
    """Every event of one replay, with how many post-switch labels had arrived by then."""

    events: list[dict[str, Any]]
    messages: int
    labels: int


def replay_signals(
    config: DriftConfig,
    stream: Signals,
    *,
    label_fraction: float,
    label_delay: int,
    seed: int,
    switch_at: int | None = None,
    version: str = "champion",
) -> RunResult:
    """Feed ``stream`` (one source: ``news`` unless every message says ``chat``) through a fresh engine.

    Labels for a seeded ``label_fraction`` of the messages are joined ``label_delay`` messages after
    their message, as the monitor would see delayed labels. Returns the events (alarms that opened an
    episode) with their stream position and the number of labels of post-switch messages joined.
    """
    engine = DriftEngine(config)
    rng = random.Random(seed)
    source = stream.sources[0] if len(set(stream.sources)) == 1 else "news"
    due: deque[tuple[int, int]] = deque()
    events: list[dict[str, Any]] = []
    labels_after_switch = 0
    labels = 0
    want_embedding = "hotelling_embedding" in config.detectors

    def record(alarms: list[Any]) -> None:
        for a in alarms:
            if a.event:
                events.append(
                    {
                        "detector": a.detector,
                        "position": a.position,
                        "labels_after_switch": labels_after_switch,
                        "statistic": a.statistic,
                    }
                )

    for i in range(len(stream)):
        emb = (
            stream.embeddings[i]
            if want_embedding and sampled_for_embedding(stream.ids[i], config.embed_every)
            else None
        )
        record(engine.message(source, version, stream.probs[i], emb))
        if label_fraction > 0 and rng.random() < label_fraction:
            due.append((i + label_delay, i))
        while due and due[0][0] <= i:
            _, j = due.popleft()
            labels += 1
            if switch_at is not None and j >= switch_at:
                labels_after_switch += 1
            correct = int(np.argmax(stream.probs[j])) == int(stream.labels[j])
            record(engine.label(source, version, j + 1, correct))  # message j is at position j + 1
    return RunResult(events, len(stream), labels)


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "mean": None, "max": None, "runs": []}
    return {
        "median": float(np.median(values)),
        "mean": float(np.mean(values)),
        "max": float(max(values)),
        "runs": values,
    }


def evaluate(
    config: DriftConfig,
    pre: Signals,
    post: Signals,
    stationary: dict[str, Signals],
    *,
    n_pre: int,
    n_post: int,
    repeats: int,
    label_fraction: float,
    label_delay: int,
    seed: int,
) -> dict[str, Any]:
    """Switch delays and stationary false alarms of one detector configuration."""
    delays, delays_labeled, missed, early = [], [], 0, 0
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        a = pre.take(rng.permutation(len(pre))[:n_pre])
        b = post.take(rng.permutation(len(post))[:n_post])
        stream = Signals(
            "switch",
            a.ids + b.ids,
            ["news"] * (len(a) + len(b)),
            np.concatenate([a.probs, b.probs]),
            np.concatenate([a.embeddings, b.embeddings]),
            np.concatenate([a.labels, b.labels]),
        )
        run = replay_signals(
            config, stream, label_fraction=label_fraction, label_delay=label_delay, seed=seed + r, switch_at=len(a)
        )
        early += sum(1 for e in run.events if e["position"] <= len(a))
        after = [e for e in run.events if e["position"] > len(a)]
        if not after:
            missed += 1
            continue
        delays.append(float(after[0]["position"] - len(a)))
        delays_labeled.append(float(after[0]["labels_after_switch"]))
    false_alarms, messages, by_corpus = 0, 0, {}
    for name, sig in stationary.items():
        fa = n = 0
        for r in range(repeats):
            perm = np.random.default_rng(seed + 1000 + r).permutation(len(sig))
            run = replay_signals(
                config, sig.take(perm), label_fraction=label_fraction, label_delay=label_delay, seed=seed + 1000 + r
            )
            fa += len(run.events)
            n += run.messages
        by_corpus[name] = {"messages": n, "false_alarms": fa, "per_10k": 1e4 * fa / n if n else None}
        false_alarms += fa
        messages += n
    return {
        "delay_messages": _stats(delays),
        "delay_labeled": _stats(delays_labeled),
        "missed": missed,
        "false_alarms_before_switch": early,
        "stationary": {
            "messages": messages,
            "false_alarms": false_alarms,
            "per_10k": 1e4 * false_alarms / messages if messages else None,
            "by_corpus": by_corpus,
        },
    }


def periodic_baseline(period: int, n_pre: int, repeats: int, seed: int) -> dict[str, Any]:
    """A trigger every ``period`` messages with a random phase: its delay and false-alarm rate."""
    rng = np.random.default_rng(seed)
    delays = []
    for _ in range(repeats):
        phase = int(rng.integers(0, period))
        delays.append(float(period - ((n_pre + phase) % period)))
    return {
        "delay_messages": _stats(delays),
        "delay_labeled": _stats([]),
        "missed": 0,
        "false_alarms_before_switch": None,
        "stationary": {"messages": None, "false_alarms": None, "per_10k": 1e4 / period, "by_corpus": {}},
    }


def drift_benchmark(
    app: Any,
    *,
    out: Path,
    shared: Path | None = None,
    bootstrap_data: Path | None = None,
    n_pre: int = 2000,
    n_post: int = 2000,
    repeats: int = 5,
    label_fraction: float = 0.5,
    label_delay: int = 200,
    max_per_corpus: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark with the app's champion and monitor settings; write ``drift-detect.json`` (and a plot)."""
    started = time.perf_counter()
    shared = shared or default_shared_dir()
    if shared is None or not (shared / PRE).is_dir():
        raise FileNotFoundError("shared corpora not found: set AET_SHARED_DATA to the shared/data directory")
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=progress)
    model = app.load_model(champion)
    cache = out / "cache"
    trained = trained_ids(champion)
    corpora = {}
    for name in sorted({PRE, POST, *STATIONARY}):
        rows = [r for r in load_corpus(shared, name, None, seed) if str(r["id"]) not in trained]
        if max_per_corpus is not None and max_per_corpus < len(rows):
            rows = random.Random(seed).sample(rows, max_per_corpus)
        t0 = time.perf_counter()
        corpora[name] = signals_for(model, rows, name, cache, cache_key=champion.sha256)
        log.info("%s: %d messages scored and embedded in %.1fs", name, len(rows), time.perf_counter() - t0)
    base = DriftConfig.from_settings(app.settings.monitor)
    stationary = {name: corpora[name] for name in STATIONARY}
    n_pre, n_post = min(n_pre, len(corpora[PRE])), min(n_post, len(corpora[POST]))
    kwargs = {"n_pre": n_pre, "n_post": n_post, "repeats": repeats, "label_delay": label_delay, "seed": seed}
    results: dict[str, Any] = {}
    for name in DETECTOR_CLASSES:
        config = DriftConfig(**{**base.__dict__, "detectors": (name,)})
        labels = SIGNAL_OF[name] == "error"
        results[name] = {
            "labels": labels,
            "parameters": config.build(name).describe(),
            **evaluate(
                config,
                corpora[PRE],
                corpora[POST],
                stationary,
                label_fraction=label_fraction if labels else 0.0,
                **kwargs,
            ),
        }
        log.info("%s: %s", name, {k: results[name][k] for k in ("delay_messages", "missed")})
    default = DriftConfig(**{**base.__dict__, "detectors": tuple(base.detectors)})
    results["default_with_labels"] = {
        "labels": True,
        "detectors": list(default.detectors),
        **evaluate(default, corpora[PRE], corpora[POST], stationary, label_fraction=label_fraction, **kwargs),
    }
    results["default_without_labels"] = {
        "labels": False,
        "detectors": list(default.detectors),
        **evaluate(default, corpora[PRE], corpora[POST], stationary, label_fraction=0.0, **kwargs),
    }
    for period in (1000, 10_000):
        results[f"periodic_{period}"] = {"labels": False, **periodic_baseline(period, n_pre, repeats, seed)}

    def worst(key: str, field: str) -> float | None:
        r = results[key]
        return None if r["missed"] else r[field]["max"]

    baseline = results["periodic_10000"]
    met = {
        "labeled_delay_adwin_error": (worst("adwin_error", "delay_labeled") or 1e9) <= TARGETS["labeled_delay_max"],
        "unlabeled_delay_default": (worst("default_without_labels", "delay_messages") or 1e9)
        <= TARGETS["unlabeled_delay_max"],
        "false_alarms_default": max(
            results["default_with_labels"]["stationary"]["per_10k"],
            results["default_without_labels"]["stationary"]["per_10k"],
        )
        <= TARGETS["false_alarms_per_10k_max"],
    }
    beats = {}
    for name, r in results.items():
        if name.startswith("periodic"):
            continue
        median = r["delay_messages"]["median"]
        beats[name] = (
            r["missed"] == 0
            and median is not None
            and median < baseline["delay_messages"]["median"]
            and r["stationary"]["per_10k"] <= baseline["stationary"]["per_10k"]
        )
    report = {
        "benchmark": "drift-detect",
        "model_version": champion.version,
        "champion_trained_on": (champion.info or {}).get("trained_on"),
        "excluded_training_rows": len(trained),
        "corpora": {name: len(sig) for name, sig in corpora.items()},
        "switch": {
            "from": PRE,
            "to": POST,
            "source": "news",
            "n_pre": n_pre,
            "n_post": n_post,
            "repeats": repeats,
            "label_fraction": label_fraction,
            "label_delay_messages": label_delay,
        },
        "stationary_corpora": list(STATIONARY),
        "monitor_settings": app.settings.monitor.model_dump(),
        "default_detectors": list(DEFAULT_DETECTORS),
        "results": results,
        "targets": TARGETS,
        "targets_met": met,
        "beats_periodic_10000": beats,
        "accuracy": {name: float((sig.probs.argmax(1) == sig.labels).mean()) for name, sig in corpora.items()},
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    bars = {name: r["delay_messages"]["median"] or 0.0 for name, r in results.items()}
    unit = "median detection delay after the switch (messages)"
    write_report(report, out, "drift-detect", bar_chart(bars, unit, "aet bench drift-detect"))
    return report
