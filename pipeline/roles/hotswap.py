"""Hot swap: a promoted (or rolled-back-to) model reaches a running scorer between two batches.

Three small parts, each with one job:

- :class:`SwapTarget` names the version that should serve (version, artifact
  path, sha256, label set), as the registry and the ``champion`` payload of
  promotion and rollback events give it.
- :class:`ModelSwapper` loads the wanted version on a background thread:
  verifies the artifact's sha256 and label set, loads it, warms it up on a few
  inputs and checks its outputs, then offers it. The scorer takes the offer in
  ``before_batch``, i.e. with no batch in flight, so every batch is scored by
  exactly one fully loaded model, and the old model is released right after.
  A refused artifact (missing, truncated, wrong checksum, wrong labels, bad
  outputs) is logged with its reason and counted; the current model keeps
  serving, and the load is tried again ``retries`` times with a doubling backoff
  (an artifact still being copied, a disk or a network share that was away),
  each retry logged and counted, before it is given up. When a newer target
  arrives while one is loading, the older load is discarded: two promotions in
  quick succession end with the newest serving.
- :class:`ChampionFollower` tells the swapper what to want: on start and every
  ``registry_poll_s`` from the registry, and at once on every promotion or
  rollback read from ``aet.control`` (each scorer process reads the whole
  control topic under a group of its own, without committing). The event is a
  trigger; the registry says which version is the champion now, so events read
  out of order or replayed from the past cannot bring back an old version.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aet.pipeline import metrics
from aet.pipeline.model import SentimentModel
from aet.pipeline.ports import Bus, BusError, Consumer, ModelInfo, RegistryReader
from aet.pipeline.records import LABELS, BadRecord, ControlEvent, decode

log = logging.getLogger(__name__)
SWAP_KINDS = frozenset({"promotion", "rollback", "heads"})
WARMUP_TEXTS = (
    "Shares of $ACME jumped 12% after the company beat quarterly earnings estimates.",
    "The bank cut its full-year guidance and announced 2,000 layoffs.",
    "The board will hold its annual general meeting on Thursday.",
    "ok",
)


class SwapRefused(RuntimeError):
    """A model version cannot serve: its artifact or its outputs are not what the registry promises."""


@dataclass(frozen=True)
class SwapTarget:
    """The version that should serve, and what its artifact must match."""

    version: str
    artifact_path: str
    sha256: str
    labels: tuple[str, ...] = tuple(LABELS)

    @classmethod
    def of(cls, info: ModelInfo) -> SwapTarget:
        return cls(info.version, info.artifact_path, info.sha256, tuple(info.labels))


def warm_up(model: SentimentModel, texts: Sequence[str] = WARMUP_TEXTS) -> None:
    """Run the model once on ``texts`` and refuse it unless every row is a probability distribution."""
    probs = np.asarray(model.predict_proba(list(texts)), dtype=np.float64)
    if probs.shape != (len(texts), 3):
        raise SwapRefused(f"warm-up returned probabilities of shape {probs.shape}, expected ({len(texts)}, 3)")
    if not np.isfinite(probs).all() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise SwapRefused("warm-up returned non-finite probabilities or rows that do not sum to 1")
    if model.heads is not None:
        check_heads(model)


def check_heads(model: SentimentModel) -> None:
    """Refuse fast-path heads that do not fit the model's features or give no probabilities."""
    assert model.heads is not None
    pooled = model.own_head().weight.shape[1]
    scaler = model.heads.scaler
    width = pooled + len(scaler.center)
    if scaler.pooled_dim != pooled or len(scaler.scale) != len(scaler.center) or not (scaler.scale > 0).all():
        raise SwapRefused(f"the heads' feature scaler does not fit the model's {pooled} pooled features")
    heads = [(repr(source), head) for source, head in model.heads.heads.items()]
    for source, gate in model.heads.gates.items():
        regimes = len(gate.heads) + 1
        if gate.weight.shape != (regimes, len(scaler.center)) or gate.bias.shape != (regimes,):
            raise SwapRefused(f"the regime gate of {source!r} has shape {gate.weight.shape}, the features {width}")
        if not (np.isfinite(gate.weight).all() and np.isfinite(gate.bias).all()):
            raise SwapRefused(f"the regime gate of {source!r} has non-finite weights")
        heads += [(f"{source!r} (regime {k})", h) for k, h in enumerate(gate.heads) if h is not None]
    for name, head in heads:
        if head.weight.shape != (3, width) or head.bias.shape != (3,):
            raise SwapRefused(f"the head of {name} has shape {head.weight.shape}, the features {width}")
        if not (np.isfinite(head.weight).all() and np.isfinite(head.bias).all()):
            raise SwapRefused(f"the head of {name} has non-finite weights")


