"""A version's weighted evidence: exactly the gate's what-if when every part was labeled, and
never kinder than the raw count when audits stand for many parts."""

from __future__ import annotations

import numpy as np
import pytest

from inspect_app.domain import AutomationLevel
from inspect_app.evidence.gate import what_if
from inspect_app.rollout.evidence import VersionEvidence, weighted_what_if


def _evidence(p_ok: list[float], defect: list[bool], weight: list[float]) -> VersionEvidence:
    return VersionEvidence(
        model_version="v",
        inspection_ids=np.arange(len(p_ok), dtype=np.int64),
        p_ok=np.array(p_ok),
        human_defect=np.array(defect),
        weight=np.array(weight),
    )


@pytest.mark.parametrize("level", [AutomationLevel.PARTIAL, AutomationLevel.FULL])
def test_with_every_part_labeled_it_is_the_gates_what_if(level: AutomationLevel) -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 400)
    defect = rng.uniform(0, 1, 400) > p
    weighted = weighted_what_if(
        _evidence(list(p), list(defect), [1.0] * 400),
        level=level,
        pass_threshold=0.9,
        fail_threshold=0.9,
    )
    plain = what_if(p, defect, level=level, pass_threshold=0.9, fail_threshold=0.9)
    assert weighted.auto_pass == plain.auto_pass
    assert weighted.auto_fail == plain.auto_fail
    assert weighted.coverage == pytest.approx(plain.coverage)


def test_audited_parts_count_for_the_parts_they_stand_for_at_their_effective_size() -> None:
    # 10 audited auto-passes at a 10% audit rate (one escape) and 10 reviewed parts
    p = [0.99] * 10 + [0.5] * 10
    defect = [True] + [False] * 9 + [False] * 10
    weights = [10.0] * 10 + [1.0] * 10
    result = weighted_what_if(
        _evidence(p, defect, weights),
        level=AutomationLevel.PARTIAL,
        pass_threshold=0.98,
        fail_threshold=0.98,
    )
    side = result.auto_pass
    assert side.n == 10 and side.errors == 1  # equal weights on the side: the raw count
    assert side.rate == pytest.approx(0.1)
    assert result.coverage == pytest.approx(100 / 110)  # the auto side stands for 100 parts


def test_unequal_weights_shrink_the_effective_size_and_round_errors_up() -> None:
    p = [0.99] * 4
    defect = [True, False, False, False]
    result = weighted_what_if(
        _evidence(p, defect, [1.0, 1.0, 10.0, 10.0]),
        level=AutomationLevel.PARTIAL,
        pass_threshold=0.98,
        fail_threshold=0.98,
    )
    side = result.auto_pass
    assert side.n == 2  # (22 ** 2) / 202 = 2.4, rounded down
    assert side.errors == 1  # 2.4 * (1 / 22) = 0.1, rounded up
    assert side.rate == pytest.approx(1 / 22)
