"""Serving several versions: the loaded models, and this process's view of the deployments.

`ModelPool` keeps the versions lines need loaded, each with its own micro-batcher and image
gate (from the version's own reference profile). A version is loaded and warmed by `warm`
before any traffic moves to it; the pool keeps at most `max_loaded` versions and never
unloads one a line still runs.

`Rollout` is what the pipeline asks "which version decides this part?". It holds a snapshot
of every line's deployment and follows the database: a background thread polls the
deployments' revisions (one small query a second) and, when one changed, loads what the new
state needs *before* swapping the snapshot in, so a part is never assigned to a version this
process has not loaded. A change made through this process is applied at once (`refresh`).

It also watches the candidate's errors and latency and rolls it back (quarantined) when they
cross the limits: the same rollback an alarm or a supervisor makes.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.inference import MicroBatcher
from inspect_app.metrics import ServiceMetrics
from inspect_app.monitoring.gate import ImageGate
from inspect_app.rollout import deployments
from inspect_app.rollout.policy import Arm, Assignment, DeploymentState, assign
from inspect_app.rollout.registry import get_version, materialize
from models.profile import ReferenceProfile, load_profile

if TYPE_CHECKING:
    from models.runtime import ServingPredictor as Predictor

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A version could not be loaded; the message says why."""


@dataclass
class LoadedVersion:
    version: str
    predictor: Predictor
    batcher: MicroBatcher
    profile: ReferenceProfile | None
    gate: ImageGate | None


def _load_predictor(
    path: Path, *, runtime: str = "onnx", intra_op_threads: int | None = None
) -> Predictor:
    """A registered version as the settings serve it: ONNX Runtime when its checked export
    allows (``models/runtime.py``), else torch, which is also what ``runtime="torch"`` asks."""
    from models.runtime import load_predictor

    return load_predictor(path, runtime=runtime, intra_op_threads=intra_op_threads)


class ModelPool:
    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        *,
        max_loaded: int = 4,
        batch_max_size: int = 16,
        batch_max_wait_ms: float = 5.0,
        metrics: ServiceMetrics | None = None,
        loader: Callable[[Path], Predictor] | None = None,
        inference_runtime: str = "onnx",
        onnx_threads: int | None = None,
    ) -> None:
        """`loader` loads a version's checkpoint file; the default is `_load_predictor` with
        the runtime and ONNX Runtime threads given here (the settings')."""
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.engine = engine
        self.data_dir = Path(data_dir)
        self.max_loaded = max_loaded
        self.batch_max_size = batch_max_size
        self.batch_max_wait_ms = batch_max_wait_ms
        self.metrics = metrics
        self.loader = loader or partial(
            _load_predictor, runtime=inference_runtime, intra_op_threads=onnx_threads
        )
        self._lock = threading.RLock()  # one load at a time; lookups are dict reads
        self._loaded: OrderedDict[str, LoadedVersion] = OrderedDict()

    def add(
        self,
        predictor: Predictor,
        batcher: MicroBatcher,
        profile: ReferenceProfile | None,
        gate: ImageGate | None,
    ) -> LoadedVersion:
        """Adopt a version the service already loaded (its configured model, at start)."""
        with self._lock:
            loaded = LoadedVersion(predictor.version, predictor, batcher, profile, gate)
            self._loaded[predictor.version] = loaded
            return loaded

    def get(self, version: str) -> LoadedVersion | None:
        return self._loaded.get(version)

    @property
    def versions(self) -> list[str]:
        return list(self._loaded)

    def warm(self, version: str) -> LoadedVersion:
        """Load, warm and start `version` if it is not loaded; raises ModelLoadError."""
        loaded = self._loaded.get(version)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._loaded.get(version)
            if loaded is not None:
                return loaded
            try:
                with Session(self.engine) as session:
                    path = materialize(session, self.data_dir, get_version(session, version))
                predictor = self.loader(path)
                if predictor.version != version:
                    raise ModelLoadError(f"{path} holds model {predictor.version}, not {version}")
                profile = load_profile(path, version=version)
                # The first forward pass allocates and tunes; pay for it before traffic.
                predictor.predict([np.zeros((32, 32, 3), dtype=np.uint8)])
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(f"{type(exc).__name__}: {exc}") from exc
            batcher = MicroBatcher(
                predictor,
                self.batch_max_size,
                self.batch_max_wait_ms,
                metrics=self.metrics,
                wait_for_announced=True,
            )
            batcher.start()
            loaded = LoadedVersion(
                version,
                predictor,
                batcher,
                profile,
                None if profile is None else ImageGate(profile),
            )
            self._loaded[version] = loaded
            logger.info(
                "model %s loaded and warmed from %s, served by %s (%d versions loaded)%s",
                version,
                path,
                getattr(predictor, "runtime", "torch"),
                len(self._loaded),
                "" if profile is not None else "; it has no reference profile, so no image gate",
            )
            return loaded

    def retain(self, needed: set[str]) -> None:
        """Unload the least recently loaded versions no line needs, down to `max_loaded`."""
        with self._lock:
            for version in list(self._loaded):
                if len(self._loaded) <= self.max_loaded:
                    break
                if version in needed:
                    continue
                loaded = self._loaded.pop(version)
                loaded.batcher.stop()
                logger.info("model %s unloaded: no line runs it", version)

    def stop(self) -> None:
        with self._lock:
            for loaded in self._loaded.values():
                loaded.batcher.stop()