def release_memory() -> None:
    """Give the memory of dropped models back: collect, empty the CUDA cache, trim the C heap (glibc)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps what it keeps
        pass


class ModelSwapper:
    """Loads the wanted model version in the background and hands it over between batches."""

    def __init__(
        self,
        current: SentimentModel,
        load: Callable[[SwapTarget], SentimentModel],
        *,
        warmup_texts: Sequence[str] = WARMUP_TEXTS,
        role: str = "scorer",
        retries: int = 0,
        retry_backoff_s: float = 2.0,
        max_retry_backoff_s: float = 60.0,
    ) -> None:
        self.serving = current.version
        self.serving_weights = current.model  # a heads version on these needs no warm-up forward pass
        self.role = role
        self.swaps = 0
        self.refused: dict[str, str] = {}  # version -> reason of its last refusal
        self._refused: set[SwapTarget] = set()  # given up after its retries (a new target for the same version is not)
        self.retries, self.retry_backoff_s, self.max_retry_backoff_s = retries, retry_backoff_s, max_retry_backoff_s
        self._attempts: dict[SwapTarget, int] = {}  # failed loads of a target
        self._retry_at: dict[SwapTarget, float] = {}  # monotonic time before which a failed target is not loaded again
        self._load = load
        self._warmup_texts = tuple(warmup_texts)
        self._cond = threading.Condition()
        self._wanted: SwapTarget | None = None
        self._ready: SentimentModel | None = None
        self._retired: list[SentimentModel] = []
        self._closed = False
        self._requested_at: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name=f"aet-{role}-swap", daemon=True)
        self._thread.start()

    def request(self, target: SwapTarget) -> None:
        """Want ``target`` to serve (the newest request wins); a no-op for the version serving or loading.

        A model loaded for an earlier request and not yet taken is dropped.
        """
        with self._cond:
            if self._wanted == target or (self._wanted is None and target.version == self.serving):
                return
            dropped, self._ready = self._ready, None
            if target.version == self.serving:
                self._wanted = None  # back to what serves: cancel the pending load
                log.info("%s: %s is wanted again; pending swap cancelled", self.role, target.version)
            else:
                log.info("%s: loading %s in the background (serving %s)", self.role, target.version, self.serving)
                self._wanted = target
                self._requested_at[target.version] = time.monotonic()
            self._cond.notify_all()
        if dropped is not None:
            metrics.MODEL_SWAPS.labels(self.role, "superseded").inc()
            del dropped
            release_memory()

    def take(self) -> SentimentModel | None:
        """The loaded, verified, warmed-up model to serve from the next batch on, if one is ready."""
        with self._cond:
            model, self._ready = self._ready, None
            if model is None:
                return None
            previous, self.serving, self._wanted = self.serving, model.version, None
            self.serving_weights = model.model
            self.swaps += 1
            self._cond.notify_all()
        requested = self._requested_at.pop(model.version, None)
        metrics.MODEL_SWAPS.labels(self.role, "swapped").inc()
        metrics.MODEL_VERSION.info({"version": model.version})
        log.info(
            "%s: swapped %s -> %s%s",
            self.role,
            previous,
            model.version,
            f" ({time.monotonic() - requested:.2f}s after the request)" if requested else "",
        )
        return model

    def retire(self, model: SentimentModel) -> None:
        """Hand over the model a swap replaced; it is released on the swapper's thread, off the scoring path."""
        with self._cond:
            self._retired.append(model)
            self._cond.notify_all()

    def wait_until_idle(self, timeout_s: float) -> bool:
        """Block until nothing is loading: the wanted model is ready to take, refused, or already serving."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._wanted is not None and self._ready is None and self._wanted not in self._refused:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._ready = None
            self._cond.notify_all()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        _lower_thread_priority()  # loading competes with scoring for the CPU: let scoring win
        while True:
            with self._cond:
                while (
                    not self._closed
                    and not self._retired
                    and (self._wanted is None or self._ready is not None or self._wanted in self._refused)
                ):
                    self._cond.wait()
                if self._closed:
                    self._retired.clear()
                    return
                retired, self._retired = self._retired, []
                target = self._wanted if self._ready is None and self._wanted not in self._refused else None
                if target is not None and self._retry_at.get(target, 0.0) > time.monotonic():
                    if not retired:  # a refused load waits for its retry (a new request or close wakes us)
                        self._cond.wait(self._retry_at[target] - time.monotonic())
                        continue
                    target = None  # release the retired models first, then come back to wait
            if retired:
                del retired
                release_memory()
            if target is None:
                continue
            model = self._prepare(target)
            with self._cond:
                if model is not None and self._wanted == target and not self._closed:
                    self._ready = model
                    model = None
                elif model is not None:
                    metrics.MODEL_SWAPS.labels(self.role, "superseded").inc()
                    log.info("%s: %s loaded but no longer wanted; discarded", self.role, target.version)
                self._cond.notify_all()
            if model is not None:
                del model
                release_memory()

    def _prepare(self, target: SwapTarget) -> SentimentModel | None:
        """Load, verify and warm up ``target``; ``None`` (logged, counted) when it is refused."""
        started = time.perf_counter()
        try:
            if set(target.labels) != set(LABELS):
                raise SwapRefused(f"label set {sorted(target.labels)} is not {sorted(LABELS)}")
            model = self._load(target)
            if model.version != target.version:
                raise SwapRefused(f"loaded version {model.version!r}, expected {target.version!r}")
            if model.heads is not None and model.model is self.serving_weights:
                check_heads(model)  # the weights already serve: only the heads are new (milliseconds)
            else:
                warm_up(model, self._warmup_texts)
        except Exception as exc:  # noqa: BLE001 - whatever breaks, the current model keeps serving
            self._refuse(target, f"{type(exc).__name__}: {exc}")
            release_memory()
            return None
        metrics.SWAP_SECONDS.labels(self.role).observe(time.perf_counter() - started)
        with self._cond:
            self.refused.pop(target.version, None)
            self._attempts.pop(target, None)
            self._retry_at.pop(target, None)
        return model

    def _refuse(self, target: SwapTarget, reason: str) -> None:
        """Count a failed load of ``target``: schedule its next try with backoff, or give it up after ``retries``.

        Logged and counted before the state changes, so that whoever waits on the swapper sees both.
        """
        with self._cond:
            self.refused[target.version] = reason
            attempt = self._attempts.get(target, 0) + 1
            self._attempts[target] = attempt
        retry = attempt <= self.retries
        delay = min(self.retry_backoff_s * 2 ** (attempt - 1), self.max_retry_backoff_s)
        metrics.MODEL_SWAPS.labels(self.role, "refused").inc()
        if retry:
            metrics.MODEL_SWAPS.labels(self.role, "retry").inc()
            log.warning(
                "%s: refused to swap in %s, %s keeps serving: %s; retry %d of %d in %.2gs",
                self.role,
                target.version,
                self.serving,
                reason,
                attempt,
                self.retries,
                delay,
            )
        else:
            log.error(
                "%s: refused to swap in %s, %s keeps serving: %s%s",
                self.role,
                target.version,
                self.serving,
                reason,
                f" (given up after {attempt} attempts)" if self.retries else "",
            )
        with self._cond:
            if retry:
                self._retry_at[target] = time.monotonic() + delay
            else:
                self._refused.add(target)
                self._retry_at.pop(target, None)
            self._cond.notify_all()


class ChampionFollower:
    """Keeps a :class:`ModelSwapper` wanting the registry's champion: at start, on control events, and by polling."""

    def __init__(
        self,
        bus: Bus,
        control_topic: str,
        registry: RegistryReader,
        swapper: ModelSwapper,
        *,
        group_prefix: str = "aet-scorer",
        registry_poll_s: float = 30.0,
    ) -> None:
        self.bus = bus
        self.control_topic = control_topic
        self.registry = registry
        self.swapper = swapper
        self.registry_poll_s = registry_poll_s
        # Every scorer process must see every event: a group of its own, never committed.
        self.group = f"{group_prefix}-control-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.events_seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ChampionFollower:
        self._thread = threading.Thread(target=self.run, name="aet-champion-follower", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check_registry(self) -> None:
        """Want whatever the registry says is the champion now."""
        info = self.registry.champion()
        if info is not None:
            self.swapper.request(SwapTarget.of(info))

    def run(self) -> None:
        next_check = 0.0
        consumer: Consumer | None = None
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_check:
                    self.check_registry()
                    next_check = time.monotonic() + self.registry_poll_s
                if consumer is None:
                    consumer = self.bus.consumer(self.group, [self.control_topic])
                records = consumer.poll(100, timeout_ms=200)
            except Exception as exc:  # noqa: BLE001 - a bus or database outage must not end the follower
                log.warning("champion follower: %s: %s; retrying", type(exc).__name__, exc)
                if consumer is not None and isinstance(exc, BusError):
                    _close_quietly(consumer)
                    consumer = None
                self._stop.wait(1.0)
                continue
            if any(_is_swap_event(r.value) for r in records):
                self.events_seen += 1
                next_check = 0.0  # ask the registry now
        if consumer is not None:
            _close_quietly(consumer)


def _lower_thread_priority(niceness: int = 10) -> None:
    """Raise this thread's nice value (Linux schedules threads separately); elsewhere, do nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def _is_swap_event(raw: bytes) -> bool:
    try:
        return decode(ControlEvent, raw).kind in SWAP_KINDS
    except BadRecord:
        return False  # the control topic's other writers validate their own records


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except Exception as exc:  # noqa: BLE001 - the consumer is being dropped anyway
        log.debug("closing the control consumer failed: %s", exc)
