"""Settings: defaults, then a YAML/TOML file, then ``AET_*`` environment variables, then flags.

Nested settings use ``__`` in environment variables, e.g.
``AET_BUS__BACKEND=kafka`` or ``AET_SCORER__MAX_BATCH=128``.

One class per concept, each default declared once. Training shares its
concepts: :class:`FitSettings` (how the loop fits; the bootstrap's ``train``
section), :class:`TrainableSettings` and :class:`ObjectiveSettings`, which
:class:`RoundSettings` combines for one adaptation round and
:class:`RetrainSettings` extends for the trainer role (flat keys:
``retrain.epochs``, ``AET_RETRAIN__LAMBDA_EWC``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from aet.pipeline.redaction import endpoint_name, redact_url, url_secrets

DEFAULT_BACKBONE = "minilm"
#: Serving precisions (``model.precision``); ``auto``: bf16 on CUDA and on CPUs with bf16 instructions, else float32.
PRECISIONS = ("auto", "float32", "int8", "bf16")


class _Section(BaseModel):
    """A nested settings section: an unknown key (a typo in a file or AET_X__Y) is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class TopicSettings(_Section):
    """Topic names (docs/architecture.md, "Topics and records")."""

    messages: str = "aet.messages"
    scored: str = "aet.scored"
    labels: str = "aet.labels"
    control: str = "aet.control"
    alerts: str = "aet.alerts"
    dlq: str = "aet.dlq"

    def all(self) -> list[str]:
        return [self.messages, self.scored, self.labels, self.control, self.alerts, self.dlq]


class BusSettings(_Section):
    """Which bus to use and how to reach it."""

    backend: Literal["memory", "kafka"] = "memory"
    partitions: int = Field(default=3, ge=1)
    journal_dir: Path | None = Field(default=None, description="memory bus only: keep topics and offsets on disk here")
    memory_retention: int | None = Field(
        default=10_000,
        ge=0,
        description="memory bus only: records a partition keeps at least; older ones go once every group reading "
        "the topic has committed past them (topics no group reads are kept whole; null: keep every record)",
    )
    bootstrap_servers: str = "localhost:9092"
    client_id: str = "aet"
    replication_factor: int = Field(default=1, ge=1)
    connect_timeout_s: float = Field(default=15.0, gt=0)
    kafka: dict[str, Any] = Field(
        default_factory=dict,
        description="passed through to kafka-python clients (security_protocol, sasl_*, ssl_*, ...)",
    )


class ModelSettings(_Section):
    """The sentiment model: backbone for bootstrapping, and inference settings."""

    backbone: str = Field(
        default=DEFAULT_BACKBONE,
        description="'minilm' (the packaged offline all-MiniLM-L6-v2), a local directory, or a hub id",
    )
    max_length: int = Field(default=128, ge=8, le=4096)
    batch_size: int = Field(default=32, ge=1)
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    precision: Literal["auto", "float32", "int8", "bf16"] = Field(
        default="auto",
        description="serving precision, applied after the artifact's sha256 check (the registry keeps float32): "
        "'auto' is bf16 on CUDA and on CPUs with bf16 instructions (AVX-512 BF16, AMX), else float32 (measured: "
        "bf16 kept 99.8% of the labels, int8 only 95.5%; README); 'int8' is dynamic per-channel quantization, "
        "CPU only, pooler and classifier head kept float32",
    )


class ScorerSettings(_Section):
    """Dynamic batching of the scorer and input limits."""

    group: str = "aet-scorer"
    max_batch: int = Field(default=64, ge=1)
    max_wait_ms: int = Field(
        default=20,
        ge=0,
        description="after a batch's first message, wait this long for more: under load a batch fills to max_batch "
        "without waiting, so the wait only adds latency at low rates (it was 100: p99 over 250 ms at half load)",
    )
    max_text_chars: int = Field(default=5000, ge=1)
    features: bool = Field(
        default=True,
        description="attach each text's features (float16, about 2 KB a message) to aet.scored, from which the "
        "fast path (adaptation.fast_path) learns without running the encoder again",
    )
    hot_swap: bool = Field(
        default=True,
        description="follow promotions and rollbacks: load, verify and swap in the new champion between two batches",
    )
    registry_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="how often to ask the registry for the champion "
        "besides reacting to aet.control at once (a lost event is caught up this late)",
    )
    swap_retries: int = Field(
        default=4, ge=0, description="a refused model load (hot swap) is tried again this often before it is given up"
    )
    swap_retry_backoff_s: float = Field(default=2.0, gt=0, description="wait before the first retry; doubles per retry")
    cache_size: int = Field(
        default=10000,
        ge=0,
        description="scores kept by (model version, source, whitespace-normalized text), least recently used "
        "dropped first (0: off): a headline repeated across outlets is scored once per version",
    )