@dataclass
class _Watch:
    runs: deque[tuple[bool, float]]


class Rollout:
    """This process's deployments: the snapshot the pipeline assigns parts by."""

    def __init__(
        self,
        engine: Engine,
        pool: ModelPool,
        default_version: str,
        *,
        poll_seconds: float = 1.0,
        error_window: int = 50,
        max_errors: int = 5,
        max_latency_ms: float = 2000.0,
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.default_version = default_version
        self.poll_seconds = poll_seconds
        self.error_window = error_window
        self.max_errors = max_errors
        self.max_latency_ms = max_latency_ms
        self._states: dict[str, DeploymentState] = {}
        self._seen: tuple[dict[str, int], tuple[int, int]] = ({}, (0, 0))
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: dict[tuple[str, str], deque[tuple[bool, float]]] = {}
        self._watch_lock = threading.Lock()

    # -- the snapshot

    def state(self, line_id: str) -> DeploymentState:
        state = self._states.get(line_id)
        return state if state is not None else DeploymentState(line_id, self.default_version)

    def assign(
        self, line_id: str, *, draw: float, shadow_draw: float, part_serial: str | None
    ) -> tuple[DeploymentState, Assignment]:
        state = self.state(line_id)
        assignment = assign(state, draw=draw, shadow_draw=shadow_draw, part_serial=part_serial)
        if self.pool.get(assignment.decider) is None:
            # Never happens once `refresh` has loaded what the state needs; if it does (a
            # load failed after the change), the champion decides and the log says so.
            logger.error("line %s: %s is not loaded; the champion decides", line_id, assignment)
            assignment = Assignment(state.champion, Arm.CHAMPION, 1.0, hidden=())
        hidden = tuple(v for v in assignment.hidden if self.pool.get(v) is not None)
        return state, Assignment(assignment.decider, assignment.arm, assignment.probability, hidden)

    def refresh(self, *, force: bool = True) -> bool:
        """Reload the deployments when they changed (or always, with `force`); loads every
        version the new states need before they take effect. True when something changed."""
        with self._refresh_lock:
            with Session(self.engine) as session:
                seen = (deployments.revisions(session), deployments.bandit_revision(session))
                if not force and seen == self._seen:
                    return False
                states = deployments.all_states(session)
            for state in states.values():
                for version in state.versions:
                    try:
                        self.pool.warm(version)
                    except ModelLoadError:
                        logger.exception("line %s needs model %s, which fails to load",
                                         state.line_id, version)  # fmt: skip
            changed = {
                line: state
                for line, state in states.items()
                if self._states.get(line) is None or self._states[line].revision != state.revision
            }
            self._states = states
            self._seen = seen
            needed = {self.default_version} | {v for s in states.values() for v in s.versions}
            self.pool.retain(needed)
        for line, state in changed.items():
            logger.info(
                "line %s follows deployment revision %d: champion %s, candidate %s, mode %s, "
                "candidate share %.2f%s",
                line,
                state.revision,
                state.champion,
                state.candidate or "-",
                state.mode,
                state.candidate_share(),
                " (quarantined)" if state.quarantined else "",
            )
        return True

    def warm(self, version: str) -> None:
        """For the deployment use cases: raises when the version cannot be served."""
        self.pool.warm(version)

    # -- following other processes

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="inspect-rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.pool.stop()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh(force=False)
            except Exception:
                logger.exception("could not read the deployments; keeping the last ones")

    # -- the candidate's health

    def observe_candidate(
        self, line_id: str, version: str, *, error: bool, model_ms: float
    ) -> str | None:
        """Count one run of a line's candidate; returns the reason when it must roll back."""
        state = self.state(line_id)
        if state.candidate != version or state.quarantined:
            return None
        key = (line_id, version)
        with self._watch_lock:
            runs = self._watch.setdefault(key, deque(maxlen=self.error_window))
            runs.append((error, model_ms))
            errors = sum(1 for e, _ in runs if e)
            latencies = [ms for e, ms in runs if not e]
            full = len(runs) >= self.error_window
        if errors >= self.max_errors:
            return f"{errors} errors in its last {len(runs)} runs (limit {self.max_errors})"
        if full and latencies and median(latencies) > self.max_latency_ms:
            return (
                f"median model latency {median(latencies):.0f} ms over its last {len(runs)} "
                f"runs, above the limit of {self.max_latency_ms:.0f} ms"
            )
        return None

    def roll_back_unhealthy(self, line_id: str, version: str, why: str) -> None:
        """The automatic rollback on errors or latency (in a worker thread: it writes)."""
        with Session(self.engine) as session:
            rolled = deployments.rollback(
                session,
                line_id,
                actor="system",
                reason=f"candidate {version} rolled back automatically: {why}",
                evidence={"health": why},
                automatic=True,
            )
        with self._watch_lock:
            self._watch.pop((line_id, version), None)
        if rolled is not None:
            self.refresh()

    def after_label(self, line_id: str, inspection_id: int) -> None:
        """The bandit's reward and the canary's step, after a label committed."""
        with Session(self.engine) as session:
            deployments.after_label(session, line_id, inspection_id)
        self.refresh(force=False)
