"""Typed settings, read from the environment (prefix ``INSPECT_``) or given by the CLI.

Built by the app factory, never at import time, so tests build their own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import DEFAULT_WEIGHTS

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"


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
    weights: Path = DEFAULT_WEIGHTS
    host: str = "127.0.0.1"
    port: int = 8000

    # micro-batching: concurrent requests share one model call
    batch_max_size: int = 16
    batch_max_wait_ms: float = 5.0

    # decompression-bomb and abuse limits
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 25_000_000

    # Threads for the model's math. None keeps torch's default (one per core). On a small
    # line PC the event loop, decoding and the database need a core too: 1 thread measured
    # p99 110 ms vs 200 ms at 10 images/s on 2 cores (bench/ingest_throughput.py).
    torch_threads: int | None = None

    review_lease_seconds: float = 60.0
    cameras: list[CameraSourceConfig] = Field(default_factory=list)
    demo: bool = False  # seed line-1, demo users, a camera key and the replay camera
    # The demo's replay camera waits while line-1 has this many unlabeled tasks: at one image
    # a second, a demo left running for a night would otherwise queue 28,800 parts.
    demo_max_queue: int = Field(default=50, ge=1)

    @field_validator("batch_max_size")
    @classmethod
    def batch_size_is_positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("batch_max_size must be at least 1")
        return v

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'inspect.db').resolve()}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"