class ReplaySettings(_Section):
    """How ``aet replay`` replays a recorded stream onto the bus (the rehearsal of old examples is ``retrain``'s)."""

    speed: float = Field(default=0.0, ge=0, description="event-time speed-up; 0 = as fast as possible")
    rate: float = Field(
        default=0.0,
        ge=0,
        description="most messages a second (0: no limit), e.g. to let what the loop learns serve the rest",
    )
    label_fraction: float = Field(default=0.0, ge=0, le=1)
    label_delay_s: float = Field(default=0.0, ge=0, description="event-time delay before a label is emitted")
    seed: int = 7


class WebhookSettings(_Section):
    """One HTTP endpoint that receives every alert as a JSON POST (alert id in ``Idempotency-Key``).

    The URL and the headers are secrets (a token may sit in either): they are never
    printed; logs, metrics and the outbox name the sink by its origin and a hash of
    the URL (``webhook:https://hooks.example.com#1a2b3c4d``) unless ``name`` is set.
    """

    url: SecretStr = Field(description="http(s) URL (a secret: may hold a token)")
    name: str | None = Field(default=None, description="sink name in the outbox, logs and metrics")
    timeout_s: float = Field(default=5.0, gt=0, description="total deadline of one attempt: connect, send, reply")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra headers, e.g. Authorization")
    backoff_s: float = Field(default=1.0, gt=0, description="first retry delay; doubles per failure")
    max_backoff_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=20, ge=0, description="attempts before the row is marked failed (0: no limit)")
    max_age_s: float = Field(
        default=86400.0,
        ge=0,
        description="seconds an alert may wait for delivery, then it is marked failed (0: no limit)",
    )
    max_response_bytes: int = Field(default=65536, ge=0, description="most bytes of a reply read (more: a failure)")
    redirects: Literal["none", "same-origin"] = Field(
        default="none",
        description="a 3xx reply is a failed delivery; 'same-origin' follows 307/308 to the same scheme, host and port",
    )

    @property
    def sink_name(self) -> str:
        return self.name or endpoint_name("webhook", self.url.get_secret_value())


AlertKind = Literal["negative_surge", "positive_surge"]


class AlertSettings(_Section):
    """The alert engine (docs/architecture.md, "Alerts") and its sinks (the analysts' page: :class:`WebSettings`)."""

    group: str = "aet-alerts"
    max_batch: int = Field(default=1000, ge=1)
    max_wait_ms: int = Field(default=20, ge=0)
    kinds: list[AlertKind] = Field(default_factory=lambda: list(get_args(AlertKind)))
    window_s: float = Field(default=3600.0, gt=0, description="event-time length of a sliding window")
    step_s: float = Field(default=300.0, gt=0, description="slide of the window (a divisor of window_s)")
    allowed_lateness_s: float = Field(
        default=300.0, ge=0, description="accept an entity's events this far behind its newest"
    )
    min_count: int = Field(default=10, ge=1, description="messages a window needs before it can alert")
    min_share: float = Field(default=0.5, ge=0, le=1, description="share of negative (positive) messages to alert")
    min_z: float = Field(default=2.5, ge=0, description="z of the share against the entity's baseline to alert")
    warning_z: float = Field(default=4.0, ge=0)
    critical_z: float = Field(default=6.0, ge=0)
    cooldown_s: float = Field(
        default=3600.0,
        ge=0,
        description="event time after an alert in which the same entity and kind do not alert again",
    )
    baseline_span: int = Field(default=48, ge=1, description="closed windows in the baseline's exponential average")
    baseline_min_count: int = Field(default=5, ge=1, description="messages a closed window needs to update a baseline")
    warmup_windows: int = Field(
        default=10, ge=0, description="baseline windows at which the entity's own baseline and the prior weigh the same"
    )
    prior_std: float = Field(default=0.05, ge=0, description="spread of an unknown entity's share around the prior")
    min_std: float = Field(default=0.05, ge=0, description="floor of an entity's own spread")
    prior_span: int = Field(default=5000, ge=1, description="messages in the global share's exponential average")
    prior_weight: int = Field(default=20, ge=0, description="messages the initial global share of 1/3 is worth")
    examples: int = Field(default=5, ge=0, description="example message ids per alert")
    dedupe_texts: bool = Field(
        default=True, description="count a text once per entity within a window (retweets, bot storms)"
    )
    gazetteer: Path | None = Field(default=None, description="YAML/JSON file of company names and aliases")
    text_cashtags: bool = True
    link_given_names: bool = True
    state_flush_s: float = Field(
        default=5.0, gt=0, description="how often baselines and per-entity sentiment are written to the database"
    )
    stdout: bool = Field(default=False, description="also print every alert on stdout")
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    dispatch_poll_s: float = Field(default=0.5, gt=0, description="how often sinks look for new or due alerts")
    outbox_retention_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="delivered, rejected and failed outbox rows are purged this long after they were created; "
        "alerts older than this are never offered to a sink",
    )


