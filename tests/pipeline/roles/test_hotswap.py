"""Hot swap with real (tiny) transformers models, real artifacts, a real SQLite registry and the memory bus."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from prometheus_client import REGISTRY

from aet.pipeline.config import load_settings
from aet.pipeline.learning.promotion import Promoter
from aet.pipeline.model import SentimentModel
from aet.pipeline.ports import ModelInfo
from aet.pipeline.records import ScoredMessage, decode
from aet.pipeline.roles import hotswap
from aet.pipeline.roles.hotswap import ModelSwapper, SwapTarget
from aet.pipeline.runtime import App
from tests.pipeline.pipeline_fakes import Running, encode, message_payload
from tests.pipeline.tiny_model import register_tiny, tiny_model

TEXTS = ["$ACME beats estimates", "Globex cuts guidance and plans layoffs", "Initech holds its annual meeting"]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(
        load_settings(
            home=tmp_path / "home",
            model={"device": "cpu", "max_length": 32},
            scorer={"registry_poll_s": 3600, "max_batch": 32, "max_wait_ms": 5},
        )
    )
    yield a
    a.close()


def swapper_for(app: App, current: ModelInfo) -> ModelSwapper:
    return ModelSwapper(app.load_model(current), app.load_model)


def settle(swapper: ModelSwapper, timeout_s: float = 60.0) -> SentimentModel | None:
    assert swapper.wait_until_idle(timeout_s), "the swapper did not finish loading in time"
    return swapper.take()


# ------------------------------------------------------------------ the swapper


def test_a_promoted_version_is_loaded_in_the_background_and_taken_between_batches(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    v2 = register_tiny(app, seed=1, status="challenger")
    swapper = swapper_for(app, v1)
    try:
        assert swapper.take() is None  # nothing wanted yet
        swapper.request(SwapTarget.of(v2))
        model = settle(swapper)
        assert model is not None and model.version == "v0002" and swapper.serving == "v0002"
        expected = tiny_model(1).predict_proba(TEXTS)
        assert np.allclose(model.predict_proba(TEXTS), expected, atol=1e-5)  # the whole model, not a part of it
        assert swapper.take() is None and swapper.swaps == 1
        swapper.request(SwapTarget.of(v2))  # what serves already: nothing to do
        assert swapper.wait_until_idle(1.0) and swapper.take() is None
    finally:
        swapper.close()


def assert_refused(swapper: ModelSwapper, target: SwapTarget, reason: str) -> None:
    """Requesting ``target`` ends in a refusal naming ``reason``, and the serving version does not change."""
    serving, swaps = swapper.serving, swapper.swaps
    swapper.request(target)
    assert settle(swapper) is None
    assert (swapper.serving, swapper.swaps) == (serving, swaps)
    assert reason in swapper.refused[target.version]


def test_a_truncated_artifact_is_refused_and_the_champion_keeps_serving(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    v2 = register_tiny(app, seed=1, status="challenger")
    weights = Path(v2.artifact_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    swapper = swapper_for(app, v1)
    try:
        assert_refused(swapper, SwapTarget.of(v2), "truncated")
        assert swapper.serving == "v0001"
    finally:
        swapper.close()


def test_wrong_checksum_missing_artifact_and_other_label_set_are_refused(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    v2 = register_tiny(app, seed=1, status="challenger")
    swapper = swapper_for(app, v1)
    try:
        assert_refused(swapper, SwapTarget(v2.version, v2.artifact_path, "0" * 64), "does not match")
        assert_refused(swapper, SwapTarget(v2.version, v2.artifact_path + "-gone", v2.sha256), "has no manifest.json")
        assert_refused(
            swapper, SwapTarget(v2.version, v2.artifact_path, v2.sha256, ("bearish", "bullish")), "label set"
        )
        assert swapper.serving == "v0001"
    finally:
        swapper.close()


def test_a_model_with_broken_outputs_is_refused(app: App) -> None:
    v1 = register_tiny(app, seed=0)

    class NanModel:
        version = "v0003"
        heads = None

        def predict_proba(self, texts: list[str]) -> np.ndarray:
            return np.full((len(texts), 3), np.nan)

    swapper = ModelSwapper(app.load_model(v1), lambda target: NanModel())  # type: ignore[arg-type, return-value]
    try:
        assert_refused(swapper, SwapTarget("v0003", "/nowhere", "0" * 64), "non-finite")
    finally:
        swapper.close()


def test_two_promotions_in_quick_succession_end_with_the_newest_serving(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    v2, v3 = register_tiny(app, seed=1, status="challenger"), register_tiny(app, seed=2, status="challenger")
    slow = threading.Event()

    def load(target: SwapTarget) -> SentimentModel:
        if target.version == "v0002":
            slow.wait(10)  # still loading v0002 when v0003 is promoted
        return app.load_model(target)

    swapper = ModelSwapper(app.load_model(v1), load)
    try:
        swapper.request(SwapTarget.of(v2))
        swapper.request(SwapTarget.of(v3))
        slow.set()
        taken = [m.version for m in iter(lambda: settle(swapper), None)]
        assert taken == ["v0003"] and swapper.serving == "v0003"
    finally:
        swapper.close()


def test_fifty_swaps_leave_resident_memory_within_a_bounded_growth(app: App) -> None:
    """Two artifacts of ~17 MB of weights each, swapped 50 times; a leak would keep every copy (~850 MB)."""
    kw = {"hidden_size": 128, "intermediate_size": 256}
    v1 = register_tiny(app, seed=0, **kw)
    v2 = register_tiny(app, seed=1, status="challenger", **kw)
    weights_mb = (Path(v1.artifact_path) / "model.safetensors").stat().st_size / 2**20
    scorer = app.scorer(app.load_model(v1))
    swapper = ModelSwapper(scorer.model, app.load_model)
    scorer.swapper = swapper
    process = psutil.Process()
    try:
        rss = []
        for i in range(50):
            swapper.request(SwapTarget.of(v2 if i % 2 == 0 else v1))
            assert swapper.wait_until_idle(60)
            scorer.before_batch()  # the scorer's swap point
            assert scorer.model.version == ("v0002" if i % 2 == 0 else "v0001")
            rss.append(process.memory_info().rss / 2**20)
        growth = rss[-1] - rss[9]
        print(f"rss MiB after swaps 1, 10, 50: {rss[0]:.0f}, {rss[9]:.0f}, {rss[-1]:.0f}; weights {weights_mb:.1f} MiB")
        assert swapper.swaps == 50
        assert growth < 3 * weights_mb, (
            f"resident memory grew {growth:.0f} MiB over 40 swaps ({weights_mb:.0f} MiB model)"
        )
    finally:
        swapper.close()


# ------------------------------------------------------------------ under load, through the scorer role


def test_promotion_and_rollback_under_a_full_speed_stream_score_every_message_once_by_a_whole_model(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    register_tiny(app, seed=1, status="challenger")  # v0002, promoted below
    topics = app.settings.topics
    n = 3000
    payloads = [message_payload(i, text=f"{TEXTS[i % 3]} (item {i})", entities=[f"$T{i % 7}"]) for i in range(n)]
    promoter = Promoter(app.registry)
    published = threading.Event()

    def produce() -> None:
        for p in payloads:
            app.bus.publish(topics.messages, encode(p), key=p["entities"][0])
        app.bus.flush()
        published.set()

    def scored_versions() -> list[str]:
        return [json.loads(r.value)["model_version"] for r in app.bus.read_all(topics.scored)]

    def wait_for(condition: Any, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert run.error is None, f"scorer died: {run.error!r}"
            scorer.wait_for_commit(0.2)

    with app.serving_scorer(v1) as scorer:
        run = Running(scorer)
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_for(lambda: len(scored_versions()) >= 300, "the first scores")
        for event in [promoter.promote("v0002", reason="test")]:
            app.bus.publish(topics.control, event.to_bytes(), key=event.kind)
        wait_for(lambda: "v0002" in scored_versions(), "the first score by v0002")
        at_rollback = len(scored_versions())
        event = promoter.rollback(reason="test")
        app.bus.publish(topics.control, event.to_bytes(), key=event.kind)
        wait_for(
            lambda: scored_versions()[-1:] == ["v0001"] and scored_versions().count("v0001") > 300,
            "scores by v0001 again",
        )
        producer.join(60)
        assert published.is_set()
        run.wait_committed(app.bus, [topics.messages], timeout_s=120)
        run.finish()
    assert run.error is None
    assert at_rollback < n, "the stream ended before the rollback: not a test under load"

    out = [decode(ScoredMessage, r.value) for r in app.bus.read_all(topics.scored)]
    assert sorted(m.id for m in out) == sorted(p["id"] for p in payloads)  # every message once on aet.scored
    assert sorted(app.store.scored_ids()) == sorted(p["id"] for p in payloads)  # and once in the store
    by_partition: dict[int, list[str]] = {}
    for r in app.bus.read_all(topics.scored):
        by_partition.setdefault(r.partition, []).append(json.loads(r.value)["model_version"])
    for partition, versions in by_partition.items():
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        # a contiguous part of the swap order v0001 -> v0002 -> v0001: never back and forth
        assert " ".join(runs) in "v0001 v0002 v0001", f"partition {partition}: versions went {runs}"
    assert {m.model_version for m in out} == {"v0001", "v0002"}
    models = {"v0001": tiny_model(0), "v0002": tiny_model(1)}
    texts = [m.text for m in out]
    expected = {v: m.predict_proba(texts) for v, m in models.items()}
    for i, m in enumerate(out):  # each output is exactly what its named version computes: no half-loaded model
        got = [m.probs.negative, m.probs.neutral, m.probs.positive]
        assert np.allclose(got, expected[m.model_version][i], atol=1e-4), (m.id, m.model_version)


# ------------------------------------------------------------------ fast-path heads versions


def publish_heads(app: App, base: ModelInfo, flip: bool = True) -> ModelInfo:
    """Publish heads for source chat on ``base`` through the fast path's registry port; the new champion."""
    from aet.pipeline.learning.heads import FeatureScaler, HeadSet, HeadWeights, widen
    from aet.pipeline.runtime import FastPathRegistry

    own = app.load_model(base).own_head()
    pooled = own.weight.shape[1]
    head = widen(own, pooled)
    if flip:  # reads the classes backwards: visibly not the model's own layer
        head = HeadWeights(-head.weight, -head.bias)
    heads = HeadSet(base.version, FeatureScaler(pooled, np.zeros(pooled), np.ones(pooled)), {"chat": head})
    event = FastPathRegistry(app).publish(heads, {"sources": ["chat"]})
    assert event.kind == "heads" and event.model_version == f"{base.version}.h1"
    champion = app.registry.champion()
    assert champion is not None and champion.version == event.model_version
    return champion


