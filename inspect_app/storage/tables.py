"""SQLModel tables. One module so every part of the product reads the same schema.

Conventions: times are timezone-aware UTC; enums are stored as their string values;
JSON-ish payloads (probabilities, event details) are stored as JSON columns.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from inspect_app.domain import AutomationLevel
from inspect_app.timeutil import utcnow


class Line(SQLModel, table=True):
    """One inspection station with its own automation level and targets."""

    id: str = Field(primary_key=True, max_length=64)  # e.g. "line-1"; used in URLs
    level: str = Field(default=AutomationLevel.SHADOW.value, max_length=16)
    # Partial automation: auto-pass when P(ok) >= pass_threshold, auto-fail when
    # P(defect) >= fail_threshold; NULL: never on that side (domain.NEVER, one-sided partial).
    # The default is the model's alone: a column default would turn an explicit None (never)
    # back into 0.98 at INSERT, which is SQLAlchemy's rule for a None with a default.
    pass_threshold: float | None = Field(default=0.98, sa_column_kwargs={"default": None})
    fail_threshold: float | None = Field(default=0.98, sa_column_kwargs={"default": None})
    audit_rate: float = 0.02
    max_escape_rate: float = 0.005  # evidence gate target for auto-passed parts
    max_false_reject_rate: float = 0.02  # evidence gate target for auto-failed parts
    min_labels: int = 200  # minimum labeled would-be-automated parts on each side
    auto_demote: bool = True  # drop one level when live audit bounds cross a target
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Set when a monitoring alarm stops auto-decisions: the gate for a raise reads only labels
    # of parts received after it, so a line is never raised back on pre-alarm evidence.
    evidence_since: datetime | None = None
    # -- known-answer parts (revision 0012): the chance a claim on this line serves a reference
    # part (inspect_app.reference) in place of the next live task; 0: never
    reference_rate: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    # the evidence gate leaves out labels of inspectors flagged on reference parts
    gate_excludes_flagged: bool = Field(
        default=False, sa_column_kwargs={"server_default": text("false")}
    )


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=64)
    role: str = Field(max_length=16)  # domain.Role
    password_hash: str  # scrypt, salted; see inspect_app.security
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    # Review UI sessions that logged in before this are ended (review_ui.auth.SessionTokens).
    password_changed_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    """Bearer tokens for the API. Only a hash is stored; the token is shown once."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    token_hash: str = Field(unique=True, index=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    # None: issued before tokens expired (revision 0003); such a token expires at
    # created_at + the configured TTL (accounts.token_expiry).
    expires_at: datetime | None = None
    last_used_at: datetime | None = None  # to the minute or so (accounts.LAST_USED_RESOLUTION)