class WebSettings(_Section):
    """The HTTP surface (``aet serve``): the analysts' page, its event stream, the ingest API and chat webhooks.

    Bound to this machine by default; a request whose ``Host`` is not in ``allowed_hosts`` is refused
    (DNS rebinding). The tokens and signing secrets are secrets: never printed or logged.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host header values (without the port) answered; '*' answers any (behind a proxy that checks)",
    )
    read_token: SecretStr | None = Field(
        default=None, description="bearer token for the page, its event stream and the read API (None: open)"
    )
    ingest_token: SecretStr | None = Field(
        default=None, description="bearer token for POST /v1/messages (None: the ingest API is refused: 401)"
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="largest request body (more: 413)")
    max_batch: int = Field(default=1000, ge=1, description="most messages in one POST /v1/messages")
    max_connections: int = Field(default=256, ge=1, description="open connections; more are closed at once")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection must send a request's headers within this (slowloris)"
    )
    body_timeout_s: float = Field(default=15.0, gt=0, description="a request body must arrive within this")
    keep_alive_s: int = Field(default=5, ge=1, description="an idle keep-alive connection is closed after this")
    max_in_flight: int = Field(
        default=16, ge=1, description="ingest requests publishing at once; more wait up to queue_wait_s, then 429"
    )
    queue_wait_s: float = Field(default=1.0, ge=0, description="how long an ingest request waits for a slot")
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="wait for the bus's acknowledgement; longer: 503 with Retry-After"
    )
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After of a 429 or 503")
    max_limit: int = Field(default=1000, ge=1, description="largest ?limit= of the read API")
    heartbeat_s: float = Field(default=15.0, gt=0, description="comment line on an idle event stream")
    feed_poll_s: float = Field(default=0.25, gt=0, description="how often the event stream looks for new alerts")
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Slack app's signing secret (None: the Slack endpoint answers 404)"
    )
    slack_replay_window_s: float = Field(default=300.0, gt=0, description="oldest Slack request timestamp accepted")
    telegram_secret_token: SecretStr | None = Field(
        default=None, description="X-Telegram-Bot-Api-Secret-Token of the webhook (None: the endpoint answers 404)"
    )
    webhook_token: SecretStr | None = Field(
        default=None, description="bearer token of the Discord and StockTwits webhooks (None: they answer 404)"
    )

    def secrets(self) -> list[str]:
        """Every secret value of this section (for redaction)."""
        given = (
            self.read_token,
            self.ingest_token,
            self.slack_signing_secret,
            self.telegram_secret_token,
            self.webhook_token,
        )
        return [s.get_secret_value() for s in given if s is not None]


TrainingMode = Literal["full", "attention", "lora"]
#: The learning rate of a round that sets none, per training mode: the fewer weights train, the larger the step.
LEARNING_RATE_BY_MODE: dict[str, float] = {"full": 1e-4, "attention": 5e-4, "lora": 2e-3}

# Field types shared by the bootstrap's fit and a round's fit, which differ only in their defaults.
Epochs = Annotated[int, Field(ge=1)]
BatchSize = Annotated[int, Field(ge=1)]
Patience = Annotated[
    int | None, Field(ge=1, description="epochs without validation gain before stopping early (None: every epoch)")
]
TimeBudget = Annotated[
    float | None, Field(gt=0, description="training stops (keeping the best epoch) after this (None: no budget)")
]


class FitSettings(_Section):
    """How the training loop fits a model to labeled examples (pipeline/learning/loop.py).

    The defaults are those of bootstrapping the first champion (``aet bootstrap``:
    every weight, a fresh head); :class:`RoundSettings` changes them for an
    adaptation round.
    """

    epochs: Epochs = 3
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="default per training mode: "
        + ", ".join(f"{mode} {rate:g}" for mode, rate in LEARNING_RATE_BY_MODE.items()),
    )
    batch_size: BatchSize = 16
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    validation_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="of the training examples, to keep the best epoch and stop early"
    )
    patience: Patience = None
    time_budget_s: TimeBudget = None
    class_weighting: Literal["none", "sqrt", "balanced"] = Field(
        default="sqrt",
        description="cross-entropy weight per class from the training set's label counts: none, the inverse "
        "square root of the count, or its inverse (balanced); normalised so the mean example weight is 1. "
        "sqrt: on 1,500 imbalanced tweets unweighted training learned little but the majority class "
        "(test macro-F1 0.478 vs 0.737, `aet bench recipe`)",
    )
    seed: int = 13

    def learning_rate_for(self, mode: str) -> float:
        """The configured learning rate, else the default of ``mode`` (bootstrapping trains in ``full`` mode)."""
        return self.learning_rate if self.learning_rate is not None else LEARNING_RATE_BY_MODE[mode]


class TrainableSettings(_Section):
    """What an adaptation round trains (pipeline/learning/trainable.py)."""

    mode: TrainingMode = Field(
        default="attention", description="what trains: every weight, attention projections + head, or LoRA + head"
    )
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=16.0, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)


class ObjectiveSettings(_Section):
    """The AET objective's terms and their weights (pipeline/learning/objective.py).

    ``L = CE + λ_ewc/2 · Σ F (θ − θ*)² + λ_att · KL(attention)``; each term can be
    switched off: ``rehearsal`` mixes reservoir examples into the cross-entropy,
    ``lambda_ewc`` weights the elastic anchor and ``lambda_att`` the attention
    distillation (0 = off). The Fisher F is re-estimated after every round and
    merged into the champion's. ``replay`` and ``replay_ratio`` are the old
    names of ``rehearsal`` and ``rehearsal_ratio`` and are still read.
    """

    rehearsal: bool = Field(
        default=True,
        validation_alias=AliasChoices("rehearsal", "replay"),
        description="mix rehearsal-reservoir examples into the task loss",
    )
    rehearsal_ratio: float = Field(
        default=0.5,
        ge=0,
        validation_alias=AliasChoices("rehearsal_ratio", "replay_ratio"),
        description="rehearsal examples per recent training example, at most",
    )
    lambda_ewc: float = Field(default=1.0, ge=0, description="weight of the elastic (EWC) anchor; 0 switches it off")
    lambda_att: float = Field(default=1.0, ge=0, description="weight of the attention distillation; 0 switches it off")
    fisher_gamma: float = Field(default=0.9, ge=0, le=1, description="online merge F <- gamma * F_old + F_new")
    fisher_samples: int = Field(default=128, ge=1, description="examples used to estimate the diagonal Fisher")
    fisher_batch_size: int = Field(
        default=8, ge=1, description="1 = exact per-example Fisher; more = faster, approximate"
    )

    def describe(self) -> str:
        """The terms that are on, e.g. ``ce+rehearsal+ewc(1)+att(1)``."""
        parts = ["ce"] + (["rehearsal"] if self.rehearsal else [])
        parts += [f"ewc({self.lambda_ewc:g})"] if self.lambda_ewc > 0 else []
        parts += [f"att({self.lambda_att:g})"] if self.lambda_att > 0 else []
        return "+".join(parts)


class RoundSettings(FitSettings, ObjectiveSettings, TrainableSettings):
    """One adaptation round (pipeline/learning/round.py): its fit, its objective and what trains.

    A round fits in larger batches than the bootstrap, at the mode's learning
    rate, within a time budget, for a fixed number of epochs keeping the best
    on validation. It does not stop early: a round's validation split is a few
    dozen examples, and on 400 labels of a new corpus (three seeds of
    news-tweets, one of news-chat, docs/stream.md) 4 epochs gained +3.8
    (tweets) and +29.3 (chat) test macro-F1 points against +2.1 and +22.7 for
    2 epochs stopping after one without gain, forgot less (+0.3 and −0.4
    points of PhraseBank against −0.1 and −5.1), and the gate promoted 3 of
    the 4 rounds (the fourth became a shadow) against 1 of 4, for 1.85x the
    training seconds.
    """

    epochs: Epochs = 4
    batch_size: BatchSize = 32
    patience: Patience = None
    time_budget_s: TimeBudget = 1800.0

    @property
    def learning_rate_used(self) -> float:
        """The learning rate this round trains with (the mode's default unless one is set)."""
        return self.learning_rate_for(self.mode)


class PromotionSettings(_Section):
    """The champion/challenger gate (pipeline/learning/promotion.py)."""

    min_holdout: int = Field(default=20, ge=1, description="held-out recent examples the gate needs to decide")
    promote_min_gain: float = Field(default=0.01, description="recent macro-F1 must rise by at least this to promote")
    gate_confidence: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="and the paired bootstrap's interval of that gain at this confidence must lie above zero",
    )
    forget_max_drop: float = Field(default=0.02, ge=0, description="older macro-F1 may fall by at most this")
    require_older_holdout: bool = Field(
        default=True, description="refuse to promote when no older data can check forgetting"
    )
    auto_promote: bool = Field(default=True, description="apply the gate right after training; off: leave a challenger")
    request_may_promote: bool = Field(
        default=False,
        description="let a retrain request switch auto_promote on when it is off (a request may always switch it off)",
    )
    shadow: bool = Field(
        default=True,
        description="a challenger better on the held-out slice but not with confidence (and not worse on older "
        "data) is left as a shadow, judged on the live labeled stream by the monitor (monitor.shadow_*)",
    )


