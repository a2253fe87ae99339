"""The alert engine: per-entity sentiment surges over event-time sliding windows.

Pure statistics, no I/O: the alert role (pipeline/roles/alerts.py) feeds it the
scored messages of ``aet.scored`` and publishes what it raises to ``aet.alerts``
(docs/architecture.md, "Alerts").

**Windows.** Event time is cut into buckets of ``step_s``; the window ending with
bucket *b* is the ``window_s / step_s`` buckets up to and including *b*. Each
message is counted, once per entity it is about (:mod:`aet.pipeline.entities`), in the
bucket of its event time, and the windows that contain that bucket are evaluated
at once, so an alert is raised by the very message that completes a burst (no
wait for the window to end).

**Repeats.** With ``dedupe_texts``, a text already counted for an entity within the
window (up to case, spacing and links: retweets, bot storms, a corpus that has one
row per cashtag of the same tweet) is not counted again for it.

**Lateness.** Time moves per entity: an entity's watermark is the newest event
time of the messages keyed by it (the producer's first entity: they share a
partition, so they arrive in order while partitions drift apart; an entity only
ever mentioned is driven by its mentions) minus ``allowed_lateness_s``. An event older than the
watermark of an entity is too late for it: counted in ``stats["late"]`` and
otherwise ignored. An event from the future (past ``limits.max_future_s`` after the
wall clock, or too close to the end of the calendar to have a window) is counted
in ``stats["future"]`` and ignored before it can move any watermark or expire the
dedupe memory. An event within the allowed lateness lands in its own (earlier)
bucket and re-evaluates every window that contains it. A message id seen before
within two windows is a duplicate (an at-least-once re-delivery) and is not
counted twice. An entity's windows are closed, folded and evicted lazily, when its
next message moves its watermark.

**Baselines.** When the watermark passes the end of a bucket, that bucket can no
longer change, and the window ending with it is final. One window length later
(when it no longer overlaps the windows being evaluated, so a burst is never
compared with itself) it updates the entity's baseline if it holds at least
``baseline_min_count`` messages: exponentially weighted mean and
variance of the window's negative (positive) share, and of its expected sampling
variance ``p(1-p)/n``. Their difference is the entity's own excess spread τ². A
new entity has no history, so its baseline is blended with a prior (the global
share over all messages, fed one window late too; spread ``prior_std``), the entity's weight growing with
the windows it has seen. Shares beyond 3 σ of the baseline are clipped before they
update it, so one burst does not blind the baseline to the next.

**Alerting.** A window alerts when it holds at least ``min_count`` messages, its
share reaches ``min_share`` and its z-score

    z = (share − μ) / sqrt(τ² + μ(1 − μ) / n)

reaches ``min_z`` (μ, τ: the blended baseline; n: the window's count). Severity is
``critical`` from ``critical_z``, ``warning`` from ``warning_z``, else ``info``.
After an alert, the same entity and kind stay quiet for ``cooldown_s`` of event
time. An alert's id is a digest of entity, kind and window end, so the same input
raises the same alert id, and a re-delivered batch overwrites rather than
duplicates it.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aet.pipeline import metrics
from aet.pipeline.config import AlertSettings, LimitsSettings
from aet.pipeline.entities import EntityExtractor, Gazetteer
from aet.pipeline.ports import BaselineSnapshot, BucketSnapshot
from aet.pipeline.records import Alert, ScoredMessage, current_limits, utcnow

KINDS = {"negative_surge": "negative", "positive_surge": "positive"}
GLOBAL = "*"  # the entity name under which the global prior is persisted
Severity = Literal["info", "warning", "critical"]


def alert_id(entity: str, kind: str, window_end: datetime) -> str:
    """Deterministic id of the alert about ``entity`` and ``kind`` raised by the window ending at ``window_end``."""
    digest = hashlib.sha256(f"{entity}\x1f{kind}\x1f{window_end.isoformat()}".encode()).hexdigest()
    return f"al-{digest[:24]}"


_SPACE = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+")


def _text_key(text: str) -> str:
    """The same text up to case, spacing and links (retweets, bot storms, one corpus row per cashtag)."""
    norm = _SPACE.sub(" ", _URL.sub("", text)).strip().lower()
    return hashlib.blake2b(norm.encode(), digest_size=12).hexdigest()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class _Baseline:
    """Exponentially weighted mean and variance of a window share, and of its sampling variance."""

    __slots__ = ("mean", "noise", "through", "var", "windows")

    def __init__(
        self, mean: float, var: float = 0.0, noise: float = 0.0, windows: int = 0, through: float = float("-inf")
    ) -> None:
        self.mean, self.var, self.noise, self.windows, self.through = mean, var, noise, windows, through

    def update(self, x: float, n: int, alpha: float, min_std: float, prior_std: float) -> None:
        """Fold in one closed window's share ``x`` of ``n`` messages.

        The first windows are averaged plainly (weight ``1/windows``) until that falls
        below ``alpha``. ``x`` is first clipped to 3 spreads of the current baseline (the
        prior's spread before any window), so one burst cannot drag the baseline along.
        """
        tau2 = self.tau2(min_std) if self.windows else prior_std**2
        spread = math.sqrt(tau2 + self.mean * (1 - self.mean) / n)
        x = min(max(x, self.mean - 3 * spread), self.mean + 3 * spread)
        a = max(alpha, 1.0 / (self.windows + 1))
        diff = x - self.mean
        inc = a * diff
        self.mean += inc
        self.var = (1 - a) * (self.var + diff * inc)
        self.noise += a * (self.mean * (1 - self.mean) / n - self.noise)
        self.windows += 1

    def tau2(self, min_std: float) -> float:
        return max(self.var - self.noise, min_std**2)


class _Bucket:
    __slots__ = ("n", "neg", "neu", "pos", "score", "top_neg", "top_pos", "versions")

    def __init__(self) -> None:
        self.n = self.neg = self.neu = self.pos = 0
        self.score = 0.0
        self.top_neg: list[tuple[float, str]] = []  # min-heaps of the k largest (p, -id order) pairs
        self.top_pos: list[tuple[float, str]] = []
        self.versions: dict[str, int] = {}


def _keep_top(heap: list[tuple[float, str]], item: tuple[float, str], k: int) -> None:
    if k <= 0:
        return
    if len(heap) < k:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


@dataclass
class _Last:
    window_end: float
    id: str
    restored: bool = False


@dataclass
class EngineStats:
    messages: int = 0
    counted: int = 0
    late: int = 0
    duplicates: int = 0
    repeats: int = 0
    without_entity: int = 0
    alerts: int = 0
    suppressed: int = 0
    future: int = 0


class _Entity:
    """One entity's open buckets, its newest event time, and its closed windows awaiting the baseline."""

    __slots__ = ("buckets", "closed", "folds", "keyed", "max_ts")

    def __init__(self) -> None:
        self.buckets: dict[int, _Bucket] = {}
        self.max_ts = float("-inf")
        self.keyed = False  # time is driven by messages keyed by this entity (once there are any)
        self.closed = -(2**62)  # the newest bucket index whose window is final
        # (due, window end, window n, neg, pos, bucket n, neg, pos): final windows and buckets awaiting their fold
        self.folds: deque[tuple[float, float, int, int, int, int, int, int]] = deque()


class AlertEngine:
    """Windows, baselines, thresholds and cooldowns: scored messages in, alerts out (no I/O)."""

    def __init__(
        self,
        settings: AlertSettings,
        extractor: EntityExtractor | None = None,
        *,
        limits: LimitsSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``limits`` (default: this process's) and ``clock`` (the wall clock) bound how far ahead an event may be."""
        if settings.window_s < settings.step_s:
            raise ValueError("alerts.window_s must be at least alerts.step_s")
        self.s = settings
        self.extractor = extractor or EntityExtractor(
            Gazetteer.load(settings.gazetteer) if settings.gazetteer else None,
            text_cashtags=settings.text_cashtags,
            link_given_names=settings.link_given_names,
        )
        self.step = settings.step_s
        self.nb = max(1, round(settings.window_s / settings.step_s))
        self.kinds = [(k, KINDS[k]) for k in settings.kinds]
        self.alpha = 2.0 / (settings.baseline_span + 1)
        self.prior_alpha = 1.0 / settings.prior_span
        self.stats = EngineStats()
        self.max_ts: float | None = None
        self._entities: dict[str, _Entity] = {}
        self._baselines: dict[tuple[str, str], _Baseline] = {}
        self._prior = {"negative": _Baseline(1 / 3), "positive": _Baseline(1 / 3)}
        self._last: dict[tuple[str, str], _Last] = {}
        self._seen: dict[str, float] = {}
        self._seen_order: deque[tuple[float, str]] = deque()
        self._dirty_baselines: set[tuple[str, str]] = set()
        self._dirty_buckets: set[tuple[str, int]] = set()
        self._evicted_rows: list[BucketSnapshot] = []
        self._sweep_at = 0.0
        self.limits = limits or current_limits()
        self.clock = clock
        # The last event time whose windows and expiry still fit in a datetime (year 9999).
        self._last_representable = (
            datetime.max.replace(tzinfo=UTC).timestamp() - 2 * settings.window_s - settings.step_s
        )

    # -- state that survives restarts --------------------------------------------

    def restore(self, baselines: Iterable[BaselineSnapshot] = (), alerts: Iterable[Alert] = ()) -> None:
        """Load persisted baselines and recent alerts (so cooldowns hold across a restart)."""
        for b in baselines:
            through = b.through.timestamp() if b.through else float("-inf")
            state = _Baseline(b.mean, b.var, b.noise, b.windows, through)
            if b.entity == GLOBAL:
                self._prior[KINDS.get(b.kind, b.kind)] = state
            else:
                self._baselines[(b.entity, b.kind)] = state
        for a in alerts:
            end = a.window_end.timestamp()
            last = self._last.get((a.entity, a.kind))
            if last is None or end > last.window_end:
                self._last[(a.entity, a.kind)] = _Last(end, a.id, restored=True)

    def dirty_state(self) -> tuple[list[BaselineSnapshot], list[BucketSnapshot]]:
        """Baselines and buckets changed since the last call (for the database)."""
        baselines = [self._snapshot(e, k) for e, k in self._dirty_baselines]
        buckets = self._evicted_rows
        for entity, b in self._dirty_buckets:
            state = self._entities.get(entity)
            bucket = state.buckets.get(b) if state else None
            if bucket is not None:
                buckets.append(self._bucket_row(entity, b, bucket))
        self._dirty_baselines, self._dirty_buckets, self._evicted_rows = set(), set(), []
        return baselines, buckets

    def requeue(self, baselines: Iterable[BaselineSnapshot], buckets: Iterable[BucketSnapshot]) -> None:
        """Mark state that :meth:`dirty_state` handed out but could not be saved as changed again."""
        self._dirty_baselines.update((b.entity, b.kind) for b in baselines)
        self._evicted_rows.extend(buckets)

    def _snapshot(self, entity: str, kind: str) -> BaselineSnapshot:
        b = self._prior[KINDS[kind]] if entity == GLOBAL else self._baselines[(entity, kind)]
        through = _dt(b.through) if math.isfinite(b.through) else None
        return BaselineSnapshot(entity, kind, b.mean, b.var, b.noise, b.windows, through)

    def _bucket_row(self, entity: str, b: int, bucket: _Bucket) -> BucketSnapshot:
        return BucketSnapshot(
            entity,
            _dt(b * self.step),
            _dt((b + 1) * self.step),
            bucket.n,
            bucket.neg,
            bucket.neu,
            bucket.pos,
            bucket.score,
        )

    # -- the stream ----------------------------------------------------------------

    def watermark(self, entity: str) -> float | None:
        """Event time before which ``entity``'s events are late: its newest event less the allowed lateness."""
        state = self._entities.get(entity)
        return None if state is None else state.max_ts - self.s.allowed_lateness_s

    @property
    def entities(self) -> int:
        return len(self._entities)

    def process(self, messages: Iterable[ScoredMessage]) -> list[Alert]:
        """Count a batch of scored messages; return the alerts they raise, in order."""
        alerts: list[Alert] = []
        lateness = self.s.allowed_lateness_s
        horizon = min(self.clock().timestamp() + self.limits.max_future_s, self._last_representable)
        for m in messages:
            self.stats.messages += 1
            ts = m.ts.timestamp()
            if ts > horizon:
                self.stats.future += 1
                continue
            if m.id in self._seen:
                self.stats.duplicates += 1
                continue
            entities = self.extractor.extract(m.text, m.entities)
            if not entities:
                self.stats.without_entity += 1
            self._remember(m.id, ts)
            b = math.floor(ts / self.step)
            text_key = _text_key(m.text) if self.s.dedupe_texts else None
            key_entity = self.extractor.given(m.entities[:1])[0] if m.entities else None
            counted = False
            for entity in entities:
                state = self._entities.get(entity)
                if state is None:
                    state = self._entities[entity] = _Entity()
                keyed = entity == key_entity
                if keyed and not state.keyed:
                    # From now on this entity's own partition (in order) drives its time, not mentions
                    # in other partitions, which may be read far ahead or behind.
                    state.keyed, state.max_ts, state.closed = True, float("-inf"), -(2**62)
                if ts < state.max_ts - lateness:
                    self.stats.late += 1
                    metrics.ALERT_LATE.inc()
                    continue
                if text_key is not None:
                    key = f"{entity}\x1f{text_key}"
                    if key in self._seen:
                        self.stats.repeats += 1
                        continue
                    self._remember(key, ts)
                self._count(entity, state, b, m)
                counted = True
                self._evaluate(entity, state, b, m, alerts)
                if ts > state.max_ts and (keyed or not state.keyed):
                    state.max_ts = ts
                    self._advance(entity, state)
            if counted:
                self.stats.counted += 1
            if self.max_ts is None or ts > self.max_ts:
                self.max_ts = ts
                self._expire_seen(ts)
        return alerts

    def _remember(self, key: str, ts: float) -> None:
        self._seen[key] = ts
        self._seen_order.append((ts, key))

    def _expire_seen(self, newest: float) -> None:
        """Forget ids and texts older than two windows plus the lateness behind the newest event."""
        horizon = newest - 2 * self.s.window_s - self.s.allowed_lateness_s
        seen, order = self._seen, self._seen_order
        while order and order[0][0] < horizon:
            _, key = order.popleft()
            if seen.get(key, horizon) < horizon:
                del seen[key]

    def _count(self, entity: str, state: _Entity, b: int, m: ScoredMessage) -> None:
        bucket = state.buckets.get(b)
        if bucket is None:
            bucket = state.buckets[b] = _Bucket()
        bucket.n += 1
        if m.label == "negative":
            bucket.neg += 1
        elif m.label == "positive":
            bucket.pos += 1
        else:
            bucket.neu += 1
        bucket.score += m.score
        k = self.s.examples
        _keep_top(bucket.top_neg, (m.probs.negative, m.id), k)
        _keep_top(bucket.top_pos, (m.probs.positive, m.id), k)
        bucket.versions[m.model_version] = bucket.versions.get(m.model_version, 0) + 1
        self._dirty_buckets.add((entity, b))

    def _window(self, state: _Entity, end_b: int) -> tuple[int, int, int, int, list[_Bucket]]:
        buckets = state.buckets
        parts = [bk for i in range(end_b - self.nb + 1, end_b + 1) if (bk := buckets.get(i)) is not None]
        n = neg = neu = pos = 0
        for bk in parts:
            n += bk.n
            neg += bk.neg
            neu += bk.neu
            pos += bk.pos
        return n, neg, neu, pos, parts

    def _evaluate(self, entity: str, state: _Entity, b: int, m: ScoredMessage, alerts: list[Alert]) -> None:
        """Evaluate every window that contains bucket ``b`` and has begun (up to the entity's newest event)."""
        newest = max(b, math.floor(state.max_ts / self.step)) if state.max_ts > float("-inf") else b
        for end_b in range(b, min(b + self.nb - 1, newest) + 1):
            n, neg, neu, pos, parts = self._window(state, end_b)
            if n < self.s.min_count:
                continue
            counts = {"negative": neg, "neutral": neu, "positive": pos}
            for kind, label in self.kinds:
                share = counts[label] / n
                if share < self.s.min_share:
                    continue
                mu, tau2, windows = self._blended(entity, kind, label)
                sigma = math.sqrt(tau2 + mu * (1 - mu) / n)
                z = (share - mu) / sigma if sigma > 0 else 0.0
                if z < self.s.min_z:
                    continue
                alert = self._raise(entity, kind, label, end_b, n, counts, parts, mu, tau2, sigma, windows, z, m)
                if alert is not None:
                    alerts.append(alert)

    def _blended(self, entity: str, kind: str, label: str) -> tuple[float, float, int]:
        prior = self._prior[label]
        own = self._baselines.get((entity, kind))
        if own is None or own.windows == 0:
            return prior.mean, self.s.prior_std**2, 0
        w = own.windows / (own.windows + self.s.warmup_windows) if self.s.warmup_windows else 1.0
        mu = w * own.mean + (1 - w) * prior.mean
        tau2 = w * own.tau2(self.s.min_std) + (1 - w) * self.s.prior_std**2
        return mu, tau2, own.windows

    def _raise(
        self,
        entity: str,
        kind: str,
        label: str,
        end_b: int,
        n: int,
        counts: dict[str, int],
        parts: list[_Bucket],
        mu: float,
        tau2: float,
        sigma: float,
        windows: int,
        z: float,
        trigger: ScoredMessage,
    ) -> Alert | None:
        end_ts = (end_b + 1) * self.step
        window_end = _dt(end_ts)
        ident = alert_id(entity, kind, window_end)
        last = self._last.get((entity, kind))
        if last is not None:
            if last.restored and last.id == ident:
                last.restored = False  # the same alert again after a restart: overwrite it once
            elif end_ts < last.window_end + self.s.cooldown_s:
                self.stats.suppressed += 1
                return None
        self._last[(entity, kind)] = _Last(end_ts, ident)
        severity: Severity = "critical" if z >= self.s.critical_z else "warning" if z >= self.s.warning_z else "info"
        tops = [bk.top_neg if label == "negative" else bk.top_pos for bk in parts]
        examples = sorted((item for top in tops for item in top), key=lambda t: (-t[0], t[1]))[: self.s.examples]
        versions: dict[str, int] = {}
        for bk in parts:
            for v, c in bk.versions.items():
                versions[v] = versions.get(v, 0) + c
        self.stats.alerts += 1
        metrics.ALERTS_RAISED.labels(kind, severity).inc()
        return Alert(
            id=ident,
            entity=entity,
            kind=kind,
            window_start=_dt(end_ts - self.nb * self.step),
            window_end=window_end,
            counts={"total": n, **counts},
            shares={k: v / n for k, v in counts.items()},
            baseline={
                "mean": mu,
                "std": math.sqrt(tau2),
                "sigma": sigma,
                "windows": float(windows),
                "prior_mean": self._prior[label].mean,
            },
            z=z,
            severity=severity,
            example_ids=[i for _, i in examples],
            model_version=trigger.model_version,
            trigger_id=trigger.id,
            model_versions=versions,
        )

    def _advance(self, entity: str, state: _Entity) -> None:
        """The entity's watermark moved: close final windows, fold old ones into the baseline, evict buckets.

        A window is final once the watermark passes its end. It updates the baseline one
        window length later, when it no longer overlaps the windows being evaluated (so a
        burst is never compared with itself). A bucket leaves memory once no window that
        can still change contains it.
        """
        wm = state.max_ts - self.s.allowed_lateness_s
        final = math.floor(wm / self.step) - 1  # the newest bucket that ended at or before the watermark
        if final > state.closed:
            for b in sorted(k for k in state.buckets if state.closed < k <= final):
                self._close(state, b)
            # windows ending in empty buckets after the last data are final too, but fold nothing new
            state.closed = final
        while state.folds and state.folds[0][0] <= wm:
            _, end_ts, n, neg, pos, bn, bneg, bpos = state.folds.popleft()
            self._fold_prior(bn, {"negative": bneg, "positive": bpos})
            self._fold(entity, end_ts, n, neg, pos)
        oldest_needed = final - self.nb + 2
        for b in [k for k in state.buckets if k < oldest_needed]:
            bucket = state.buckets.pop(b)
            if (entity, b) in self._dirty_buckets:
                self._dirty_buckets.discard((entity, b))
                self._evicted_rows.append(self._bucket_row(entity, b, bucket))

    def _close(self, state: _Entity, b: int) -> None:
        """Bucket ``b`` and the window ending with it are final: queue both, to be folded one window later."""
        n, neg, _, pos, _ = self._window(state, b)
        if n < self.s.baseline_min_count:
            n = 0  # too few for the entity's baseline; the bucket still counts for the global prior
        end_ts = (b + 1) * self.step
        bucket = state.buckets[b]
        state.folds.append((end_ts + self.s.window_s, end_ts, n, neg, pos, bucket.n, bucket.neg, bucket.pos))

    def _fold_prior(self, n: int, counts: dict[str, int]) -> None:
        """Add a final bucket's ``n`` messages to the global share of each label.

        A running mean that starts from 1/3 worth ``prior_weight`` messages, then an
        exponential average over ``prior_span`` messages. Fed one window late, like the
        baselines, so a burst in progress does not raise its own prior.
        """
        for label, prior in self._prior.items():
            k = counts.get(label, 0)
            weight = prior.windows + self.s.prior_weight
            if weight + n <= self.s.prior_span:
                prior.mean = (prior.mean * weight + k) / (weight + n)
            else:
                prior.mean += (1 - (1 - self.prior_alpha) ** n) * (k / n - prior.mean)
            prior.windows += n
        self._dirty_baselines.update((GLOBAL, kind) for kind, _ in self.kinds)

    def _fold(self, entity: str, end_ts: float, n: int, neg: int, pos: int) -> None:
        if n == 0:
            return
        for kind, label in self.kinds:
            base = self._baselines.get((entity, kind))
            if base is None:
                base = self._baselines[(entity, kind)] = _Baseline(self._prior[label].mean)
            if end_ts <= base.through:
                continue  # already folded in before a restart
            base.update((neg if label == "negative" else pos) / n, n, self.alpha, self.s.min_std, self.s.prior_std)
            base.through = end_ts
            self._dirty_baselines.add((entity, kind))

    def baseline(self, entity: str, kind: str = "negative_surge") -> dict[str, float] | None:
        """The entity's own baseline (for inspection and tests)."""
        b = self._baselines.get((entity, kind))
        if b is None:
            return None
        return {"mean": b.mean, "std": math.sqrt(b.tau2(self.s.min_std)), "windows": float(b.windows)}