class CameraKey(SQLModel, table=True):
    """A camera's key works for its own line only. Only a hash is stored."""

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", index=True, max_length=64)
    key_hash: str = Field(unique=True, index=True, max_length=128)
    key_prefix: str = Field(max_length=16)  # first characters, to tell keys apart in listings
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class LoginThrottle(SQLModel, table=True):
    """Failed logins of one user name or one client address, shared by every process.

    One row per name or address that failed recently: the failures in the current window,
    the lockout they caused, and how many lockouts in a row (each doubles the next one).
    See inspect_app.login_throttle.
    """

    __table_args__ = (UniqueConstraint("scope", "key", name="uq_loginthrottle_scope_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=8)  # "user" | "address"
    key: str = Field(max_length=128)  # the name as typed, or the client's IP address
    failures: int = 0  # in the window that began at window_started_at
    window_started_at: datetime | None = None
    locked_until: datetime | None = None
    lockouts: int = 0  # in a row, since the last successful login (or a quiet day)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Inspection(SQLModel, table=True):
    """One captured image of one part and everything decided about it.

    Fields are grouped by the pipeline stage that fills them.
    """

    __table_args__ = (
        UniqueConstraint("line_id", "capture_id", name="uq_inspection_line_capture"),
        Index("ix_inspection_line_received", "line_id", "received_at"),
        # revision 0016, from the plans at 1M inspections (bench/query_scaling.py): one
        # model's parts on a line in id order (the gate's evidence, the agreement report),
        # a line's newest parts (monitoring series, gate counts, its current model), and
        # its gate refusals, which are rare, so a scan for the newest of them read history
        Index("ix_inspection_line_version", "line_id", "model_version", "id"),
        Index("ix_inspection_line_id", "line_id", "id"),
        Index(
            "ix_inspection_gate_refused",
            "line_id",
            "id",
            postgresql_where=text("gate_codes IS NOT NULL"),
            sqlite_where=text("gate_codes IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", max_length=64)
    # -- capture (from the camera / line software)
    capture_id: str | None = Field(default=None, max_length=128)  # idempotency key
    part_serial: str | None = Field(default=None, max_length=128)
    captured_at: datetime | None = None
    received_at: datetime = Field(default_factory=utcnow)
    source: str = Field(default="http", max_length=16)  # http | opencv | folder | replay
    true_class: str | None = Field(default=None, max_length=32)  # known truth (replay only)
    # -- stored image (content-addressed, see storage.images)
    image_sha256: str = Field(index=True, max_length=64)
    image_format: str = Field(max_length=8)  # jpeg | png | bmp
    # -- after decoding: input stats (for input-drift monitoring)
    width: int
    height: int
    brightness: float  # mean grey level, 0..255
    contrast: float  # std of grey level
    sharpness: float  # variance of the Laplacian
    # -- after inference (all None at human_only, where the model does not run)
    model_version: str | None = Field(default=None, max_length=64)
    probabilities: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    predicted_class: str | None = Field(default=None, max_length=32)
    confidence: float | None = None  # calibrated probability of predicted_class
    p_defect: float | None = None  # calibrated 1 - P(ok)
    # -- after routing: the line's policy at that moment (evidence is never pooled across it)
    level: str = Field(max_length=16)
    pass_threshold: float | None  # NULL: the line never auto-passed (domain.NEVER)
    fail_threshold: float | None  # NULL: the line never auto-failed
    route: str = Field(max_length=8)  # domain.Route
    show_model: bool = False  # may the inspector see the model's output for this part
    decision: str = Field(index=True, max_length=8)  # domain.Decision
    decided_by: str | None = Field(default=None, max_length=8)  # domain.DecidedBy
    decided_at: datetime | None = None
    # -- timings, milliseconds
    decode_ms: float = 0.0
    queue_ms: float = 0.0
    model_ms: float = 0.0
    persist_ms: float = 0.0
    total_ms: float = 0.0
    # -- round 2, after decoding: the image gate's metrics (None on rows from before it)
    clipped_dark: float | None = None  # share of pixels at the dark end (under-exposure)
    clipped_bright: float | None = None  # share of pixels at the bright end (over-exposure)
    mean_blue: float | None = None
    mean_green: float | None = None
    mean_red: float | None = None
    # -- the image gate: why the model was not allowed to decide this frame (None: usable)
    gate_codes: str | None = Field(default=None, max_length=128)  # comma-separated GateCode
    gate_reason: str | None = Field(default=None, max_length=1000)  # in plant words
    ood_distance: float | None = None  # embedding distance to the model's reference
    # the embedding in the reference profile's reduced coordinates (embedding-drift tests)
    embedding: list[float] | None = Field(default=None, sa_column=Column(JSON))
    # -- retention (revision 0005; columns a revision adds go last, where ALTER TABLE puts them):
    # when the sweep removed the image bytes (storage.retention). The row stays for ever.
    image_removed_at: datetime | None = None
    # -- rollout (revision 0007): which arm of the line's deployment decided this part, and
    # the probability that arm had of being chosen (offline estimates weight by its inverse)
    arm: str | None = Field(default=None, max_length=16)  # rollout.policy.Arm
    assignment_p: float | None = None
    deployment_revision: int | None = None
    # the audit lottery's rate for this part (routes review and auto take 1 and 0): a labeled
    # part stands for 1 / audit_p parts in weighted evidence. NULL before revision 0007.
    audit_p: float | None = None


class ReviewTask(SQLModel, table=True):
    """A unit of work in the review queue, claimed by one inspector at a time under a lease."""

    __table_args__ = (
        Index("ix_task_queue", "status", "priority", "created_at"),
        # The claim query reads only waiting tasks in serving order; a partial index keeps
        # it independent of how many done tasks pile up (PostgreSQL 1.5 -> 0.2 ms measured;
        # SQLite, partial since revision 0016, 78 -> 0.1 ms at 100k tasks once ANALYZEd).
        Index(
            "ix_task_waiting",
            "priority",
            "created_at",
            "id",
            postgresql_where=text("status IN ('open', 'claimed', 'escalated')"),
            sqlite_where=text("status IN ('open', 'claimed', 'escalated')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", unique=True)
    line_id: str = Field(foreign_key="line.id", index=True, max_length=64)
    reason: str = Field(max_length=16)  # domain.TaskReason
    priority: int = 1  # lower is served first: 0 = the line waits for a decision, 1 = audit
    show_model: bool = False
    status: str = Field(default="open", max_length=16)  # domain.TaskStatus
    claimed_by: int | None = Field(default=None, foreign_key="user.id")
    claimed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    note: str | None = None  # why it was escalated, etc.


class Label(SQLModel, table=True):
    """A human verdict. A relabel adds a row and marks the earlier one superseded."""

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", index=True)
    task_id: int | None = Field(default=None, foreign_key="reviewtask.id")
    user_id: int = Field(foreign_key="user.id", index=True)
    label: str = Field(max_length=32)  # domain.DefectClass value
    note: str | None = None
    model_shown: bool = False  # True when the human saw the model's output (assist): not blind
    duration_ms: int | None = None  # time from the part shown to the verdict
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # a later label replaced this one. Not indexed (revision 0016 dropped the index): nearly
    # every row is False, and SQLite's planner took the index for selective and drove the
    # gate's evidence query from it, a scan of every current label of every line
    superseded: bool = False


class Event(SQLModel, table=True):
    """The audit trail an operator reads to reconstruct an incident."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    line_id: str | None = Field(default=None, index=True, max_length=64)
    kind: str = Field(max_length=32)  # level_change, auto_demotion, model_switch, user_added, ...
    actor: str = Field(max_length=64)  # a user's name, a camera key prefix, or "system"
    reason: str = ""
    details: dict | None = Field(default=None, sa_column=Column(JSON))


class MonitorSample(SQLModel, table=True):
    """One evaluation of one monitored metric on one line: the series the Monitoring page plots
    against the reference band, and what an alarm's value was when it changed state."""

    __table_args__ = (Index("ix_monitorsample_line_metric_at", "line_id", "metric", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", max_length=64)
    at: datetime = Field(default_factory=utcnow)
    model_version: str | None = Field(default=None, max_length=64)
    metric: str = Field(max_length=32)  # monitoring.alarms metric vocabulary
    value: float | None = None  # None: not enough parts in the window yet
    window: int = 0  # parts the value was computed over
    last_inspection_id: int | None = None  # the newest part in the window


class AlarmStateRow(SQLModel, table=True):
    """Where each alarm rule stands on each line, shared by every service process."""

    __tablename__ = "alarmstate"

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    rule: str = Field(primary_key=True, max_length=64)
    state: dict = Field(sa_column=Column(JSON, nullable=False))  # alarms.AlarmState.to_dict()
    updated_at: datetime = Field(default_factory=utcnow)


class AlarmRuleOverride(SQLModel, table=True):
    """A supervisor's edit of a shipped alarm rule for one line (the defaults stay in code)."""

    __tablename__ = "alarmruleoverride"

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    rule: str = Field(primary_key=True, max_length=64)
    changes: dict = Field(sa_column=Column(JSON, nullable=False))
    updated_by: str = Field(max_length=64)
    reason: str = Field(default="", max_length=1000)
    updated_at: datetime = Field(default_factory=utcnow)


class DriftReport(SQLModel, table=True):
    """One drift test on a line's recent window against the model's reference profile."""

    __table_args__ = (Index("ix_driftreport_line_at", "line_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", max_length=64)
    at: datetime = Field(default_factory=utcnow)
    model_version: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=16)  # input | embedding | prediction | concept
    window: int  # recent parts tested
    p_value: float | None = None
    drifted: bool = False
    details: dict | None = Field(default=None, sa_column=Column(JSON))
    # inspection ids most responsible for an embedding drift, most responsible first
    responsible: list[int] | None = Field(default=None, sa_column=Column(JSON))


# -- rollout (revision 0007) -----------------------------------------------------------------


class ModelVersion(SQLModel, table=True):
    """A registered model: immutable once written (the registry never updates a row)."""

    __tablename__ = "modelversion"

    # the checkpoint's own version name: defect-cnn-<date>-<8 hex of the weights' digest>
    version: str = Field(primary_key=True, max_length=64)
    sha256: str = Field(unique=True, max_length=64)  # of the checkpoint file's bytes
    path: str = Field(max_length=512)  # the registry's copy, relative to the data folder
    architecture: dict = Field(sa_column=Column(JSON, nullable=False))  # DefectCNNConfig
    class_names: list = Field(sa_column=Column(JSON, nullable=False))
    temperature: float
    metrics: dict = Field(sa_column=Column(JSON, nullable=False))  # the model card's figures
    data_seed: int | None = None
    parent_version: str | None = Field(default=None, max_length=64)
    lineage: dict = Field(sa_column=Column(JSON, nullable=False))  # data manifest, base data
    profile_sha256: str | None = Field(default=None, max_length=64)  # its reference profile
    notes: str = Field(default="", max_length=2000)
    registered_by: str = Field(max_length=64)
    registered_at: datetime = Field(default_factory=utcnow)


class ModelFile(SQLModel, table=True):
    """A registered checkpoint's (or profile's) bytes, so every service process on the
    database can load a version registered through any other, whatever its data folder."""

    __tablename__ = "modelfile"

    sha256: str = Field(primary_key=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ImageBlob(SQLModel, table=True):
    """A camera image's bytes, for the database image store (`INSPECT_IMAGE_STORE=database`):
    written in the transaction of the inspection row, read by every process.

    `stored_at` is refreshed when the same bytes come again, so the retention sweep never
    removes bytes a row is about to commit for (`storage.images.DatabaseImageStore`)."""

    __tablename__ = "imageblob"

    sha256: str = Field(primary_key=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int
    stored_at: datetime = Field(default_factory=utcnow)


class UiSession(SQLModel, table=True):
    """A review-UI login, shared by every process: the browser's cookie names it, only its
    hash is stored. Ended by logout, expiry, the user's deactivation or a password change
    (`accounts.ui_session_user`), in every process from the next request."""

    __tablename__ = "uisession"

    id: int | None = Field(default=None, primary_key=True)
    session_hash: str = Field(unique=True, index=True, max_length=128)
    user_id: int = Field(foreign_key="user.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = Field(default=None, max_length=200)


class ReviewDesk(SQLModel, table=True):
    """One browser tab's inspector desk (`review_ui.desk`): the part it shows, the verdict
    ``u`` can undo, a correction or pause under way. In the database, not in a process's
    memory, so whichever process a load balancer picks answers the tab's next event.
    Keyed by the tab's Gradio session hash; the row answers only the user who opened it."""

    __tablename__ = "reviewdesk"

    session_hash: str = Field(primary_key=True, max_length=128)
    user_id: int = Field(foreign_key="user.id", index=True)
    state: dict = Field(sa_column=Column(JSON, nullable=False))  # desk.DeskSession, as JSON
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow, index=True)


class Deployment(SQLModel, table=True):
    """What runs on a line: a champion and at most one candidate with its rollout mode.

    Every service process reads it (and polls `revision`), so a change made through any
    process reaches all of them; every change is also an event."""

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    champion: str = Field(foreign_key="modelversion.version", max_length=64)
    candidate: str | None = Field(default=None, foreign_key="modelversion.version", max_length=64)
    mode: str = Field(default="none", max_length=16)  # rollout.policy.Mode
    share: float = 0.0  # the candidate's share of decisions (canary step, A/B split, 1 at b/g)
    shadow_share: float = 1.0  # shadow: the share of parts the candidate also runs on
    steps: list = Field(sa_column=Column(JSON, nullable=False))  # canary shares, e.g. .05 .. 1
    step: int = 0  # index into steps
    step_min_labels: int = 50  # blind labels of the candidate's decisions a step needs
    step_started_at: datetime | None = None
    candidate_audit_rate: float = 0.10  # audit rate of parts the candidate decides
    exploration: float = 0.10  # bandit: the floor, shared evenly between the versions
    quarantined: bool = False  # rolled back: no traffic until a supervisor re-arms it
    quarantine_reason: str | None = Field(default=None, max_length=1000)
    revision: int = 1  # bumped by every change; processes compare it to follow changes
    updated_by: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)
    # The thresholds the candidate decides at while it rolls out (`rollout.deployments`:
    # {"pass_threshold", "fail_threshold", "source"}, null on a side: never); NULL: the line's.
    candidate_thresholds: dict | None = Field(default=None, sa_column=Column(JSON))


class ModelPrediction(SQLModel, table=True):
    """What each version that ran said about a part: the decider's and the shadow's answers,
    so evidence is per version, paired on the same parts, and never pooled."""

    __tablename__ = "modelprediction"
    __table_args__ = (
        UniqueConstraint("inspection_id", "model_version", name="uq_prediction_version"),
        Index("ix_prediction_version_inspection", "model_version", "inspection_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id")
    model_version: str = Field(max_length=64)
    role: str = Field(max_length=8)  # decided | shadow
    probabilities: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    predicted_class: str | None = Field(default=None, max_length=32)
    p_defect: float | None = None
    model_ms: float = 0.0
    error: str | None = Field(default=None, max_length=500)  # the version failed on the image


class BanditArm(SQLModel, table=True):
    """A bandit's posterior for one version on one line: Beta(1 + successes, 1 + failures).

    Updated with `successes = successes + 1` in one statement, so processes never lose a
    reward to a read-modify-write race."""

    __tablename__ = "banditarm"

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    model_version: str = Field(primary_key=True, max_length=64)
    successes: int = 0
    failures: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class LineBaseline(SQLModel, table=True):
    """A line's own reference for drift monitoring, taken from a window of its parts that a
    supervisor chose (revision 0008): a plant's mix (a few percent defective, its lighting)
    is not the calibration set's, and the drift tests must compare the line with itself.
    The image gate keeps the version's own profile: re-baselining never loosens it."""

    __tablename__ = "linebaseline"

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    model_version: str = Field(max_length=64)  # the baseline holds only for this version
    window_since: datetime
    window_until: datetime
    n_parts: int
    metric_quantiles: dict = Field(sa_column=Column(JSON, nullable=False))
    coordinates: list = Field(sa_column=Column(JSON, nullable=False))  # (N, m + 1) embeddings
    created_by: str = Field(max_length=64)
    reason: str = Field(max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)


# -- line outputs (revision 0009) ------------------------------------------------------------


class OutputDestination(SQLModel, table=True):
    """Where a line's final decisions and alarm changes are pushed: a webhook URL (signed with
    the shared secret) or an MQTT broker. See inspect_app.outputs."""

    __tablename__ = "outputdestination"

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", index=True, max_length=64)
    kind: str = Field(max_length=8)  # outputs.core.DestinationKind
    url: str = Field(max_length=1000)  # https://... for a webhook, mqtt://host:port for MQTT
    # the webhook's HMAC key: stored as given, since signing needs it (never shown back)
    secret: str | None = Field(default=None, max_length=256)
    topic_prefix: str = Field(default="inspect", max_length=128)  # MQTT: <prefix>/<line>/<kind>
    enabled: bool = True
    # Messages of the line with seq below this are delivered (or predate the destination);
    # the worker looks for the oldest undelivered one from here. A replay lowers it.
    pending_from_seq: int = 1
    # which worker delivers to it now: one at a time keeps the order (outputs.worker)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_expires_at: datetime | None = None
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ChangeRevision(SQLModel, table=True):
    """A counter per kind of change that processes cache (`inspect_app.storage.revisions`):
    every transaction that changes a line or a camera key increments scope ``lines`` in that
    transaction, so a process reads one small row to know its cached lookups still hold."""

    __tablename__ = "changerevision"

    scope: str = Field(primary_key=True, max_length=32)
    revision: int = 0


class OutputSequence(SQLModel, table=True):
    """A line's last outbox sequence number. Taking the next one locks this row until the
    change commits, so a line's messages commit in sequence order."""

    __tablename__ = "outputsequence"

    line_id: str = Field(foreign_key="line.id", primary_key=True, max_length=64)
    last_seq: int = 0


class OutboxMessage(SQLModel, table=True):
    """One message to a line's outputs, written in the transaction of the change it tells."""

    __tablename__ = "outboxmessage"
    __table_args__ = (UniqueConstraint("line_id", "seq", name="uq_outbox_line_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    line_id: str = Field(foreign_key="line.id", max_length=64)
    seq: int  # per line, increasing: the delivery order
    delivery_id: str = Field(unique=True, max_length=64)  # receivers deduplicate on it
    kind: str = Field(max_length=16)  # decision | alarm
    payload: dict = Field(sa_column=Column(JSON, nullable=False))  # the body, as sent
    created_at: datetime = Field(default_factory=utcnow)


class OutputDelivery(SQLModel, table=True):
    """One message's delivery to one destination: attempts, the last error, when delivered."""

    __tablename__ = "outputdelivery"
    __table_args__ = (
        UniqueConstraint("destination_id", "message_id", name="uq_delivery_destination_message"),
    )

    id: int | None = Field(default=None, primary_key=True)
    destination_id: int = Field(foreign_key="outputdestination.id", index=True)
    message_id: int = Field(foreign_key="outboxmessage.id", index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None  # backoff: not tried again before this
    delivered_at: datetime | None = None
    replays: int = 0  # times a supervisor asked for it again


# -- known-answer parts (revision 0012) ------------------------------------------------------


class ReferencePart(SQLModel, table=True):
    """An inspection a supervisor verified: its label is the known answer inspectors are
    measured against. Removing one keeps the row (its answers still point at it)."""

    __tablename__ = "referencepart"

    id: int | None = Field(default=None, primary_key=True)
    inspection_id: int = Field(foreign_key="inspection.id", unique=True)
    line_id: str = Field(foreign_key="line.id", index=True, max_length=64)
    label: str = Field(max_length=32)  # domain.DefectClass value: the verified answer
    reason: str = Field(max_length=1000)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    removed_at: datetime | None = None  # no longer served; its answers still count
    removed_by: str | None = Field(default=None, max_length=64)


class ReferenceAnswer(SQLModel, table=True):
    """One serving of a reference part to one inspector, and their verdict on it.

    Never a Label: a verdict here changes no decision and is evidence for nothing but the
    inspector's own accuracy. What the inspector was shown are fresh numbers from the id
    spaces of live parts (reference.serving), never the source inspection's: the task id
    (``served_task_id``), the part's id (``served_part_id``, in its image URL and "part #")
    and the id of the saved verdict (``served_label_id``)."""

    __tablename__ = "referenceanswer"
    __table_args__ = (
        Index("ix_referenceanswer_user_served", "user_id", "served_at"),
        Index("ix_referenceanswer_user_part", "user_id", "served_part_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    reference_id: int = Field(foreign_key="referencepart.id", index=True)
    inspection_id: int = Field(foreign_key="inspection.id")
    line_id: str = Field(foreign_key="line.id", max_length=64)
    user_id: int = Field(foreign_key="user.id")
    served_task_id: int
    served_reason: str = Field(max_length=16)  # the reason of the live task it stood in for
    status: str = Field(default="held", max_length=16)  # reference.serving.AnswerStatus
    served_at: datetime = Field(default_factory=utcnow)
    lease_expires_at: datetime
    expected: str = Field(max_length=32)  # the reference's label when it was served
    label: str | None = Field(default=None, max_length=32)  # the inspector's verdict
    answered_at: datetime | None = None
    duration_ms: int | None = None
    # revision 0014; NULL on rows from before it, which showed the source inspection's id
    served_part_id: int | None = None
    served_label_id: int | None = None


class InspectorFlag(SQLModel, table=True):
    """Whether an inspector's accuracy on reference parts is below the set level, so the
    crossing is an event once (and labels of a flagged inspector can be left out)."""

    __tablename__ = "inspectorflag"

    user_id: int = Field(foreign_key="user.id", primary_key=True)
    flagged: bool = False
    changed_at: datetime = Field(default_factory=utcnow)
    details: dict | None = Field(default=None, sa_column=Column(JSON))  # the figures then