class RetrainSettings(RoundSettings, PromotionSettings):
    """Elastic retraining: the trainer role (pipeline/roles/trainer.py), its rounds and the gate.

    The keys stay flat (``retrain.epochs``, ``AET_RETRAIN__LAMBDA_EWC``); the
    classes it inherits group them by concept.
    """

    group: str = "aet-trainer"
    min_examples: int = Field(default=64, ge=2, description="labeled examples a request needs, else it is rejected")
    max_examples: int = Field(default=20000, ge=1, description="most recent labeled examples used per round")
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="share of examples (by a stable hash of the text) never trained on"
    )
    reservoir_per_source: int = Field(
        default=3000, ge=3, description="rehearsal reservoir capacity per source (split evenly over the three labels)"
    )
    followup_trains_on: Literal["new", "episode"] = Field(
        default="new",
        description="a follow-up round of a drift episode trains on the labels its champion has not learned yet "
        "('new'; the episode's earlier labels join the rehearsal pool) or on every label of the episode",
    )
    max_attempts: int = Field(default=3, ge=1, description="a request whose training crashes is retried this often")
    allowed_data_dirs: list[Path] = Field(
        default_factory=list,
        description="directories a retrain request's 'data' file may lie in (symlinks resolved); "
        "a request naming any other path is dead-lettered (empty: no request may name a file)",
    )
    device: str | None = Field(default=None, description="training device (default: model.device)")


