"""The fast-path role: per-source heads over the champion's features, learned from every label.

A retraining round needs hundreds of labels and minutes of CPU; the first few
dozen labels of a new language can already correct the champion's last layer.
This role joins each label to the features the scorer attached to its message
on ``aet.scored`` (the input of the model's final linear layer and the
mean-pooled last hidden state), feeds them to that source's
:class:`~aet.pipeline.learning.heads.OnlineHead` (several elastic pulls toward
the champion's own layer, the best by prequential log-loss serves), and every
``publish_every`` labels of a source decides what should serve it:

- the selected head, when its log-loss on labels it had not yet learned beats
  the champion's own layer with ``max_p_value`` (a paired test on the same
  labels) — evidence, not a hunch, as for a promotion;
- else, when the source's class mix has moved (``prior_shift``), the
  champion's own layer corrected for the new mix, estimated by EM on the
  source's latest unlabeled messages (:mod:`aet.pipeline.learning.prior_shift`)
  and withdrawn when its labels say it predicts worse;
- else nothing: the champion's own layer.

A drift event of the source starts a new episode: the candidates' records
are cleared and they are refit on the most recent labels only, and what
serves the source is chosen again at the end of that batch (as when the
head's own change test fires), so that a return to an earlier language is
not served by the head of the last one.

When that changes, the heads are published as a version of their own
(``v0002.h3``: the champion's weights plus a ``heads.safetensors``), sealed
and registered like a model, made the serving version, and announced on
``aet.control`` as a ``heads`` event, which the scorers' hot swap follows
(pipeline/roles/hotswap.py; the weights stay loaded, only the heads change).

The heads belong to the champion whose features they read: a promotion or
rollback to other weights starts them afresh from the new champion's layer
(its next retraining round has learned what they knew). Features of messages
scored by other weights are not learned from. The features are kept in memory
for ``track_messages`` messages, and a label that comes before its message
is held as long; after a restart, labels of messages scored before it are
not learned (held, then dropped and counted as ``unjoined``). Bad records are counted
and skipped: the scorer, label recorder and monitor dead-letter them already.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aet.pipeline.config import FastPathSettings, TopicSettings
from aet.pipeline.learning.heads import FeatureScaler, HeadSet, HeadWeights, OnlineHead, RegimeGate, fit_map, widen
from aet.pipeline.learning.prior_shift import PriorShift
from aet.pipeline.ports import BatchStore, Bus, BusRecord, ChampionChanged
from aet.pipeline.records import LABELS, BadRecord, ControlEvent, LabelRecord, ScoredMessage, decode, unpack_features
from aet.pipeline.worker import Outputs, Worker

log = logging.getLogger(__name__)

#: Share of a source's recent predictions a new head must change to be worth a new version.
MIN_CHANGED = 0.01
#: Labels a head keeps from before a drift event (those the detector needed to notice it are already the new regime's).
EPISODE_KEEP = 64
#: Control events after which the champion's weights may have changed.
WEIGHT_CHANGES = frozenset({"promotion", "rollback"})
#: Messages of an episode kept for the regime gate, and the fewest with which an episode is a regime: with 64
#: messages a regime, a gate told PhraseBank, tweets and chat apart for 80 % of held-out messages; with 300, 94 %.
REGIME_MESSAGES = 300
MIN_REGIME_MESSAGES = 64
#: Elastic pull of the gate's logistic regression toward zero weights.
GATE_STRENGTH = 1.0


class HeadsRegistry(Protocol):
    """What the fast path needs from the registry (implemented by the composition root)."""

    def champion_base(self) -> str | None:
        """The version of the serving champion's weights (itself, or the model a heads version sits on)."""

    def own_head(self, base: str) -> HeadWeights:
        """The final linear layer of version ``base``'s weights."""

    def publish(self, heads: HeadSet, info: dict[str, Any]) -> ControlEvent:
        """Seal and register ``heads`` as a version on their base, make it serve, and describe that as an event.

        Raises :class:`ChampionChanged` when other weights than their base serve: heads never bring back old weights.
        """


@dataclass(frozen=True)
class _Seen:
    source: str
    base: str
    features: np.ndarray