def test_a_heads_version_serves_its_sources_on_the_weights_already_loaded(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    serving = app.load_model(v1, share_weights=True)
    h1 = publish_heads(app, v1)
    assert h1.parent == v1.version and h1.weights_version == v1.version and h1.info["kind"] == "heads"
    model = app.serving_model(h1)
    assert model.version == h1.version and model.base == v1.version
    assert model.model is serving.model  # the heads sit on the loaded weights: nothing loaded twice
    news, chat = model.predict_proba(TEXTS, ["news"] * 3), model.predict_proba(TEXTS, ["chat"] * 3)
    np.testing.assert_allclose(news, serving.predict_proba(TEXTS), atol=1e-6)  # no head for news: its own layer
    assert not np.allclose(chat, news, atol=1e-3)
    # What the weights alone say is kept beside what the head served (the drift monitor watches the weights).
    both = model.predict(TEXTS, ["chat", "news", "chat"])
    assert both.base_probs is not None and np.isnan(both.base_probs[1]).all()
    np.testing.assert_allclose(both.base_probs[[0, 2]], news[[0, 2]], atol=1e-6)
    # Loaded for training, a heads version brings its own copy of the weights.
    assert app.load_model(h1).model is not serving.model


def test_a_tampered_heads_artifact_is_refused(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    h1 = publish_heads(app, v1)
    path = Path(h1.artifact_path) / "heads.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight, same size
    path.write_bytes(bytes(data))
    swapper = swapper_for(app, v1)
    try:
        assert_refused(swapper, SwapTarget.of(h1), "sha256")
    finally:
        swapper.close()


def test_heads_whose_regime_gate_does_not_fit_the_features_are_refused(app: App) -> None:
    from dataclasses import replace

    from aet.pipeline.learning.heads import RegimeGate
    from aet.pipeline.roles.hotswap import SwapRefused, check_heads

    v1 = register_tiny(app, seed=0)
    model = app.serving_model(publish_heads(app, v1))
    assert model.heads is not None
    width = len(model.heads.scaler.center)
    fits = RegimeGate(np.zeros((2, width)), np.zeros(2), (None,))
    check_heads(replace(model, heads=replace(model.heads, gates={"news": fits})))
    for bad, why in [
        (RegimeGate(np.zeros((2, width + 1)), np.zeros(2), (None,)), "regime gate"),
        (RegimeGate(np.zeros((3, width)), np.zeros(3), (None,)), "regime gate"),
        (RegimeGate(np.full((2, width), np.nan), np.zeros(2), (None,)), "non-finite"),
        (replace(fits, heads=(model.heads.heads["chat"].__class__(np.zeros((3, 2)), np.zeros(3)),)), "regime 0"),
    ]:
        with pytest.raises(SwapRefused, match=why):
            check_heads(replace(model, heads=replace(model.heads, gates={"news": bad})))


def test_the_champion_follower_swaps_heads_versions_in_from_the_control_topic(app: App) -> None:
    v1 = register_tiny(app, seed=0)
    with app.serving_scorer(v1) as scorer:
        publish_heads(app, v1)
        champion = app.registry.champion()
        assert champion is not None
        from aet.pipeline.records import ControlEvent

        app.bus.publish(
            app.settings.topics.control, ControlEvent(kind="heads", model_version=champion.version).to_bytes()
        )
        assert scorer.swapper is not None and scorer.swapper.wait_until_idle(60)
        deadline = time.monotonic() + 60
        while scorer.model.version != champion.version and time.monotonic() < deadline:
            scorer.before_batch()
            scorer.swapper.wait_until_idle(1)
        assert scorer.model.version == champion.version and scorer.model.base == v1.version


# ------------------------------------------------------------------ retries of a refused load (issue 13)


def _swap_metric(outcome: str) -> float:
    return REGISTRY.get_sample_value("aet_model_swaps_total", {"role": "scorer", "outcome": outcome}) or 0.0


def test_a_refused_load_is_retried_with_backoff_and_swaps_in_once_the_artifact_is_whole(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = register_tiny(app, seed=0)
    v2 = register_tiny(app, seed=1, status="challenger")
    (weights,) = Path(v2.artifact_path).glob("*.safetensors")
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # still being copied
    tries: list[float] = []

    def load(target: SwapTarget) -> SentimentModel:
        tries.append(time.monotonic())
        if len(tries) == 3:
            weights.write_bytes(whole)  # the copy completes before the third try
        return app.load_model(target)

    retries_before = _swap_metric("retry")
    swapper = ModelSwapper(app.load_model(v1), load, retries=3, retry_backoff_s=0.1)
    try:
        swapper.request(SwapTarget.of(v2))
        model = settle(swapper)
        assert model is not None and model.version == "v0002" and swapper.serving == "v0002"
        assert len(tries) == 3 and "v0002" not in swapper.refused
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # the backoff doubles
        assert _swap_metric("retry") == retries_before + 2
        logged = [r.getMessage() for r in caplog.records if "refused to swap in v0002" in r.getMessage()]
        assert len(logged) == 2 and "retry 1 of 3" in logged[0] and "retry 2 of 3" in logged[1]
    finally:
        swapper.close()


def test_retries_are_bounded_and_the_champion_keeps_serving(app: App, caplog: pytest.LogCaptureFixture) -> None:
    v1 = register_tiny(app, seed=0)
    tries: list[SwapTarget] = []

    def load(target: SwapTarget) -> SentimentModel:
        tries.append(target)
        raise OSError("the artifact share is away")

    swapper = ModelSwapper(app.load_model(v1), load, retries=2, retry_backoff_s=0.05)
    try:
        target = SwapTarget("v0009", "/nowhere", "0" * 64)
        assert_refused(swapper, target, "share is away")
        assert len(tries) == 3 and swapper.serving == "v0001"
        assert swapper.wait_until_idle(1) and len(tries) == 3  # given up: not tried again
        assert any("given up after 3 attempts" in r.getMessage() for r in caplog.records)
    finally:
        swapper.close()


# ------------------------------------------------------------------ serving precision


def test_an_int8_champion_is_verified_converted_and_warmed_up_before_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = App(
        load_settings(
            home=tmp_path / "home",
            model={"device": "cpu", "max_length": 32, "precision": "int8"},
            scorer={"swap_retries": 0},
        )
    )
    try:
        v1 = register_tiny(a, seed=0)
        v2 = register_tiny(a, seed=1, status="challenger")
        serving = a.serving_model(v1)
        assert serving.precision == "int8"
        assert a.load_model(v1).precision == "float32"  # a model loaded to train keeps its float32 weights
        swapper = a.swapper(serving)
        warmed: list[str] = []
        real_warm_up = hotswap.warm_up

        def recording_warm_up(model: SentimentModel, texts: Any) -> None:
            warmed.append(f"{model.version}:{model.precision}")
            real_warm_up(model, texts)

        monkeypatch.setattr(hotswap, "warm_up", recording_warm_up)
        try:
            assert_refused(swapper, SwapTarget(v2.version, v2.artifact_path, "0" * 64), "does not match")
            swapper.request(SwapTarget.of(v2))
            model = settle(swapper)
        finally:
            swapper.close()
        assert model is not None and model.version == "v0002" and model.precision == "int8"
        assert warmed == ["v0002:int8"]  # the converted form is what was warmed up and checked (once verified)
        expected = tiny_model(1).predict_proba(TEXTS)
        assert np.allclose(model.predict_proba(TEXTS), expected, atol=0.02)
    finally:
        a.close()