class FastPathSettings(_Section):
    """The fast path (pipeline/roles/head_learner.py): per-source heads over the champion's features.

    Learned from every label and served, versioned and hot-swapped like a
    model, long before a retraining round has the labels it needs.
    """

    enabled: bool = Field(default=True, description="run the head learner (needs scorer.features)")
    group: str = "aet-fast-path"
    strengths: list[float] = Field(
        default_factory=lambda: [3.0, 30.0, 300.0],
        min_length=1,
        description="elastic pulls toward the model's own layer fitted side by side; "
        "the one with the best prequential log-loss serves",
    )
    window: int = Field(default=1000, ge=16, description="most recent labels per source a head is fitted on")
    half_life: float = Field(default=100.0, gt=0, description="labels over which a candidate's record halves")
    min_labels: int = Field(default=16, ge=4, description="labels of a source before its head may serve")
    publish_every: int = Field(default=16, ge=1, description="labels of a source between two heads versions")
    max_p_value: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="a head serves only when its prequential log-loss beats the model's own layer "
        "with this one-sided p-value (paired t-test on the same labels)",
    )
    scaler_messages: int = Field(
        default=64, ge=16, description="scored messages of a model whose features fix the head's standardisation"
    )
    track_messages: int = Field(
        default=50000, ge=100, description="recent scored messages whose features are kept until their label arrives"
    )
    prior_shift: bool = Field(
        default=True,
        description="before a source's head has evidence, serve the model's own layer corrected for the source's "
        "class mix as estimated by EM on its unlabeled messages (pipeline/learning/prior_shift.py)",
    )
    prior_window: int = Field(
        default=256, ge=32, description="a source's latest messages the class mix is estimated on (and the reference)"
    )
    prior_min_shift: float = Field(
        default=0.1, gt=0, le=1, description="total-variation change of the class mix below which nothing is corrected"
    )
    regimes: int = Field(
        default=0,
        ge=0,
        description="earlier episodes of a source kept as regimes, with the head that served each, weighed in by "
        "how much a message looks like each (learning/heads.py RegimeGate; 0: off). Off by default: on the quick "
        "three-switch replay 3 regimes won the return to news (+5.9 points) and lost the chat (-2.6), "
        "post-drift -1.1 (docs/stream.md)",
    )