class HeadLearner(Worker):
    """Consumes ``aet.scored``, ``aet.labels`` and ``aet.control``; publishes heads versions."""

    role = "fast-path"

    def __init__(
        self, bus: Bus, store: BatchStore, topics: TopicSettings, settings: FastPathSettings, registry: HeadsRegistry
    ) -> None:
        super().__init__(
            bus,
            store,
            group=settings.group,
            topics=[topics.scored, topics.labels, topics.control],
            dlq_topic=topics.dlq,
            max_batch=512,
            max_wait_ms=100,
        )
        self.names = topics
        self.settings = settings
        self.registry = registry
        self.counts: Counter[str] = Counter()
        self.published: deque[ControlEvent] = deque(maxlen=1000)  # this process's latest (summaries, tests)
        self.seen: OrderedDict[str, _Seen] = OrderedDict()
        self.held: OrderedDict[str, LabelRecord] = OrderedDict()  # labels waiting for their scored message
        self.dims: dict[str, int] = {}  # feature length by weights version: a row of another length is invalid
        self.base: str | None = None
        self._start(registry.champion_base())

    def _start(self, base: str | None) -> None:
        """Begin learning for the champion weights ``base``: no scaler, no heads, nothing serving yet."""
        self.base = base
        self.prior: HeadWeights | None = None
        self.scaler: FeatureScaler | None = None
        self.scaler_rows: list[np.ndarray] = []
        self.waiting: list[tuple[str, np.ndarray, int]] = []  # labels that arrived before the scaler was fixed
        self.heads: dict[str, OnlineHead] = {}
        self.since_publish: Counter[str] = Counter()
        self.undecided: set[str] = set()  # sources whose serving head lost its evidence: decided at this batch's end
        self.serving: dict[str, HeadWeights] = {}
        self.routing: dict[str, RegimeGate] = {}  # the gates of the heads version that serves
        # Prior shift: the first messages' mean posterior (the mix the model is at home with), each source's
        # latest features, its verdict, and messages since its mix was last looked at.
        self.reference_rows: list[np.ndarray] = []
        self.reference: np.ndarray | None = None
        self.recent: dict[str, deque[np.ndarray]] = {}
        self.shifts: dict[str, PriorShift] = {}
        self.since_mix: Counter[str] = Counter()
        # Regimes: each source's current episode's latest messages (standardised mean-pooled features), its
        # earlier episodes with the head that served them, and the gate last fitted (with its episode size).
        self.episode: dict[str, deque[np.ndarray]] = {}
        self.episode_seen: Counter[str] = Counter()  # messages of the current episode, beyond the kept ones too
        self.regimes: dict[str, list[tuple[np.ndarray, HeadWeights | None]]] = {}
        self.gates: dict[str, tuple[int, RegimeGate]] = {}
        if base is not None:
            log.info("fast path: learning heads on the features of %s", base)

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        learned: dict[str, list[tuple[np.ndarray, int]]] = {}
        # Scored messages first: a poll mixes topics, and a label may come in the batch of its message.
        order = {self.names.scored: 0, self.names.control: 1, self.names.labels: 2}
        for r in sorted(records, key=lambda r: order.get(r.topic, 3)):
            try:
                if r.topic == self.names.scored:
                    self._on_scored(decode(ScoredMessage, r.value), learned)
                elif r.topic == self.names.labels:
                    self._on_label(decode(LabelRecord, r.value), learned)
                else:
                    self._on_control(decode(ControlEvent, r.value))
            except BadRecord:
                self.counts["invalid"] += 1
        for source, rows in learned.items():
            self._learn(source, rows)
        self._decide(out)
        return out

    # ------------------------------------------------------------------ inputs

    def _on_scored(self, m: ScoredMessage, learned: dict[str, list[tuple[np.ndarray, int]]]) -> None:
        if m.features is None:
            self.counts["without_features"] += 1
            return
        try:
            features = unpack_features(m.features)
        except ValueError:
            self.counts["invalid"] += 1
            return
        if not np.isfinite(features).all() or len(features) != self.dims.setdefault(m.base, len(features)):
            self.counts["invalid"] += 1
            return
        self.seen[m.id] = _Seen(m.source, m.base, features)
        self.seen.move_to_end(m.id)
        while len(self.seen) > self.settings.track_messages:
            self.seen.popitem(last=False)
        if m.base == self.base:
            if self.scaler is None:
                self.scaler_rows.append(features)
                if len(self.scaler_rows) >= self.settings.scaler_messages:
                    self._fix_scaler()
                    for s, f, y in self.waiting:  # labels that came before the scaler, learned with this batch's
                        learned.setdefault(s, []).append((f, y))
                    self.waiting = []
            if self.settings.prior_shift:
                self._on_mix(m.source, features)
            if self.scaler is not None and self.settings.regimes:
                mean = self.scaler(features)[0, self.scaler.pooled_dim :]
                self.episode.setdefault(m.source, deque(maxlen=REGIME_MESSAGES)).append(mean)
                self.episode_seen[m.source] += 1
        held = self.held.pop(m.id, None)
        if held is not None:  # its label came first (another partition, or a scorer restart)
            self._on_label(held, learned)

    def _on_label(self, label: LabelRecord, learned: dict[str, list[tuple[np.ndarray, int]]]) -> None:
        seen = self.seen.get(label.message_id)
        if seen is None:
            self.held[label.message_id] = label
            while len(self.held) > self.settings.track_messages:
                self.held.popitem(last=False)
                self.counts["unjoined"] += 1
            return
        if seen.base != self.base:
            self.counts["other_weights"] += 1
            return
        learned.setdefault(seen.source, []).append((seen.features, LABELS.index(label.label)))
        self.counts["labels"] += 1

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind == "drift":
            source = str(event.payload.get("source"))
            self._archive(source)
            head = self.heads.get(source)
            if head is not None:  # a new regime: its own labels decide which candidate serves
                head.new_episode(keep_last=EPISODE_KEEP)
                self.counts["episodes"] += 1
                self._decide_now(source)
            return
        if event.kind not in WEIGHT_CHANGES:
            return
        base = self.registry.champion_base()
        if base != self.base:
            log.info("fast path: champion weights changed (%s -> %s); heads start afresh", self.base, base)
            self._start(base)

    def _on_mix(self, source: str, features: np.ndarray) -> None:
        window = self.settings.prior_window
        if len(self.reference_rows) < window:
            self.reference_rows.append(features)
        if source not in self.recent:
            self.recent[source] = deque(maxlen=window)
            self.shifts[source] = PriorShift(min_shift=self.settings.prior_min_shift, min_messages=window // 2)
        self.recent[source].append(features)
        self.since_mix[source] += 1

    # ------------------------------------------------------------------ learning

    def _learn(self, source: str, rows: list[tuple[np.ndarray, int]]) -> None:
        if self.base is None:
            return
        if self.scaler is None:  # fixed once ``scaler_messages`` messages of these weights were scored
            self.waiting.extend((source, f, y) for f, y in rows)
            del self.waiting[: -self.settings.window]
            return
        head = self.heads.get(source)
        if head is None:
            assert self.prior is not None
            fp = self.settings
            head = self.heads[source] = OnlineHead(
                self.prior, strengths=fp.strengths, window=fp.window, half_life=fp.half_life, min_labels=fp.min_labels
            )
        features = self.scaler(np.stack([f for f, _ in rows]))
        labels = np.asarray([y for _, y in rows])
        self._judge_mix(source, features, labels)
        changes = head.changes
        head.learn_many(features, labels)
        if head.changes > changes:
            self.counts["head_changes"] += 1
            self._archive(source)
            self._decide_now(source)
            log.info(
                "fast path: the head of %s stopped beating the champion's layer; refit on its last %d labels",
                source,
                len(head.labels),
            )
        self.since_publish[source] += len(rows)

    def _decide_now(self, source: str) -> None:
        """Choose what serves ``source`` at the end of this batch: the evidence the serving head stood on is gone,
        and the head of a language that ended would otherwise answer the new one for up to ``publish_every`` labels."""
        self.undecided.add(source)

    def _archive(self, source: str) -> None:
        """The source's episode ended: keep it as a regime with the head that served it, if it is one."""
        rows = self.episode.pop(source, None)
        self.episode_seen.pop(source, None)
        if not self.settings.regimes or rows is None or len(rows) < MIN_REGIME_MESSAGES:
            return
        kept = self.regimes.setdefault(source, [])
        kept.append((np.stack(rows), self.serving.get(source)))
        del kept[: -self.settings.regimes]
        self.gates.pop(source, None)
        self.counts["regimes"] += 1

    def _gate(self, source: str) -> RegimeGate | None:
        """The gate between the source's earlier regimes and its current one, refit as the current one grows."""
        earlier = self.regimes.get(source)
        current = self.episode.get(source)
        if not earlier or current is None or len(current) < MIN_REGIME_MESSAGES:
            return None
        fitted, seen = self.gates.get(source), self.episode_seen[source]
        if fitted is not None and 2 * fitted[0] > seen:
            return fitted[1]  # refit each time the current regime has doubled
        x = np.concatenate([rows for rows, _ in earlier] + [np.stack(current)])
        y = np.concatenate(
            [np.full(len(rows), k) for k, (rows, _) in enumerate(earlier)] + [np.full(len(current), len(earlier))]
        )
        zero = HeadWeights(np.zeros((len(earlier) + 1, x.shape[1])), np.zeros(len(earlier) + 1))
        fit = fit_map(x, y, zero, GATE_STRENGTH)
        gate = RegimeGate(fit.weight, fit.bias, tuple(head for _, head in earlier))
        self.gates[source] = (seen, gate)
        return gate

    def _mix_offset(self, source: str) -> np.ndarray | None:
        """The bias correction for ``source``'s class mix, when there is one to make (see prior_shift.py)."""
        if self.scaler is None or self.prior is None or source not in self.recent:
            return None
        if self.reference is None:
            if len(self.reference_rows) < self.settings.prior_window:
                return None
            self.reference = self.prior.proba(self.scaler(np.stack(self.reference_rows))).mean(axis=0)
            self.reference_rows = []
        probs = self.prior.proba(self.scaler(np.stack(self.recent[source])))
        return self.shifts[source].offset(probs, self.reference)

    def _judge_mix(self, source: str, features: np.ndarray, labels: np.ndarray) -> None:
        """Let the labels judge the mix correction: its log-loss and the plain layer's on the same messages."""
        offset = self._mix_offset(source) if self.settings.prior_shift else None
        if offset is None or self.prior is None:
            return
        plain = self.prior.logits(features)
        rows = np.arange(len(labels))
        self.shifts[source].judge(_log_loss(plain, labels, rows), _log_loss(plain + offset, labels, rows))

    def _fix_scaler(self) -> None:
        """Standardise the mean-pooled features by the champion's first scored messages; widen its own layer."""
        assert self.base is not None
        own = self.registry.own_head(self.base)
        pooled_dim = own.weight.shape[1]
        rows = np.stack(self.scaler_rows)
        self.scaler = FeatureScaler.fit(rows, pooled_dim)
        self.prior = widen(own, rows.shape[1] - pooled_dim)
        self.scaler_rows = []

    def _changed(self, source: str, head: HeadWeights | None) -> bool:
        """Would serving ``head`` (``None``: the champion's own layer) change what serves the source?

        A new head must change at least one prediction in a hundred of the
        source's recent labels (its latest messages while it has none): a head that only sharpens the champion's
        confidence is not worth a version.
        """
        if head is None:
            return source in self.serving
        old = self.serving.get(source, self.prior)
        learner = self.heads.get(source)
        window = list(learner.features) if learner is not None and learner.features else None
        if window is None and self.scaler is not None and self.recent.get(source):
            window = list(self.scaler(np.stack(self.recent[source])))
        if old is None or not window:
            return old is None
        x = np.asarray(window)
        changed = old.logits(x).argmax(axis=1) != head.logits(x).argmax(axis=1)
        return float(changed.mean()) >= MIN_CHANGED

    def _choose(self, source: str) -> tuple[HeadWeights | None, dict[str, Any]]:
        """What should serve ``source`` (``None``: the champion's own layer), and why."""
        facts: dict[str, Any] = {}
        head = self.heads.get(source)
        if head is not None:
            p = head.evidence()
            facts = {"strength": head.strength, "p_value": round(p, 6), "labels": head.learned}
            if p <= self.settings.max_p_value:
                return head.weights, facts
        offset = self._mix_offset(source) if self.settings.prior_shift else None
        if offset is not None and self.prior is not None:
            facts["mix_offset"] = [round(float(v), 3) for v in offset]
            return HeadWeights(self.prior.weight, self.prior.bias + offset), facts
        return None, facts

    def _decide(self, out: Outputs) -> None:
        """Every ``publish_every`` labels (or ``prior_window / 4`` messages) of a source, or at once when its head
        lost its evidence: choose what serves it (:meth:`_choose`); publish a heads version when that changes
        predictions."""
        due = {s for s, n in self.since_publish.items() if n >= self.settings.publish_every}
        due |= {s for s, n in self.since_mix.items() if n >= self.settings.prior_window // 4}
        due |= self.undecided
        self.undecided = set()
        if not due or self.scaler is None or self.base is None:
            return
        wanted = dict(self.serving)
        evidence: dict[str, dict[str, Any]] = {}
        gates = dict(self.routing)
        for source in sorted(due):
            self.since_publish[source] = 0
            self.since_mix[source] = 0
            chosen, evidence[source] = self._choose(source)
            if chosen is not None:
                wanted[source] = chosen
            else:
                wanted.pop(source, None)
            gate = self._gate(source)
            if gate is not None:
                gates[source] = gate
                evidence[source]["regimes"] = len(gate.heads) + 1
            else:
                gates.pop(source, None)
        rerouted = any(gates.get(s) is not self.routing.get(s) for s in due)
        if not rerouted and not any(self._changed(s, wanted.get(s)) for s in due):
            return
        try:
            event = self.registry.publish(
                HeadSet(base=self.base, scaler=self.scaler, heads=wanted, gates=gates),
                {"sources": sorted(wanted), "evidence": evidence},
            )
        except ChampionChanged as exc:  # new weights were promoted before their event reached this role
            log.info("fast path: heads not published (%s); they start afresh on the new weights", exc)
            self._start(self.registry.champion_base())
            return
        self.serving = wanted
        self.routing = gates
        self.published.append(event)
        out.events.append(event)
        out.publish.append((self.names.control, event.kind, event.to_bytes()))
        self.counts["published"] += 1
        log.info("fast path: %s serves heads for %s (%s)", event.model_version, sorted(wanted) or "no source", evidence)


def _log_loss(logits: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per-row log-loss of ``labels`` under ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[rows, labels]
