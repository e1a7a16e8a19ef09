"""The one settings tree. Built once in the entry point and passed down; no other module reads the
environment.

Every field can be set as an environment variable, ``PERENNIAL_<SECTION>__<FIELD>`` (for example
``PERENNIAL_KAFKA__BOOTSTRAP_SERVERS=broker:9092``), and the command-line flags override both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers, comma separated. Any Kafka 2.x+ or the local Tansu broker."""
    topic: str = "transactions.labeled"
    """Topic of labeled events. Malformed events go to ``<topic>.dlq``."""
    announce_topic: str = "perennial.announcements"
    """Topic on which the learner announces each published version to the servers."""
    control_topic: str = "perennial.control"
    """Topic on which the servers' admin endpoints send commands (rollback, pause, resume) to the learner."""
    group_id: str = "perennial-learner"
    """Consumer group of the learner (one learner per model)."""
    security: dict[str, Any] = Field(default_factory=dict)
    """Extra kafka-python client settings passed to every client unchanged, e.g.
    ``{"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": ...}``."""
    session_timeout_ms: int = 10000
    """Consumer-group session timeout. Small values make groups join fast."""
    heartbeat_interval_ms: int = 1000
    """Consumer-group heartbeat interval."""
    max_poll_interval_ms: int = 120000
    """Longest time between polls before the group evicts the learner; bounds one training round."""

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def predictions_topic(self) -> str:
        """Topic of the prediction log (``serve.prediction_log``): every event the server scored."""
        return f"{self.topic}.predictions"

    @property
    def labels_topic(self) -> str:
        """Topic of labels that come after their event, by id (``join.enabled``)."""
        return f"{self.topic}.labels"


class RegistrySettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    path: Path = Path("var/registry")
    """Directory of the model registry (local path or mounted shared volume)."""
    keep_last: int = Field(20, ge=1)
    """Retention: the newest versions the learner always keeps (and the last entries of the registry's
    history: rollback targets). Served, first, parent-of-served and pinned (``<path>/PINNED``)
    versions are always kept (learners/retention.py)."""
    keep_within_s: float = Field(86400.0, ge=0)
    """Retention: versions created, or named in the history, this recently are kept..."""
    max_versions: int = Field(500, ge=1)
    """...but of the recent ones at most this many (the newest): a learner publishing every few
    seconds does not keep a day of them."""
    prune_every_s: float = Field(60.0, ge=0)
    """How often, at most, the learner applies the retention policy (at start and after publishing)."""


class ServeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Interface the HTTP server binds."""
    port: int = 8000
    """Port of the HTTP server."""
    max_batch: int = 4096
    """Most events accepted in one POST /v1/predict (and rows in one V2 infer request)."""
    model_name: str = Field("perennial", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Name of the served model in the Open Inference Protocol (``/v2/models/<name>/infer``; service/v2.py)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted, in bytes."""
    registry_poll_s: float = 2.0
    """How often the server re-reads the registry's CURRENT pointer, as a fallback to announcements."""
    numeric_threads: int | None = Field(1, ge=0)
    """Threads of the server's numeric pools (numpy's BLAS and OpenMP, torch): scoring is small
    matrix products on the event loop, and one thread served batches of 64 faster than a pool per
    core, alone and under CPU contention (``make bench``, section serving). None: the CPUs the
    process may use (its cgroup quota, its CPU affinity); 0: each library's own default (a thread per
    host core) (perennial/cpus.py)."""
    admin_token: SecretStr | None = None
    """Bearer token of the admin endpoints (rollback, pause, resume). Unset: they are disabled."""
    admin_timeout_s: float = 3.0
    """Longest wait for Kafka to confirm an admin command before the endpoint answers 503 (the command
    is sent from its own thread: a Kafka outage never holds up predictions)."""
    keep_alive_s: float = 5.0
    """An idle keep-alive connection is closed after this many seconds without a new request."""
    request_timeout_s: float = 10.0
    """A client must deliver each request whole (headers and body) within this many seconds of
    connecting or of starting it; a slower connection (idle, slowloris) is closed."""
    prediction_log: bool = False
    """Publish every scored event that has an id (id, time, features as scored, score, version) to
    ``<kafka.topic>.predictions``, from a thread of its own: the label of a transaction comes weeks
    later as its id alone, and is joined to the features the model saw (service/prediction_log.py)."""
    prediction_log_capacity: int = Field(100_000, ge=1)
    """Scored events the prediction log may hold while Kafka is slow or down; beyond it they are
    dropped and counted, never holding up a prediction."""
    max_connections: int = 1000
    """Connections (or requests in progress) beyond which a new request gets 503 at once. Keep it
    under the process's open-file limit (``ulimit -n``), so sockets never starve the registry's files."""


class GateSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    confidence: float = 0.9
    """Confidence of every gate comparison: a candidate passes when it is better on recent events with
    this probability (a paired, class-stratified bootstrap of the AP difference on the same events),
    fails when it is worse (beyond the margins below) with this probability, and is otherwise
    inconclusive: the learner gathers more labeled events for it instead of deciding on noise."""
    max_retention_drop: float = 0.02
    """Margin of the retention comparison: a candidate fails when its retention-set AP is, with
    ``confidence``, more than this below the incumbent's."""
    forgetting_for_gain: float = Field(1.0, ge=0)
    """AP points of the retention set a candidate may give up per point it surely gains on recent events
    (the lower bound of its recent AP difference), beyond max_retention_drop and the floor. When the
    concept itself changes (fraud where honest customers were, honest where fraud was), serving the
    present means unlearning that part of the past; 0: never trade, keep the old concept served."""
    max_retention_drop_from_baseline: float = 0.05
    """Floor under the pretrained version's retention AP, so that drops each within max_retention_drop
    cannot add up over many rounds."""
    min_recent_gain: float = 0.0
    """A candidate passes when its AP on recent events beats the incumbent's by more than this, with
    ``confidence``."""
    max_recent_drop: float = 0.0
    """A candidate fails when its AP on recent events is, with ``confidence``, more than this below the
    incumbent's."""
    min_recent_positives: int = 20
    """Fewest frauds among the recent events before a candidate is judged at all (fewer: inconclusive,
    gather more). Also the fewest frauds a probation verdict rests on."""
    resamples: int = 300
    """Bootstrap replicates of each comparison."""
    candidates: int = Field(4, ge=1)
    """Candidates judged side by side: one is cut from every round's weights and this many gather
    evidence at once, spaced roughly geometrically in age (the oldest always kept: at 0.1% fraud only
    an old candidate holds enough frauds to be judged), so that one cut before a change (a burst, a
    returning concept) does not hold up the judging of one that learned it; the newest that passes is
    served."""
    evidence_max_frauds: int = 400
    """A candidate still inconclusive once its recent events hold this many frauds is dropped ("not
    enough evidence": it is no better than the served version) and a fresh one is cut."""
    evidence_max_events: int = 200000
    """...or once they hold this many events (bounds memory at rates where frauds are scarce)."""
    min_score_std: float = 1e-3
    """Scores with less spread than this are called collapsed."""
    max_latency_ms: float = 5.0
    """Largest allowed per-event scoring time of the candidate, in milliseconds (batch of 1)."""
    operating_alert_rate: float | None = Field(None, gt=0, lt=1)
    """The operating point as a share of events alerted on: the threshold is where the served version
    alerts on this share of the events a candidate is judged on. None (the default): as many alerts as
    frauds among those events, at least 0.5% of them, so the point follows the fraud rate from 0.1%
    to 5% (a fixed 0.5% at 3% fraud sits where every version scores near 1, and equally good versions
    differ there by 2-4 times the alerts). Used unless operating_threshold is set."""
    operating_threshold: float | None = Field(None, ge=0, le=1)
    """The operating point as an explicit served (calibrated) score, a fraud probability, at or above
    which the fraud team alerts. None: use operating_alert_rate."""
    max_alert_volume_change: float = Field(0.2, ge=0)
    """Largest relative growth of the false alerts (alerts on legitimate events) at the operating
    threshold, candidate vs incumbent on the same events, with the gates' confidence (0.2: from 100
    false alerts to at most 120), beyond the growth of its alerts on frauds. Alerts on frauds may grow:
    a candidate that learned a new pattern alerts on it, and the false alerts may grow in the same
    proportion (from 100 false and 100 true alerts to 150 and 150 keeps the precision: it passes);
    frauds it stops alerting on are limited by max_negative_flip_rate."""
    max_negative_flip_rate: float = Field(0.2, ge=0, le=1)
    """Largest share of the frauds the incumbent alerts on (at the operating threshold, on the same
    held-out events) that the candidate may stop alerting on. 0.2: on a simulated stream at 0.26%
    fraud (0.5% alerts, 140 alerted frauds; bench/calibration.py), versions as good as each other drop
    1 to 4 of them (under 3%), a version with a quarter less AP 15 to 18%; lower limits are noise on
    the 20 or so alerted frauds of a small held-out set, where one flip is 5%. Where alerts are fewer
    than frauds (3% fraud) equal versions swap 14 to 28% of alerted frauds for others, which the
    frauds the candidate alone alerts on (``FlipRate.gained``) offset."""


class LearnSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    checkpoint_path: Path = Path("var/checkpoint/learner.safetensors")
    """File of the learner's atomic checkpoint."""
    round_events: int = 2048
    """A training round starts when this many new labeled events are pending..."""
    round_max_s: float = 5.0
    """...or when the oldest pending event has waited this long (and at least round_min_events)."""
    round_min_events: int = 256
    """Fewest pending events a time-triggered round trains on."""
    round_max_events: int = 32768
    """While the learner is behind (more unread events on the topic than a round), a round waits for
    up to this many pending events: the same training per event, with fewer rounds, gates, publishes
    and checkpoints per event, so a backlog drains faster. Set to round_events to turn it off."""
    epochs: int = 3
    """Passes over each round's events (replayed samples are mixed into every batch)."""
    batch_size: int = 256
    """Mini-batch size of new events; the same number of replayed events is added to each batch."""
    learning_rate: float = 2e-3
    """Adam learning rate of fine-tuning."""
    replay_size: int = 8000
    """Replay memory size in events."""
    replay_policy: Literal["class_balanced", "reservoir"] = "class_balanced"
    """Replay storage policy: per-class reservoirs (fraud stays represented) or one reservoir."""
    replay_seed: bool = True
    """Start the replay memory with the class-balanced sample of history saved by pretraining."""
    ewc_lambda: float = 5.0
    """Weight of the online-EWC penalty."""
    ewc_decay: float = 0.9
    """Decay of accumulated EWC importances per round (online EWC)."""
    holdout_percent: int = 10
    """Share of events (by hash of the event id) held out from training to judge candidates."""
    holdout_size: int = 8000
    """Most recent held-out events kept for the gate."""
    dedup_window: int = 200000
    """Number of most recent event ids remembered to drop duplicates."""
    reset_after_failures: int = 3
    """After this many consecutive gate failures the learner restarts from the served weights."""
    max_label_rate_ratio: float = 5.0
    """A round whose fraud rate is over this many times the usual (or under its inverse) is quarantined
    (label-poisoning guard): neither trained on nor held out, but kept, counted and shown
    (``perennial_learner_quarantine_kept_events``) until an operator releases it
    (``POST /v1/learner/release-quarantine``): a genuine fraud burst is learned, not discarded."""
    quarantine_max_events: int = 200000
    """Most quarantined events kept (in the checkpoint) for an operator to release: label-rate rounds
    that did not prove learnable, and labels contradicting the served model; beyond it the oldest go."""
    contradiction_score: float = 0.5
    """An event the served model scores at least this is called fraud; one labeled legitimate is a
    contradiction. 0.5, the model's own decision, rather than a near-certainty: relabeled events
    scored just under a higher cut are trained on and erode the rest of their pattern. Pretraining
    records its validation data's contradictions at this score as the first usual rate (a learner
    set to another score starts from none)."""
    contradiction_alpha: float = 1e-6
    """Significance level of the one-sided binomial test that flags a round's contradictions as
    implausible under the usual rate (targeted label poisoning). A flagged round's contradicting
    events are quarantined (neither trained on nor held out) and the rest of it is trained."""
    contradiction_odds_ratio: float = 3.0
    """The test's margin: a round is tested against the usual odds of a contradiction times this, so a
    genuine change of the rate (or an inexact usual rate) is not flagged, however large the round."""
    concept_change_rounds: int = Field(12, ge=1)
    """Rounds a concept change confirmed by an operator (``POST /v1/learner/concept-change``) lasts,
    and longer until a version was published during it (at most four times as many rounds):
    labels that contradict the served model are trained on instead of quarantined, the retention
    gate reports but does not bind, and the learner learns as on a drift. Afterwards the retention
    floor starts from what the served version then keeps of the past. A concept change and targeted
    label poisoning look the same to the learner (labels that flip part of what it knows); only an
    operator can tell them apart, so the learner never decides this alone."""
    concept_change_forget: bool = True
    """A confirmed concept change also empties the replay memory and the EWC importances (both hold
    the old concept, which its new labels contradict)."""
    rollback_margin: float = 0.02
    """A newly served version whose average precision on the labeled events that arrive after its
    swap falls this far below its parent's on the same events is rolled back automatically."""
    broker_retry_initial_s: float = 0.5
    """Wait before the learner's second attempt to reach the broker at start-up; every failed attempt
    doubles it (each wait drawn between half and all of it, so restarted learners do not retry in step)."""
    broker_retry_max_s: float = 30.0
    """Longest wait between two attempts to reach the broker at start-up: the learner retries forever,
    serving /metrics meanwhile (``perennial_learner_broker_up`` is 0)."""
    broker_connect_timeout_s: float = 5.0
    """Longest time one attempt waits for the broker's first answer (kafka-python's
    ``bootstrap_timeout_ms``); it also bounds how long SIGTERM can wait during an attempt."""
    offset_reset_past_end: Literal["earliest", "latest"] = "earliest"
    """Where the learner reads when its position is past the end of a partition (the broker lost its
    data or the topic was recreated): ``earliest`` reads every event now on the topic (none skipped;
    ids it has already seen are dropped as duplicates), ``latest`` only events produced from then on.
    Logged with both offsets and counted in ``perennial_learner_offset_resets_total``."""
    metrics_host: str = "127.0.0.1"
    """Interface of the learner's /metrics endpoint."""
    metrics_port: int = 9101
    """Port of the learner's /metrics endpoint (0 disables it)."""
    numeric_threads: int | None = Field(None, ge=0)
    """Threads of the learner's numeric pools (torch training, numpy's BLAS and OpenMP). None: the
    CPUs the process may use (its cgroup quota, its CPU affinity; the chart passes the CPU request);
    0: each library's own default (a thread per host core) (perennial/cpus.py)."""
    drift_delta: float = 0.002
    """Confidence of river's ADWIN on the served model's loss over new events (smaller: fewer, surer drifts)."""
    drift_reaction: bool = True
    """On a detected drift, learn faster for a while: shorter rounds and a higher learning rate."""
    drift_reaction_rounds: int = 4
    """Rounds the reaction to a drift lasts."""
    drift_round_factor: float = 0.25
    """Round size while reacting, as a share of round_events."""
    drift_lr_factor: float = 2.0
    """Learning rate while reacting, as a multiple of learning_rate."""
    gates: GateSettings = Field(default_factory=GateSettings)


class JoinSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    enabled: bool = False
    """Join labels from ``<topic>.labels`` to the predictions the servers logged (``serve.prediction_log``)
    by id, and send each joined event, with the features as they were scored, to ``<topic>`` for the
    learner. Runs in `perennial learn`, in a thread of its own."""
    maturity_s: float = Field(30 * 86400.0, gt=0)
    """A prediction without a label this long after its event time is taken as legitimate (label 0,
    source ``matured``): chargebacks come within about 30 days. Measured on the prediction log's own
    clock (the latest event time logged), so a replay of history matures as it happened."""
    correction_window_s: float = Field(60 * 86400.0, ge=0)
    """How long after maturity a fraud label is still applied, as a correction (an event ``<id>#late``
    labeled 1 with the served features). Later ones are counted and parked as orphans."""
    max_clock_lead_s: float = Field(86400.0, ge=0)
    """An event time more than this ahead of the wall clock is logged but does not move the join's
    clock (counted as ``future_time``): one client sending a wrong clock must not mature every
    pending prediction at once."""
    orphan_keep_s: float = Field(7 * 86400.0, ge=0)
    """How long a label whose prediction is not (yet) in the log is parked, waiting for it (on the
    prediction log's clock); then it is counted as expired and dropped."""
    max_orphans: int = Field(1_000_000, gt=0)
    """Most labels parked at once; beyond, the oldest are counted as expired and dropped."""
    path: Path | None = None
    """File of the join's state (default: ``join.sqlite`` beside ``learn.checkpoint_path``) (pending
    predictions, parked labels, its offsets): on disk, so memory stays flat however many predictions wait for a label, and written in one transaction with the
    offsets it has read to (a crash re-reads from there)."""
    cache_mib: int = Field(16, gt=0)
    """SQLite page cache of the join's state, the most memory it keeps of it."""


class SimulateSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    seed: int = 7
    """Seed of every random draw of the simulator."""
    customers: int = 5000
    """Number of simulated cards (customers)."""
    terminals: int = 2000
    """Number of simulated terminals."""
    label_delay_days: float = 1.0
    """Mean delay between a transaction and its label (exponentially distributed)."""
    rate: float = 2000.0
    """Events per second pushed to the topic by `perennial simulate`."""
    fraud_keep: float = Field(1.0, gt=0, le=1)
    """Share of the simulated fraud transactions kept (the others are not generated): 1 gives the
    simulator's usual rate (about 1-3%), 0.06 about 0.15% (`perennial demo --scenario rare`)."""


class PretrainSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    history_days: int = 45
    """Days of simulated history the first version is fitted on when no file is given."""
    epochs: int = 8
    """Training epochs of pretraining."""
    retention_size: int = 20000
    """Legitimate events sampled (from the later 20% of history) into the retention set the gates
    judge forgetting on; each is weighted by how many it stands for, so the set's AP estimates the AP
    at the real fraud rate."""
    retention_frauds: int = 2000
    """Most frauds of the retention set: every fraud of the later 20% of history up to this many."""
    hidden: int = 64
    """Width of the hidden layers of the network."""


class LogSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    format: Literal["auto", "json", "text"] = "auto"
    """Logs (stderr) as JSON lines or as readable text; auto: JSON unless stderr is a terminal (in a
    pod it is not). Events on stdout are JSON unless stdout is a terminal (perennial/logs.py)."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level of the log lines written."""


class DemoSettings(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    duration_s: float = 120.0
    """How long `perennial demo` streams before it stops and summarises."""
    workdir: Path = Path("var/demo")
    """Where the demo keeps its registry and checkpoint."""
    labels: Literal["events", "join"] = "events"
    """How labels reach the learner: ``events``, labeled events with their features on the topic;
    ``join``, transactions posted to the server when they happen (logged: ``serve.prediction_log``),
    fraud labels alone on ``<topic>.labels`` when they come, joined by the learner (``join``)."""
    join_maturity_s: float = Field(3 * 86400.0, gt=0)
    """``join.maturity_s`` of the demo with ``labels: join`` unless join.maturity_s is set: simulated
    seconds, and at the default rate a simulated day passes in about 5 s."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PERENNIAL_", env_nested_delimiter="__", extra="forbid", frozen=True, use_attribute_docstrings=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    learn: LearnSettings = Field(default_factory=LearnSettings)
    join: JoinSettings = Field(default_factory=JoinSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)
    pretrain: PretrainSettings = Field(default_factory=PretrainSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    log: LogSettings = Field(default_factory=LogSettings)