DetectorName = Literal[
    "adwin_error", "adwin_confidence", "kswin_confidence", "page_hinkley_class_mix", "hotelling_embedding"
]


def _default_detectors() -> list[DetectorName]:
    """The detectors on by default; ``kswin_confidence`` is off (docs/drift.md has the numbers)."""
    return ["adwin_error", "adwin_confidence", "page_hinkley_class_mix", "hotelling_embedding"]


class MonitorSettings(_Section):
    """The drift monitor (pipeline/roles/monitor.py, docs/drift.md).

    Its detectors, alarm budget, delayed labels, retrain requests and rollbacks.
    """

    group: str = "aet-monitor"
    max_batch: int = Field(default=256, ge=1)
    max_wait_ms: int = Field(default=100, ge=0)
    detectors: list[DetectorName] = Field(default_factory=_default_detectors)
    expected_run_length: int = Field(
        default=20000,
        ge=100,
        description="stationary messages of one source expected "
        "between two false alarms of the whole monitor (the alarm budget)",
    )
    warmup: int = Field(default=200, ge=20, description="messages of a new regime that set a detector's baseline")
    cooldown_messages: int = Field(
        default=500,
        ge=0,
        description="messages of a source after a drift event in which further alarms are suppressed "
        "(2,000 hid a second switch of a feed 1,500 messages after the first: docs/drift.md)",
    )
    embedding_reference: Literal["stream", "training"] = Field(
        default="stream",
        description="embedding reference: the first messages of each regime, or the champion's "
        "training data (falls back to stream when it cannot be read)",
    )
    reference_size: int = Field(default=300, ge=20, description="embeddings in the reference window")
    embedding_window: int = Field(default=100, ge=10, description="recent embeddings compared with the reference")
    embed_every: int = Field(default=2, ge=1, description="embed one message in N (chosen by a hash of its id)")
    min_labels: int = Field(default=200, ge=1, description="labels since the drift point a retrain request needs")
    followup_rounds: int = Field(
        default=3,
        ge=0,
        description="retrain requests after the first in one drift episode, each after min_labels more labels "
        "(the episode ends early when two of its challengers were rejected)",
    )
    retrain_cooldown_s: float = Field(
        default=21600.0,
        ge=0,
        description="seconds after the last retrain request, training result or promotion before another request",
    )
    hold_messages: int = Field(
        default=10000,
        ge=1,
        description="a label whose message has not arrived after this many messages is dead-lettered",
    )
    quality_window: int = Field(default=500, ge=10, description="labeled messages in the rolling live accuracy/F1")
    shadow_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="McNemar p-value at which a shadow challenger is promoted or rejected"
    )
    shadow_labels: int = Field(
        default=400, ge=10, description="labeled live messages after which an undecided shadow is rejected"
    )
    new_source_check: bool = Field(
        default=True,
        description="a source the champion was not trained on is compared with its training data (embeddings) "
        "and with its live accuracy on the other sources (labels), and raises drift when it is off",
    )
    new_source_alpha: float = Field(
        default=0.01, gt=0, lt=1, description="false-alarm rate of the new-source accuracy check (all its looks)"
    )
    new_source_margin: float = Field(
        default=0.05, ge=0, le=1, description="accuracy below the other sources' that the new-source check flags"
    )
    track_messages: int = Field(
        default=100000,
        ge=100,
        description="recent predictions kept in memory for joins (older ones are read from the database)",
    )
    champion_check_s: float = Field(
        default=30.0, ge=0, description="how often to look for a new champion to embed with and for promotions to judge"
    )
    auto_rollback: bool = Field(
        default=True, description="roll a promotion back when its live accuracy falls below the previous champion's"
    )
    rollback_labels: int = Field(
        default=200,
        ge=10,
        description="labeled messages of the new version (and of the previous one) the live comparison uses",
    )
    rollback_margin: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="roll back when the new version's live accuracy is below the previous champion's by more than this",
    )
    seed: int = 0


