"""Typed settings, read from the environment (prefix ``INSPECT_``) or given by the CLI.

Built by the app factory, never at import time, so tests build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import DEFAULT_WEIGHTS

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
DEFAULT_TOKEN_TTL_HOURS = 120.0  # a working week: 5 days
DEFAULT_UI_SESSION_HOURS = 12.0  # a shift and a half


class CameraSourceConfig(BaseModel):
    """A camera source running inside the service, feeding one line through ingestion."""

    line: str
    kind: str  # opencv | folder | replay
    # opencv: a device index ("0"), an RTSP/HTTP URL or a video file; folder/replay: a directory
    uri: str
    every_nth: int = 1  # opencv: take every Nth frame
    rate: float = 1.0  # replay: images per second
    loop: bool = True  # replay: start over at the end
    # Any kind: wait while the line's review queue holds this many unlabeled tasks or more,
    # so a simulated line does not pile up parts nobody labels. None: never wait (a real
    # line's parts arrive whether or not anyone labels them).
    max_queue: int | None = Field(default=None, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSPECT_", env_nested_delimiter="__")

    data_dir: Path = Path("var")
    database_url: str | None = None  # default: SQLite under data_dir
    # Where image bytes live (inspect_app.storage.images). None: "database" when the
    # database is PostgreSQL (several processes: every one reads every image, and the bytes
    # commit with their row), "local" on the embedded SQLite (one process, plain files).
    # "local" with `image_path` on a shared mount is the shared-filesystem store.
    image_store: Literal["local", "database"] | None = None
    image_path: Path | None = None  # the local store's folder; default data_dir/images
    weights: Path = DEFAULT_WEIGHTS
    host: str = "127.0.0.1"
    port: int = 8000

    # micro-batching: concurrent requests share one model call
    batch_max_size: int = 16
    batch_max_wait_ms: float = 5.0

    # several model versions (inspect_app.rollout): how many stay loaded at most (a version a
    # line runs is never unloaded), how often each process re-reads the deployments, and the
    # candidate's health limits past which it is rolled back (over its last 50 runs)
    max_loaded_models: int = Field(default=4, ge=1)
    deployment_poll_seconds: float = Field(default=1.0, gt=0)
    candidate_max_errors: int = Field(default=5, ge=1)
    candidate_max_latency_ms: float = Field(default=2000.0, gt=0)

    # How long a read of the lines' change revision stands (inspect_app.lookups): a change of
    # a line's policy or a camera key made by ANOTHER process (the CLI, a second service) is
    # followed at most this long after its commit; one made in this process, at once. 0 reads
    # the revision for every image (at 12 clients on 2 cores it was 14.7% of the service's
    # time read twice per image). 100 ms: a camera at 10 images/s gets at most one more part
    # through on a key revoked elsewhere.
    lookup_max_age_ms: float = Field(default=100.0, ge=0)

    # decompression-bomb and abuse limits
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 25_000_000

    # Threads for the model's math. None keeps torch's default (one per core). On a small
    # line PC the event loop, decoding and the database need a core too: 1 thread measured
    # p99 110 ms vs 200 ms at 10 images/s on 2 cores (bench/ingest_throughput.py).
    torch_threads: int | None = None
    # What runs the served models' forward pass (models/runtime.py): "onnx", ONNX Runtime on
    # the CPU (3.8x torch's images/s at batch 16 in issue 13's measurement), each version's
    # graph accepted only within 1e-4 of torch's calibrated probabilities (the parity check);
    # "torch", the fallback. Training, evaluation and heatmaps always use torch.
    inference_runtime: Literal["onnx", "torch"] = "onnx"
    # ONNX Runtime's intra-op threads per loaded version; None: one per core, without
    # spinning (models/onnx_predictor.py, `session_options`, says why).
    onnx_threads: int | None = Field(default=None, ge=1)

    review_lease_seconds: float = 60.0

    # Line outputs (inspect_app.outputs): the delivery worker looks for due messages every
    # `outputs_poll_seconds`; a failing destination waits base * 2**(attempts - 1) seconds
    # before its next attempt, at most the cap (a receiver back up is found within 5 min); an
    # attempt gives up after the timeout, and a worker holds a destination under a lease
    # that must outlast an attempt (another process takes over when it expires).
    outputs_enabled: bool = True
    outputs_poll_seconds: float = Field(default=0.5, gt=0)
    outputs_backoff_seconds: float = Field(default=1.0, gt=0)
    outputs_backoff_max_seconds: float = Field(default=300.0, gt=0)
    outputs_timeout_seconds: float = Field(default=5.0, gt=0)
    outputs_lease_seconds: float = Field(default=30.0, gt=0)
    cameras: list[CameraSourceConfig] = Field(default_factory=list)
    demo: bool = False  # seed line-1, demo users, a camera key and the replay camera
    # The review UI at /review. Off, the process serves the API only: an ingestion node behind
    # the line cameras, or a second API process where the inspectors' browsers never go.
    review_ui: bool = True
    # The demo's replay camera waits while line-1 has this many unlabeled tasks: at one image
    # a second, a demo left running for a night would otherwise queue 28,800 parts.
    demo_max_queue: int = Field(default=50, ge=1)

    # Credentials (inspect_app.accounts, inspect_app.login_throttle). A bearer token lasts a
    # working week (5 days = 120 h): an inspector logs in on Monday and is not asked again
    # that week, and a token copied off a screen stops working within days, not never.
    token_ttl_hours: float = Field(default=DEFAULT_TOKEN_TTL_HOURS, gt=0)
    # Failed logins (API and review UI): this many failures within the window lock the
    # user's name, or the client address, out for `login_lockout_minutes`, doubling with
    # each further lockout up to `login_lockout_max_minutes`. A user gets 5 tries (typos);
    # an address 20, since several inspectors may share one terminal or proxy.
    login_max_failures_per_user: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_minutes: float = Field(default=15.0, gt=0)
    login_lockout_minutes: float = Field(default=5.0, gt=0)
    login_lockout_max_minutes: float = Field(default=60.0, gt=0)
    # A review-UI login (a database row, so every process knows it) lasts a shift and a
    # half: an inspector is not asked again mid-shift, and a browser left logged in on a
    # shared terminal stops working by the next day.
    ui_session_hours: float = Field(default=DEFAULT_UI_SESSION_HOURS, gt=0)

    # Image retention (inspect_app.storage.retention, `inspect-app images sweep`). The bytes of
    # an image are kept `retention_days` after the part arrived; the images of parts a human
    # labeled, of parts where the human and the model disagreed, and of audited parts are kept
    # `retention_labeled_days`, since retraining and a customer complaint need them. The rows
    # (decisions, labels) are never removed: they are the evidence. A month covers a lot's
    # return window; a year covers a model's retraining cycle and a warranty claim's look-back.
    retention_days: float = Field(default=30.0, gt=0)
    retention_labeled_days: float = Field(default=365.0, gt=0)
    # A stored file that no inspection points at (written for a request whose commit then
    # failed) is removed only once it is this old, so a write whose row is about to commit is
    # never removed under it. An hour is far beyond any request's write-to-commit time.
    retention_orphan_grace_minutes: float = Field(default=60.0, gt=0)
    # The same sweep deletes line-output messages (inspect_app.outputs) older than this that
    # every destination of their line has delivered; an undelivered one stays however old.
    # A month covers a receiver that lost its store and asks for a replay; the receivers
    # hold what they were sent, and the events keep who decided what.
    outbox_retention_days: float = Field(default=30.0, gt=0)

    @field_validator("batch_max_size")
    @classmethod
    def batch_size_is_positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("batch_max_size must be at least 1")
        return v

    @model_validator(mode="after")
    def lockout_cap_is_at_least_the_first_lockout(self) -> Settings:
        if self.login_lockout_max_minutes < self.login_lockout_minutes:
            raise ValueError(
                f"login_lockout_max_minutes ({self.login_lockout_max_minutes:g}) must be at "
                f"least login_lockout_minutes ({self.login_lockout_minutes:g})"
            )
        return self

    @model_validator(mode="after")
    def outputs_timings_fit(self) -> Settings:
        if self.outputs_backoff_max_seconds < self.outputs_backoff_seconds:
            raise ValueError("outputs_backoff_max_seconds must be at least outputs_backoff_seconds")
        if self.outputs_lease_seconds <= 2 * self.outputs_timeout_seconds:
            raise ValueError(
                "outputs_lease_seconds must be more than twice outputs_timeout_seconds: the "
                "lease must outlast an attempt (an MQTT message is two publishes)"
            )
        return self

    @model_validator(mode="after")
    def labeled_images_are_kept_at_least_as_long(self) -> Settings:
        if self.retention_labeled_days < self.retention_days:
            raise ValueError(
                f"retention_labeled_days ({self.retention_labeled_days:g}) must be at least "
                f"retention_days ({self.retention_days:g}): labeled images are the evidence"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'inspect.db').resolve()}"

    @property
    def image_dir(self) -> Path:
        return self.image_path if self.image_path is not None else self.data_dir / "images"

    @property
    def resolved_image_store(self) -> str:
        """``local`` or ``database``: the setting, else the safe one for the database."""
        if self.image_store is not None:
            return self.image_store
        return "database" if self.resolved_database_url.startswith("postgresql") else "local"

    @property
    def exports_dir(self) -> Path:
        """Where the Models page writes the exports it runs (`train --data` reads them)."""
        return self.data_dir / "exports"
