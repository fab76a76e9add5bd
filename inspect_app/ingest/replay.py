"""A simulated line camera: replays a labeled dataset at a set rate, remembering each truth.

Used by the demo and by evaluation: every inspection it produces carries ``true_class``, so
what the model and the humans said can be scored against what the part really was (the
review queue never shows it). The order is a seeded shuffle of the dataset, the same on
every run, so that a demo does not show all cracks first and a test knows what comes next.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from data.dataset import LabeledImage, load_dataset
from inspect_app.ingest.base import (
    CameraSource,
    CameraSourceError,
    CapturedImage,
    capture_key,
    content_type_for,
)
from inspect_app.settings import CameraSourceConfig

log = logging.getLogger(__name__)


def replay_order(items: list[LabeledImage], *, shuffle: bool, seed: int) -> list[LabeledImage]:
    """The order the replay camera shows `items` in: the dataset's own, or a seeded shuffle."""
    ordered = sorted(items, key=lambda item: str(item.path))
    if shuffle:
        random.Random(seed).shuffle(ordered)
    return ordered


class ReplaySource(CameraSource):
    kind = "replay"

    def __init__(self, config: CameraSourceConfig, *, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(config)
        if not config.rate > 0:
            raise ValueError(f"a replay camera needs rate > 0 images/s, got {config.rate}")
        self.root = Path(config.uri)
        self._period = 1.0 / config.rate
        self._shuffle = shuffle
        self._seed = seed
        self._items: list[LabeledImage] = []
        self._position = 0
        self._cycle = 0
        self._sent = 0
        self._next_due = 0.0
        self._run = ""
        self._connected = False

    def connect(self) -> None:
        if not self.root.is_dir():
            raise CameraSourceError(f"replay dataset {self.root} does not exist or is not a folder")
        try:
            items = load_dataset(self.root)
        except (OSError, ValueError) as exc:
            raise CameraSourceError(f"replay dataset {self.root} cannot be read: {exc}") from exc
        if not items:
            raise CameraSourceError(f"replay dataset {self.root} has no images")
        self._items = replay_order(items, shuffle=self._shuffle, seed=self._seed)
        self._position = 0
        self._cycle = 0
        # Each run is a new shift of parts: its captures must not collide with an earlier run's.
        self._run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self._next_due = time.monotonic()
        self._connected = True
        log.info(
            "%s: replaying %d images at %.2f images/s%s",
            self.name,
            len(self._items),
            self.config.rate,
            ", looping" if self.config.loop else "",
        )

    def disconnect(self) -> None:
        if self._connected:
            log.info("%s: stopped after %d images", self.name, self._sent)
        self._connected = False

    @property
    def idle_seconds(self) -> float:
        return min(0.5, max(0.001, self._next_due - time.monotonic()))

    def read(self) -> CapturedImage | None:
        if not self._connected:
            raise CameraSourceError(f"{self.name}: read() before connect()")
        now = time.monotonic()
        unreadable = 0
        while not self.finished and now >= self._next_due:
            if self._position == len(self._items):
                if not self.config.loop:
                    self.finished = True
                    log.info(
                        "%s: dataset done after %d images; source stops", self.name, self._sent
                    )
                    return None
                self._position = 0
                self._cycle += 1
            index = self._position
            item = self._items[index]
            self._position += 1
            try:
                data = Path(item.path).read_bytes()
            except OSError as exc:
                log.error("%s: cannot read %s, skipped: %s", self.name, item.path, exc)
                unreadable += 1
                if unreadable >= len(self._items):
                    raise CameraSourceError(
                        f"{self.name}: no image of the dataset is readable"
                    ) from exc
                continue
            # Never ahead of the rate; when ingestion is slower than the rate, no catch-up burst.
            self._next_due = max(self._next_due + self._period, now)
            self._sent += 1
            relative = _relative(Path(item.path), self.root)
            return CapturedImage(
                data=data,
                content_type=content_type_for(Path(item.path)),
                capture_id=capture_key("replay", self._run, self._cycle, index, relative),
                part_serial=f"SIM-{self._run}-{self._sent:06d}",
                captured_at=datetime.now(UTC),
                true_class=str(item.label),
                origin=str(item.path),
            )
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