class LimitsSettings(_Section):
    """Limits every record is held to when it is decoded (pipeline/records.py), so that what passes can be
    stored: the string lengths match the database columns on SQLite and PostgreSQL alike, and event times
    lie in a window around the wall clock (outside it: a dead letter)."""

    max_past_days: float = Field(
        default=36525.0, gt=0, description="oldest event time accepted, in days before now (archives replay)"
    )
    max_future_s: float = Field(
        default=900.0, ge=0, description="newest event time accepted, in seconds after now (clock skew)"
    )
    max_entities: int = Field(default=64, ge=0, description="entities one message may name")
    max_meta_chars: int = Field(default=16384, ge=2, description="a message's meta, as JSON")
    max_payload_chars: int = Field(default=262144, ge=2, description="a control event's payload, as JSON")


class DeadLetterSettings(_Section):
    """The dead-letter path: what a dead letter keeps, when an error gives up, the recorder role
    (pipeline/roles/dead_letters.py)."""

    group: str = "aet-dlq"
    raw_bytes: int = Field(
        default=4096, ge=64, description="bytes of a refused input kept in its dead letter (with its size and sha256)"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="tries of a write that fails with a permanent error before it is dead-lettered"
    )
    max_record_bytes: int = Field(
        default=1_000_000, ge=1024, description="largest record published (Kafka refuses over 1 MiB by default)"
    )
    max_backoff_s: float = Field(default=30.0, gt=0, description="longest wait between retries of a transient error")


class FeedSettings(_Section):
    """One RSS/Atom feed of an ``rss`` source."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    channel: str | None = Field(default=None, max_length=256, description="default: the feed's title, else its host")


class _IngestSourceSettings(_Section):
    """What every ingest source has: a name (its state in the database, the prefix of its message ids, the
    platform in ``meta``), how often it looks for new input, how many messages one acknowledged batch holds."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    poll_interval_s: float = Field(default=60.0, gt=0, description="how often the source looks for new input")
    batch_size: int = Field(default=500, ge=1, description="messages published and acknowledged before state is saved")


