"""What the gate and recommendation tests share: the design's targets and a labeled stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inspect_app.evidence import GateTargets

LabeledStream = Callable[..., tuple[np.ndarray, np.ndarray]]


@pytest.fixture
def targets() -> GateTargets:
    """The design's defaults: escapes under 0.5%, false rejects under 2%, 200 labels a side."""
    return GateTargets(max_escape_rate=0.005, max_false_reject_rate=0.02, min_labels=200)


def _stream(n_pass: int, escapes: int, n_fail: int, false_rejects: int, n_human: int = 0):
    """Labeled parts: a pass side (P(ok) 0.999), a fail side (P(ok) 0.001), some in between."""
    p_ok = np.concatenate([np.full(n_pass, 0.999), np.full(n_fail, 0.001), np.full(n_human, 0.5)])
    defect = np.concatenate(
        [
            np.arange(n_pass) < escapes,
            np.arange(n_fail) >= false_rejects,
            np.zeros(n_human, dtype=bool),
        ]
    )
    return p_ok, defect


@pytest.fixture
def labeled_stream() -> LabeledStream:
    """`labeled_stream(n_pass, escapes, n_fail, false_rejects, n_human=0)` -> (p_ok, defect)."""
    return _stream
