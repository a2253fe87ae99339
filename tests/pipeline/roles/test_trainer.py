"""The trainer role on a tiny champion: requests in, challengers, gate decisions, rejections and crashes out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aet.pipeline.config import load_settings
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.fisher import load_fisher
from aet.pipeline.learning.promotion import GateDecision
from aet.pipeline.learning.rehearsal import Reservoir
from aet.pipeline.learning.terms.elastic import ElasticAnchor
from aet.pipeline.learning.trainable import trained_names
from aet.pipeline.records import LABELS, ControlEvent, LabelRecord, Probs, RetrainRequest, ScoredMessage
from aet.pipeline.roles.trainer import TrainerRole
from aet.pipeline.runtime import App
from aet.pipeline.signing import check, signature
from aet.storage.artifacts import verify
from aet.storage.lineage import lineage
from aet.storage.tables import ControlEventRow
from aet.storage.training_store import TrainingStore
from tests.pipeline.tiny_model import register_tiny, synthetic_examples, tiny_model

RETRAIN = {
    "epochs": 1,
    "min_examples": 30,
    "fisher_samples": 16,
    "batch_size": 16,
    "min_holdout": 5,
    "reservoir_per_source": 60,
    "learning_rate": 5e-3,
    "mode": "attention",
    "seed": 3,
}


def make_app(tmp_path: Path, control: dict[str, Any] | None = None, **retrain: Any) -> App:
    settings = load_settings(
        home=tmp_path / "home",
        model={"device": "cpu", "max_length": 32},
        retrain={**RETRAIN, "allowed_data_dirs": [tmp_path], **retrain},
        control=control or {},
    )
    app = App(settings)
    register_tiny(app, info={"origin": "bootstrap"})
    Reservoir(TrainingStore(app.db), 60, seed=3).add(synthetic_examples(120, seed=9, prefix="old "))
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(tmp_path)
    yield a
    a.close()


def write_data(path: Path, examples: list[Example]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": e.id, "text": e.text, "label": LABELS[e.label], "source": e.source}) + "\n"
            for e in examples
        )
    )
    return path


def request(app: App, payload: Any, **fields: Any) -> ControlEvent:
    event = ControlEvent(kind="retrain_request", payload=payload, **fields)
    app.bus.publish(app.settings.topics.control, event.to_bytes(), key=event.kind)
    return event


def run_trainer(app: App, **kwargs: Any) -> TrainerRole:
    role = app.trainer(progress=False, retry_backoff_s=0.0)
    for k, v in kwargs.items():
        setattr(role, k, v)
    role.run(threading.Event(), drain=True)
    return role


def stored_events(app: App, kind: str | None = None) -> list[ControlEventRow]:
    with app.db.session() as s:
        q = select(ControlEventRow).order_by(ControlEventRow.ts)
        if kind:
            q = q.where(ControlEventRow.kind == kind)
        return list(s.scalars(q))


def versions(app: App) -> dict[str, str]:
    return {m.version: m.status for m in app.registry.list()}


def final_artifacts(app: App) -> list[str]:
    return sorted(p.name for p in app.artifacts.root.iterdir() if not p.name.startswith("."))


def test_a_request_trains_registers_and_records_lineage(app: App, tmp_path: Path) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    drift = ControlEvent(kind="drift", payload={"detector": "adwin", "signal": "error"})
    app.store.write(events=[drift])
    req = request(app, {"data": str(data), "drift_event_id": drift.id, "auto_promote": False})

    run_trainer(app)

    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}
    info = app.registry.get("v0002")
    assert info.parent == "v0001" and info.info["request_id"] == req.id
    verify(Path(info.artifact_path), info.sha256)  # sealed, with its sha256
    files = {p.name for p in Path(info.artifact_path).iterdir()}
    assert {"model.safetensors", "config.json", "fisher.safetensors", "training.json", "manifest.json"} <= files
    fisher = load_fisher(Path(info.artifact_path))
    assert set(fisher) == set(trained_names(tiny_model().model, "attention"))
    assert info.metrics["holdout_recent"]["n"] > 0 and info.metrics["holdout_older"]["n"] > 0

    result = stored_events(app, "training_result")
    assert len(result) == 1 and result[0].model_version == "v0002" and result[0].payload["request_id"] == req.id
    on_bus = [json.loads(r.value) for r in app.bus.read_all(app.settings.topics.control)]
    assert [e["kind"] for e in on_bus] == ["retrain_request", "training_result"]

    shown = lineage(app.registry, app.training_store, "v0002")
    assert shown["parent"] == "v0001" and shown["ancestors"] == ["v0001"]
    assert shown["drift_event"]["id"] == drift.id and shown["drift_event"]["payload"]["detector"] == "adwin"
    assert shown["training_request"]["id"] == req.id and shown["training_request"]["stored"] is False
    assert shown["data_window"]["data"] == str(data)
    assert shown["training"]["mode"] == "attention" and shown["training"]["fisher"]["merged"] is True
    assert [d["kind"] for d in shown["decisions"]] == ["training_result"]
    assert shown["alerts"] == {"count": 0, "latest": []}
    assert lineage(app.registry, app.training_store, "v0001")["children"] == ["v0002"]

    run = TrainingStore(app.db).get_run(req.id)
    assert run["status"] == "registered" and run["attempts"] == 1 and run["version"] == "v0002"
    # this round's examples are now "older" data for the next one
    held_ids = {e.id for e in Reservoir(TrainingStore(app.db), 60, seed=3).examples()}
    assert any(i.startswith("news-new ") for i in held_ids)


def test_labeled_window_from_the_database(app: App) -> None:
    base = datetime(2024, 3, 1, tzinfo=UTC)
    examples = synthetic_examples(120, seed=5, prefix="db ")
    scored, labels = [], []
    for i, e in enumerate(examples):
        ts = base + timedelta(minutes=i)
        source = "news" if i % 4 else "chat"
        scored.append(
            ScoredMessage(
                id=f"m{i}",
                source=source,
                text=e.text,
                ts=ts,
                label="neutral",
                probs=Probs(negative=0.2, neutral=0.6, positive=0.2),
                score=0.0,
                model_version="v0001",
            )
        )
        labels.append(LabelRecord(message_id=f"m{i}", label=LABELS[e.label], ts=ts))
    app.store.write(scored=scored, labels=labels[:110])  # the last 10 have no label yet
    window = {"start": (base + timedelta(minutes=20)).isoformat(), "end": (base + timedelta(minutes=120)).isoformat()}
    req = request(app, {"window": window, "source": "news", "auto_promote": False})

    run_trainer(app)

    info = app.registry.get("v0002")
    # minutes 20..109 are labeled; 3 in 4 of them are news
    assert info.info["examples"]["labeled"] == sum(1 for i in range(20, 110) if i % 4)
    assert info.info["window"] == {"start": window["start"], "end": window["end"]}
    assert info.info["source"] == "news" and info.info["request_id"] == req.id


def _store_labeled(app: App, n: int, base: datetime) -> None:
    """``n`` labeled news messages, one a minute from ``base``."""
    examples = synthetic_examples(n, seed=5, prefix="episode ")
    scored = [
        ScoredMessage(
            id=f"m{i}",
            source="news",
            text=e.text,
            ts=base + timedelta(minutes=i),
            label="neutral",
            probs=Probs(negative=0.2, neutral=0.6, positive=0.2),
            score=0.0,
            model_version="v0001",
        )
        for i, e in enumerate(examples)
    ]
    labels = [
        LabelRecord(message_id=m.id, label=LABELS[e.label], ts=m.ts) for m, e in zip(scored, examples, strict=True)
    ]
    app.store.write(scored=scored, labels=labels)


@pytest.mark.parametrize("trains_on", ["new", "episode"])
def test_a_follow_up_round_trains_on_what_its_champion_has_not_learned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trains_on: str
) -> None:
    app = make_app(tmp_path, followup_trains_on=trains_on)
    try:
        monkeypatch.setattr("aet.pipeline.roles.trainer.decide", _always_promote)
        base = datetime(2024, 3, 1, tzinfo=UTC)
        _store_labeled(app, 200, base)
        start = base.isoformat()
        first = {"start": start, "end": (base + timedelta(minutes=100)).isoformat()}
        request(app, {"window": first, "source": "news", "drift_event_id": "d1"})
        run_trainer(app)
        assert app.registry.champion().version == "v0002"

        whole = {"start": start, "end": (base + timedelta(minutes=200)).isoformat()}
        role = app.trainer(progress=False)
        data = role.prepare(RetrainRequest.model_validate({"window": whole, "source": "news", "drift_event_id": "d1"}))
        other = role.prepare(RetrainRequest.model_validate({"window": whole, "source": "news", "drift_event_id": "d2"}))

        trained = {e.id for e in data.recent_train + data.validation}
        held_out = {e.id for e in data.recent_holdout}
        assert len(data.examples) == 200 and len(held_out) > 0  # the gate's slice still covers the whole episode
        if trains_on == "new":
            assert trained == {f"m{i}" for i in range(100, 200)} - held_out
            learned = {f"m{i}" for i in range(100)} - held_out
            assert data.learned == len(learned) and learned <= {e.id for e in data.replay_train}
        else:
            assert trained == {f"m{i}" for i in range(200)} - held_out and data.learned == 0
        # another episode's round owes nothing to this champion's window
        assert other.learned == 0 and len(other.recent_train) + len(other.validation) == 200 - len(held_out)
    finally:
        app.close()


BAD_REQUESTS = [
    ({"window": {"start": "2024-02-01", "end": "2024-01-01"}}, "is not after its start"),
    ({"mode": "everything"}, "corrupt retrain request: mode"),
    ({"window": "yesterday"}, "window must be an object"),
    ({"max_examples": 0}, "max_examples"),
    ({"window": {"start": "2020-01-01", "end": "2020-01-02"}}, "only 0 labeled examples; at least 30"),
    ({"data": "nonexistent/labels.jsonl"}, "training data not found"),  # inside the allowed tmp_path
]


def test_bad_requests_are_rejected_with_a_reason_and_the_trainer_goes_on(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = [(request(app, payload).id, reason) for payload, reason in BAD_REQUESTS]
    good_data = write_data(tmp_path / "good.jsonl", synthetic_examples(60, seed=2))
    good = request(app, {"data": str(good_data), "auto_promote": False})
    app.bus.publish(app.settings.topics.control, b"{not json", key="retrain_request")

    run_trainer(app)

    reasons = {e.payload["request_id"]: e.payload["reason"] for e in stored_events(app, "rejection")}
    assert len(reasons) == len(BAD_REQUESTS)
    for request_id, reason in bad:
        assert reason in reasons[request_id], (reason, reasons[request_id])
        assert TrainingStore(app.db).get_run(request_id)["status"] == "rejected"
    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}  # the good one still trained
    assert app.registry.get("v0002").info["request_id"] == good.id
    assert [d.reason for d in app.store.dead_letters()] == ["not JSON"]  # not even a control event


def test_too_few_labels_and_a_single_class_are_rejected(app: App, tmp_path: Path) -> None:
    few = request(app, {"data": str(write_data(tmp_path / "few.jsonl", synthetic_examples(10)))})
    one_class = [Example(text=f"Acme soars {i}", label=2, id=f"p{i}") for i in range(50)]
    single = request(app, {"data": str(write_data(tmp_path / "one.jsonl", one_class))})
    raw = ControlEvent(kind="retrain_request").model_dump(mode="json")
    raw["schema_version"] = 99
    app.bus.publish(app.settings.topics.control, json.dumps(raw).encode(), key="retrain_request")

    run_trainer(app)

    reasons = {e.payload["request_id"]: e.payload["reason"] for e in stored_events(app, "rejection")}
    assert "only 10 labeled examples; at least 30 are needed" in reasons[few.id]
    assert "all labeled examples have the label 'positive'" in reasons[single.id]
    assert "unsupported schema_version 99" in reasons[raw["id"]]
    assert versions(app) == {"v0001": "champion"}
    assert final_artifacts(app) == ["v0001"]


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, nth: int, times: int = 1) -> dict[str, int]:
    """Make the elastic anchor (called every training step) raise on its ``nth`` call, ``times`` times."""
    calls = {"n": 0, "raised": 0}
    original = ElasticAnchor.__call__

    def crashing(self, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= nth and calls["raised"] < times:
            calls["raised"] += 1
            calls["n"] = 0
            raise RuntimeError("injected crash in the training loop")
        return original(self, *args)

    monkeypatch.setattr(ElasticAnchor, "__call__", crashing)
    return calls


def test_a_crash_mid_training_leaves_nothing_registered_and_the_request_is_retried(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    req = request(app, {"data": str(data), "auto_promote": False})
    calls = _fail_on_call(monkeypatch, nth=2)

    with pytest.raises(RuntimeError, match="injected crash"):
        run_trainer(app, retry_in_process=False)  # the process dies

    assert calls["raised"] == 1
    assert versions(app) == {"v0001": "champion"}  # no half-registered model
    assert final_artifacts(app) == ["v0001"]  # no final artifact directory
    staging = app.artifacts.root / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    run = TrainingStore(app.db).get_run(req.id)
    assert run["status"] == "running" and run["attempts"] == 1 and "injected crash" in run["last_error"]

    run_trainer(app)  # restarted: the uncommitted request is delivered again

    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}
    run = TrainingStore(app.db).get_run(req.id)
    assert run["status"] == "registered" and run["attempts"] == 2


def test_a_crash_is_retried_in_process(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    request(app, {"data": str(data), "auto_promote": False})
    _fail_on_call(monkeypatch, nth=3)
    role = run_trainer(app)
    assert role.failures == 1
    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}


def test_a_crash_between_sealing_and_registering_leaves_no_artifact(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    request(app, {"data": str(data), "auto_promote": False})
    original = app.registry.register
    state = {"failed": False}

    def flaky(**kwargs: Any) -> Any:
        if not state["failed"]:
            state["failed"] = True
            assert (app.artifacts.root / kwargs["version"]).is_dir()  # sealed when the crash hits
            raise ConnectionError("database went away")
        return original(**kwargs)

    monkeypatch.setattr(app.registry, "register", flaky)
    with pytest.raises(ConnectionError):
        run_trainer(app, retry_in_process=False)
    assert final_artifacts(app) == ["v0001"] and versions(app) == {"v0001": "champion"}
    run_trainer(app)
    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}


def test_a_crash_after_registering_finishes_the_same_version_instead_of_training_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path, promote_min_gain=-1.0, forget_max_drop=1.0)  # the gate will promote
    try:
        data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
        req = request(app, {"data": str(data)})
        original = Reservoir.add
        state = {"failed": False}

        def flaky(self: Reservoir, *args: Any, **kwargs: Any) -> Any:
            if not state["failed"] and app.registry.find(request_id=req.id):
                state["failed"] = True
                raise ConnectionError("database went away")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Reservoir, "add", flaky)
        with pytest.raises(ConnectionError):
            run_trainer(app, retry_in_process=False)
        assert versions(app) == {"v0001": "champion", "v0002": "challenger"}  # registered, not announced
        run_trainer(app)
        assert versions(app) == {"v0001": "retired", "v0002": "champion"}  # finished: gate applied once
        assert [e.kind for e in stored_events(app) if e.kind != "retrain_request"] == ["training_result", "promotion"]
        assert TrainingStore(app.db).get_run(req.id)["status"] == "registered"
    finally:
        app.close()


def test_a_stop_request_abandons_the_round_and_leaves_the_request_for_the_next_start(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    req = request(app, {"data": str(data), "auto_promote": False})
    stop = threading.Event()
    original = ElasticAnchor.__call__

    def sigterm_during_training(self, *args: Any) -> Any:
        stop.set()  # what the SIGTERM handler of `aet train` does
        return original(self, *args)

    monkeypatch.setattr(ElasticAnchor, "__call__", sigterm_during_training)
    role = app.trainer(progress=False, retry_backoff_s=0.0)
    role.run(stop, drain=True)  # returns (exit 0) without finishing the round
    assert versions(app) == {"v0001": "champion"} and final_artifacts(app) == ["v0001"]
    assert TrainingStore(app.db).get_run(req.id)["attempts"] == 0  # not counted as a failure
    monkeypatch.setattr(ElasticAnchor, "__call__", original)
    run_trainer(app)
    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}


def test_a_request_that_keeps_crashing_is_rejected_after_max_attempts(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.settings.retrain.max_attempts = 2
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    req = request(app, {"data": str(data)})
    _fail_on_call(monkeypatch, nth=1, times=100)
    role = run_trainer(app)
    assert role.failures == 2
    rejection = stored_events(app, "rejection")
    assert len(rejection) == 1 and rejection[0].payload["request_id"] == req.id
    assert "training failed 2 times" in rejection[0].payload["reason"]
    assert "injected crash" in rejection[0].payload["reason"]
    assert versions(app) == {"v0001": "champion"}


def test_a_redelivered_request_is_answered_from_the_run_log(app: App, tmp_path: Path) -> None:
    data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
    req = request(app, {"data": str(data), "auto_promote": False})
    run_trainer(app)
    app.bus.publish(app.settings.topics.control, req.to_bytes(), key=req.kind)  # at-least-once: again
    run_trainer(app)
    assert versions(app) == {"v0001": "champion", "v0002": "challenger"}
    results = [
        json.loads(r.value)
        for r in app.bus.read_all(app.settings.topics.control)
        if json.loads(r.value)["kind"] == "training_result"
    ]
    assert len(results) == 2 and results[0]["id"] == results[1]["id"]  # the same event, published again
    assert len(stored_events(app, "training_result")) == 1


@pytest.mark.parametrize(
    ("min_gain", "outcome", "status"), [(-1.0, "promotion", "champion"), (1.0, "rejection", "rejected")]
)
def test_the_gate_promotes_or_rejects_the_challenger(
    tmp_path: Path, min_gain: float, outcome: str, status: str
) -> None:
    app = make_app(tmp_path, promote_min_gain=min_gain, forget_max_drop=1.0)
    try:
        data = write_data(tmp_path / "new.jsonl", synthetic_examples(90, seed=1, prefix="new "))
        request(app, {"data": str(data)})
        run_trainer(app)
        assert app.registry.get("v0002").status == status
        event = stored_events(app, outcome)
        assert len(event) == 1 and event[0].model_version == "v0002"
        assert event[0].payload["gate"]["recent"]["n"] > 0
        assert event[0].payload["champion"]["version"] == ("v0002" if status == "champion" else "v0001")
        assert [e["kind"] for e in lineage(app.registry, app.training_store, "v0002")["decisions"]] == [
            "training_result",
            outcome,
        ]
        # Only a challenger that may become the champion pays for the Fisher that would anchor the next round.
        info = app.registry.get("v0002")
        assert (load_fisher(Path(info.artifact_path)) is not None) is (status == "champion")
        assert ("skipped" in info.info["fisher"]) is (status == "rejected")
    finally:
        app.close()


@pytest.mark.slow
def test_minilm_champion_adapts_in_attention_mode(app_with_champion: App) -> None:
    """The real backbone: attention projections found, eager attention for distillation, a sealed challenger."""
    from tests.conftest import EXAMPLES

    app = app_with_champion
    for key, value in {
        "epochs": 1,
        "min_examples": 30,
        "fisher_samples": 16,
        "min_holdout": 5,
        "max_examples": 200,
        "allowed_data_dirs": [EXAMPLES],
    }.items():
        setattr(app.settings.retrain, key, value)
    app.seed_reservoir(EXAMPLES / "train.jsonl")
    req = request(app, {"data": str(EXAMPLES / "stream.jsonl"), "auto_promote": False})
    run_trainer(app)
    info = app.registry.get("v0002")
    assert info.status == "challenger" and info.info["request_id"] == req.id
    verify(Path(info.artifact_path), info.sha256)
    fisher = load_fisher(Path(info.artifact_path))
    assert "bert.encoder.layer.5.attention.self.query.weight" in fisher and "classifier.weight" in fisher
    assert not any("intermediate" in n for n in fisher)
    assert info.info["trainable_parameters"] < 4_000_000  # attention + head of a 22M-parameter MiniLM
    assert info.info["history"][0]["train_att"] >= 0 and info.info["history"][0]["train_ewc"] >= 0


# ---------------------------------------------------------------------------- control-topic authentication (issue 13)


def _signed_app(tmp_path: Path, **retrain: Any) -> App:
    return make_app(tmp_path, control={"signing_key": "k-0123456789abcdef"}, **retrain)


def test_with_a_signing_key_unsigned_and_forged_requests_are_dead_lettered_and_signed_ones_served(
    tmp_path: Path,
) -> None:
    app = _signed_app(tmp_path, auto_promote=False)
    try:
        data = str(write_data(tmp_path / "new.jsonl", synthetic_examples(60, seed=2)))
        raw = app.bus.inner  # type: ignore[attr-defined]  # the bus under the signing one: publishes as is
        unsigned = ControlEvent(kind="retrain_request", payload={"data": data})
        raw.publish(app.settings.topics.control, unsigned.to_bytes(), key=unsigned.kind)
        forged = ControlEvent(kind="retrain_request", payload={"data": data}).model_dump(mode="json")
        forged["signature"] = signature(forged, "not-the-key")
        raw.publish(app.settings.topics.control, json.dumps(forged).encode(), key="retrain_request")
        honest = request(app, {"data": data})  # published through the installation's bus: signed
        altered = json.loads(app.bus.read_all(app.settings.topics.control)[-1].value)  # type: ignore[attr-defined]
        altered["id"], altered["payload"]["max_examples"] = "altered", 1  # a signed event, changed in transit
        raw.publish(app.settings.topics.control, json.dumps(altered).encode(), key="retrain_request")

        run_trainer(app)

        letters = {d.reason.split(" (")[0] for d in app.store.dead_letters() if d.stage == "trainer"}
        assert letters == {"unsigned control event", "control event signature does not match"}
        assert len([d for d in app.store.dead_letters() if d.stage == "trainer"]) == 3
        assert versions(app) == {"v0001": "champion", "v0002": "challenger"}  # only the signed request trained
        assert app.registry.get("v0002").info["request_id"] == honest.id
        assert (
            TrainingStore(app.db).get_run(unsigned.id) is None and TrainingStore(app.db).get_run(forged["id"]) is None
        )
        published = [json.loads(r.value) for r in app.bus.read_all(app.settings.topics.control)]  # type: ignore[attr-defined]
        results = [e for e in published if e["kind"] == "training_result"]
        assert results and all(check(e, "k-0123456789abcdef") is None for e in results)  # the trainer signs too
    finally:
        app.close()


def test_without_a_key_requests_are_served_with_one_warning(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    few = str(write_data(tmp_path / "few.jsonl", synthetic_examples(10)))
    request(app, {"data": few})
    request(app, {"data": few})
    run_trainer(app)
    warnings = [r for r in caplog.records if "aet.control is not authenticated" in r.getMessage()]
    assert len(warnings) == 1 and len(stored_events(app, "rejection")) == 2  # served (and rejected: too few)


def test_a_data_path_outside_the_allowed_directories_is_dead_lettered(app: App, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    secret_file = write_data(outside / "labels.jsonl", synthetic_examples(60, seed=2))
    link = tmp_path / "link.jsonl"
    link.symlink_to(secret_file)  # inside by name, outside once resolved
    for path in (secret_file, link, tmp_path / ".." / outside.name / "labels.jsonl"):
        request(app, {"data": str(path)})

    run_trainer(app)

    letters = [d for d in app.store.dead_letters() if d.stage == "trainer"]
    assert len(letters) == 3 and all("outside retrain.allowed_data_dirs" in d.reason for d in letters)
    assert versions(app) == {"v0001": "champion"} and stored_events(app, "rejection") == []


@pytest.mark.parametrize(("may_promote", "promoted"), [(False, False), (True, True)])
def test_a_request_cannot_switch_promotion_on_unless_settings_allow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, may_promote: bool, promoted: bool
) -> None:
    app = make_app(tmp_path, auto_promote=False, request_may_promote=may_promote)
    try:
        monkeypatch.setattr("aet.pipeline.roles.trainer.decide", _always_promote)
        request(
            app, {"data": str(write_data(tmp_path / "new.jsonl", synthetic_examples(60, seed=2))), "auto_promote": True}
        )
        run_trainer(app)
        assert versions(app)["v0002"] == ("champion" if promoted else "challenger")
        assert bool(stored_events(app, "promotion")) is promoted
    finally:
        app.close()


def _always_promote(recent: Any, older: Any, settings: Any) -> GateDecision:
    """The gate's verdict is not under test here: only whether the trainer asks for it."""
    return GateDecision(promote=True, reasons=["test: the gate says yes"])
