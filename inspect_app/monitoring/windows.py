"""The recent window the drift tests look at: the last N parts of a line, in memory.

Counted in parts, not minutes: a test's power depends on how many parts it sees, and a line
that stops for lunch should not test a window of three parts. The service feeds one window per
line (and model version) with each inspection's input metrics and embedding, and every so many
parts hands `metrics()` to `drift.input_drift` and `embeddings()` to `drift.embedding_drift`;
the keys (inspection ids) turn the embedding test's most responsible rows back into images.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, eq=False)
class _Record:
    key: Hashable
    metrics: Mapping[str, float]
    embedding: NDArray[np.float64] | None


class CountWindow:
    """The last `size` parts: their keys, input metrics and (optional) embeddings.

    Larger windows test with more power and react later: a drift that started k parts ago
    fills only k / size of the window. A part without an embedding (the model did not run) or
    without some metric still counts as a part; the missing values are left out of the tests.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a window holds at least one part, got size={size}")
        self.size = size
        self._records: deque[_Record] = deque(maxlen=size)
        self.seen = 0  # parts added since the window was made or cleared

    def add(
        self, key: Hashable, metrics: Mapping[str, float], embedding: ArrayLike | None = None
    ) -> None:
        vector = None if embedding is None else np.asarray(embedding, dtype=np.float64).ravel()
        self._records.append(_Record(key, dict(metrics), vector))
        self.seen += 1

    def __len__(self) -> int:
        return len(self._records)

    @property
    def full(self) -> bool:
        return len(self._records) == self.size

    def clear(self) -> None:
        """Start afresh, e.g. after a re-baseline or a new model version."""
        self._records.clear()
        self.seen = 0

    def keys(self) -> list[Hashable]:
        return [r.key for r in self._records]

    def metrics(self) -> dict[str, NDArray[np.float64]]:
        """One array per metric seen in the window, oldest first; NaN where a part lacks it."""
        names = list(dict.fromkeys(name for r in self._records for name in r.metrics))
        return {
            name: np.array([r.metrics.get(name, np.nan) for r in self._records], dtype=np.float64)
            for name in names
        }

    def embeddings(self) -> tuple[list[Hashable], NDArray[np.float64]]:
        """(keys, (M, D) matrix) of the parts that have an embedding, oldest first."""
        rows = [r for r in self._records if r.embedding is not None]
        if not rows:
            return [], np.empty((0, 0))
        dims = {r.embedding.shape[0] for r in rows if r.embedding is not None}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different sizes in one window: {sorted(dims)}")
        return [r.key for r in rows], np.vstack(
            [r.embedding for r in rows if r.embedding is not None]
        )