class RssSourceSettings(_IngestSourceSettings):
    """RSS/Atom feeds polled with conditional GETs (pipeline/sources/rss.py)."""

    kind: Literal["rss"] = "rss"
    name: str = Field(default="rss", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    feeds: list[FeedSettings] = Field(min_length=1)
    text: Literal["title", "summary", "title_summary"] = Field(
        default="title", description="what of an item is scored: its headline, its summary, or both"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="connect and read timeout of one fetch")
    max_bytes: int = Field(default=5_000_000, ge=1024, description="largest feed body read")
    max_redirects: int = Field(default=5, ge=0, le=20)
    backoff_base_s: float = Field(
        default=30.0, gt=0, description="wait after a feed's first failure, doubled after each"
    )
    backoff_max_s: float = Field(default=3600.0, gt=0, description="longest wait between tries of a failing feed")
    user_agent: str = "aet-ingest/0.1 (+https://github.com/aet)"


class FilesSourceSettings(_IngestSourceSettings):
    """Files and watched directories (pipeline/sources/files.py): JSONL, CSV, or Slack / Discord exports."""

    kind: Literal["files"] = "files"
    name: str = Field(default="files", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    paths: list[Path] = Field(min_length=1, description="files, or directories watched for new files")
    format: Literal["auto", "jsonl", "csv", "slack_export", "discord_export"] = Field(
        default="auto", description="auto: by suffix (.jsonl/.ndjson/.json lines, .csv)"
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*.jsonl", "*.ndjson", "*.csv"], description="files of a directory read (jsonl/csv)"
    )
    message_source: Literal["news", "chat"] = Field(
        default="chat", description="news or chat, for rows that do not say (their 'source' column)"
    )
    settle_s: float = Field(default=2.0, ge=0, description="a file modified more recently than this is still growing")
    watch: bool = Field(default=True, description="keep polling the directories for new files (else stop when done)")


class FieldMapping(_Section):
    """Where a foreign record keeps each field of a message: JSONPath expressions (``$.payload.headline``)."""

    text: str = Field(min_length=1)
    id: str | None = None
    ts: str | None = None
    channel: str | None = None
    entities: str | None = Field(default=None, description="a list of names, or one name")
    source: str | None = Field(default=None, description="news or chat per record (else message_source)")
    meta: dict[str, str] = Field(default_factory=dict, description="meta key -> JSONPath, kept with the message")


class KafkaTopicSourceSettings(_IngestSourceSettings):
    """A vendor's Kafka topic read with a declared field mapping (pipeline/sources/kafka_topic.py)."""

    kind: Literal["kafka_topic"] = "kafka_topic"
    name: str = Field(default="kafka", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    topic: str = Field(min_length=1, max_length=249)
    group: str | None = Field(default=None, description="consumer group (default: aet-ingest-NAME)")
    bootstrap_servers: str | None = Field(default=None, description="the vendor's cluster (default: AET's bus)")
    mapping: FieldMapping
    message_source: Literal["news", "chat"] = "news"
    poll_interval_s: float = Field(default=1.0, gt=0, description="longest wait for records in one poll")


SourceSettings = Annotated[
    RssSourceSettings | FilesSourceSettings | KafkaTopicSourceSettings, Field(discriminator="kind")
]


class ControlSettings(_Section):
    """Authentication of ``aet.control`` (pipeline/signing.py).

    With a ``signing_key`` every control event AET publishes carries an
    HMAC-SHA256 signature of its canonical JSON, and the trainer dead-letters a
    retrain request that is unsigned or wrongly signed. Without one, events are
    neither signed nor checked, and the trainer warns once that the control
    topic is not authenticated (the embedded default, one process and a memory bus).
    """

    signing_key: SecretStr | None = Field(
        default=None, description="shared secret of every process that writes or trusts aet.control"
    )


class Settings(BaseSettings):
    """Everything a role needs to run."""

    model_config = SettingsConfigDict(env_prefix="AET_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default=Path("aet-data"), description="models, journal and the default database")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in home (a secret: may hold a password)"
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for a terminal; json: one object a line with role, message id, model"
    )
    bus: BusSettings = Field(default_factory=BusSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    train: FitSettings = Field(default_factory=FitSettings, description="bootstrapping the first champion")
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    fast_path: FastPathSettings = Field(default_factory=FastPathSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    sources: list[SourceSettings] = Field(default_factory=list, description="ingest sources (aet ingest)")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        return value.upper()

    @property
    def db_url(self) -> str:
        """The database URL, password included: to connect with, never to print (:attr:`db_url_display`)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.home / 'aet.db').resolve()}"

    @property
    def db_url_display(self) -> str:
        """The database URL with its password masked."""
        return redact_url(self.db_url)

    def secrets(self) -> list[str]:
        """Every secret value in these settings (for :func:`aet.pipeline.redaction.redact`)."""
        out = url_secrets(self.db_url)
        for hook in self.alerts.webhooks:
            out += [hook.url.get_secret_value(), *(v.get_secret_value() for v in hook.headers.values())]
        if self.control.signing_key is not None:
            out.append(self.control.signing_key.get_secret_value())
        out += self.web.secrets()
        return out

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def merge_overrides(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested settings overrides: ``extra`` wins, sections (dicts) are merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        previous = out.get(k)
        out[k] = merge_overrides(previous if isinstance(previous, dict) else {}, v) if isinstance(v, dict) else v
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings with precedence flags > environment > config file > defaults.

    ``overrides`` are nested dicts from the command line; ``None`` values are
    dropped so that an unset flag does not mask the environment.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                suffix = Path(config_file).suffix.lower()
                if suffix == ".toml":
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
                else:
                    sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    return _FileSettings(**_drop_none(overrides))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
