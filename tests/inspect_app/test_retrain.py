"""Which folders are the plant's, and when a fine-tune rehearses the base data."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspect_app.export import SUMMARY_NAME
from inspect_app.retrain import (
    DEFAULT_BASE_SHARE,
    RetrainError,
    effective_base_share,
    plan_data,
)


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    base, export = tmp_path / "base", tmp_path / "export"
    base.mkdir()
    export.mkdir()
    (export / SUMMARY_NAME).write_text("{}")
    return base, export


def test_rehearsal_applies_only_with_a_plant_export(tmp_path: Path) -> None:
    base, export = _folders(tmp_path)
    with_export = plan_data([base, export], plant_weight=3.0)
    assert with_export.base == base and with_export.exports == (export,)
    assert effective_base_share(with_export, DEFAULT_BASE_SHARE) == 0.75
    assert effective_base_share(with_export, 0.0) is None  # 0 turns it off
    # base data only (training from scratch, or several base folders): nothing to rehearse
    # against, so batches are drawn from all images alike
    assert effective_base_share(plan_data([base], plant_weight=3.0), 0.75) is None
    for bad in (1.0, -0.1):
        with pytest.raises(RetrainError, match="--base-share"):
            effective_base_share(with_export, bad)
