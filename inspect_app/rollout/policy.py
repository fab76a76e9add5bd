"""Which version decides a part, and when a candidate may take more of them: pure functions.

Nothing here reads the database or the clock; the service passes in the deployment as it
stands and a uniform draw, so every rule is tested without a model or a server.

Arms: the line's champion and at most one candidate. Modes:

- ``none``: the champion decides everything.
- ``shadow``: the champion decides; the candidate also runs on a share of parts, hidden.
- ``canary``: the candidate decides ``share`` of parts (a step of ``steps``); a step advances
  on the candidate's blind-labeled evidence, never on time (`canary_verdict`).
- ``blue_green``: the candidate decides every part; the champion stays loaded for rollback.
- ``ab``: a fixed split, sticky by part serial (a hash), random for parts without one.
- ``bandit``: Thompson sampling between the two, with an exploration floor.

A quarantined candidate decides nothing (it still runs hidden, so evidence keeps coming).
In every mode where the candidate decides, the champion runs hidden beside it, so the two
are always compared on the same parts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from inspect_app.domain import AutomationLevel, LinePolicy
from inspect_app.evidence.gate import GateResult, GateTargets, check_gate, what_if
from inspect_app.evidence.sequential import DEMOTION_ALTERNATIVE_FACTOR, audit_alarm

DEFAULT_STEPS: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
DEFAULT_EXPLORATION = 0.10


class Mode(StrEnum):
    NONE = "none"
    SHADOW = "shadow"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"
    AB = "ab"
    BANDIT = "bandit"

    @property
    def candidate_decides(self) -> bool:
        """Modes in which the candidate takes line decisions (and so needs evidence first)."""
        return self in (Mode.CANARY, Mode.BLUE_GREEN, Mode.AB, Mode.BANDIT)


class Arm(StrEnum):
    CHAMPION = "champion"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class DeploymentState:
    """A line's deployment as the pipeline reads it (a snapshot: no database behind it)."""

    line_id: str
    champion: str
    candidate: str | None = None
    mode: Mode = Mode.NONE
    share: float = 0.0  # canary step or A/B split: the candidate's share of decisions
    shadow_share: float = 1.0
    candidate_audit_rate: float = 0.10
    quarantined: bool = False
    revision: int = 0  # 0: no deployment row, the service's configured model
    # bandit: P(the candidate is chosen), from the posteriors when the snapshot was taken
    bandit_candidate_p: float | None = None
    # (pass, fail) the candidate decides its parts at (None on a side: never); None: the
    # line's thresholds. Chosen on its own evidence when it left shadow (`deployments`).
    candidate_thresholds: tuple[float | None, float | None] | None = None

    @property
    def versions(self) -> tuple[str, ...]:
        """What must be loaded for this line."""
        return (self.champion,) if self.candidate is None else (self.champion, self.candidate)

    def candidate_share(self) -> float:
        """The probability that the candidate decides a part without a serial."""
        if self.candidate is None or self.quarantined or not self.mode.candidate_decides:
            return 0.0
        if self.mode is Mode.BLUE_GREEN:
            return 1.0
        if self.mode is Mode.BANDIT:
            return self.bandit_candidate_p if self.bandit_candidate_p is not None else 0.5
        return self.share


@dataclass(frozen=True)
class Assignment:
    decider: str  # the version whose answer routes the part
    arm: Arm
    probability: float  # of this arm being the decider, for unbiased offline estimates
    hidden: tuple[str, ...]  # versions that also run, never deciding


def candidate_policy(policy: LinePolicy, state: DeploymentState) -> LinePolicy:
    """The line's policy for a part the candidate decides: audited at least at the
    candidate's rate, so its evidence comes faster, and routed at its own thresholds when it
    has them (chosen on its own evidence when it left shadow). The pipeline and the
    rehearsal both route by it."""
    policy = replace(policy, audit_rate=max(policy.audit_rate, state.candidate_audit_rate))
    if state.candidate_thresholds is None:
        return policy
    pass_threshold, fail_threshold = state.candidate_thresholds
    return replace(policy, pass_threshold=pass_threshold, fail_threshold=fail_threshold)


def serial_draw(line_id: str, part_serial: str) -> float:
    """A uniform number fixed by the part: the same serial lands in the same A/B arm on every
    process and after every restart (no state to share)."""
    digest = hashlib.sha256(f"{line_id}\x00{part_serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(
    state: DeploymentState,
    *,
    draw: float,
    shadow_draw: float,
    part_serial: str | None = None,
) -> Assignment:
    """The arm that decides this part. `draw` and `shadow_draw` are uniform on [0, 1)."""
    p = state.candidate_share()
    if state.mode is Mode.AB and part_serial:
        draw = serial_draw(state.line_id, part_serial)
    if state.candidate is not None and p > 0.0 and draw < p:
        return Assignment(state.candidate, Arm.CANDIDATE, p, hidden=(state.champion,))
    hidden: tuple[str, ...] = ()
    if state.candidate is not None and (
        p > 0.0 or state.quarantined or shadow_draw < state.shadow_share
    ):
        hidden = (state.candidate,)
    return Assignment(state.champion, Arm.CHAMPION, 1.0 - p, hidden=hidden)


# --------------------------------------------------------------------------------------------
# Thompson sampling


def prob_better(a_successes: int, a_failures: int, b_successes: int, b_failures: int) -> float:
    """P(theta_b > theta_a) for independent Beta(1 + s, 1 + f) posteriors, by quadrature.

    Thompson sampling picks b exactly this often, so using it as the assignment probability
    both runs the bandit and records the propensity each decision had."""
    # scipy is imported at the first call, not with the module: every `serve` and CLI
    # command imports this module, and scipy.integrate costs 1.2 s of each start.
    from scipy import integrate
    from scipy.special import betainc, betaln

    a1, b1 = 1 + a_successes, 1 + a_failures
    a2, b2 = 1 + b_successes, 1 + b_failures
    log_norm = float(betaln(a2, b2))

    # b's density times a's CDF, from scipy.special directly: the same integrand as the
    # frozen distributions' pdf and cdf, ~100x cheaper (every process's snapshot refresh
    # computes this on each reward). quad never evaluates the endpoints, so log(x) is safe.
    def integrand(x: float) -> float:
        log_pdf = (a2 - 1) * math.log(x) + (b2 - 1) * math.log1p(-x) - log_norm
        return math.exp(log_pdf) * float(betainc(a1, b1, x))

    value, _ = integrate.quad(integrand, 0.0, 1.0, limit=200)
    return float(min(max(value, 0.0), 1.0))


def bandit_probability(
    champion: tuple[int, int], candidate: tuple[int, int], exploration: float
) -> float:
    """P(the candidate decides): the floor shared between the two arms, the rest by Thompson."""
    if not 0.0 <= exploration <= 1.0:
        raise ValueError(f"exploration must lie in [0, 1], got {exploration}")
    better = prob_better(champion[0], champion[1], candidate[0], candidate[1])
    return exploration / 2.0 + (1.0 - exploration) * better


# --------------------------------------------------------------------------------------------
# Canary steps


StepOutcome = Literal["pass", "fail", "hold"]


@dataclass(frozen=True)
class StepVerdict:
    outcome: StepOutcome
    reason: str
    gate: GateResult
    labels: int  # blind labels of parts the candidate decided in this step
    min_labels: int


def canary_verdict(
    p_ok: ArrayLike,
    human_defect: ArrayLike,
    *,
    level: AutomationLevel,
    pass_threshold: float | None,
    fail_threshold: float | None,
    targets: GateTargets,
    min_labels: int,
) -> StepVerdict:
    """Pass, fail or hold one canary step on the candidate's blind labels in it.

    - pass: every side the policy automates has `min_labels` and its upper bound within the
      target (the evidence gate at the step's label count);
    - fail: a side's sequential test (`evidence.sequential.audit_alarm`, as the line's live
      audits use) says its rate is clearly above target, however often it is checked;
    - hold: anything else, in particular too few labels (never pass or fail on no data).

    Below partial the line automates nothing, so the step is judged as the line would be at
    partial with its thresholds: what the candidate would do once it decides.
    """
    judged = level if level.needs_evidence else AutomationLevel.PARTIAL
    result = check_gate(
        what_if(
            p_ok,
            human_defect,
            level=judged,
            pass_threshold=pass_threshold,
            fail_threshold=fail_threshold,
        ),
        GateTargets(
            max_escape_rate=targets.max_escape_rate,
            max_false_reject_rate=targets.max_false_reject_rate,
            min_labels=min_labels,
            confidence=targets.confidence,
        ),
    )
    n = result.what_if.n_labeled
    # The live audit test's sequential rule, not a fixed-level bound: the verdict is taken
    # after every label, and a fixed 95% bound looked at that often fails good candidates
    # (rehearsed: a candidate at half its target was rolled back in 25-35% of canaries).
    alarms = [
        audit_alarm(check.figure, check.errors, check.n, check.target)
        for check in (result.escape, result.false_reject)
        # (a line's targets are at most 25%; the test's alternative is 3x the target)
        if check.automated and check.n > 0 and check.target * DEMOTION_ALTERNATIVE_FACTOR < 1
    ]
    worse = [
        f"its {a.figure.replace('_', ' ')} ({a.errors} of {a.n}, "
        f"{a.errors / a.n:.2%}) is clearly above its target of {a.target:.2%} "
        f"(sequential test: log-likelihood ratio {a.log_likelihood_ratio:.1f} "
        f">= {a.alarm_at:.1f})"
        for a in alarms
        if a.alarm
    ]
    if worse:
        return StepVerdict("fail", "The candidate fails: " + "; ".join(worse) + ".", result, n,
                           min_labels)  # fmt: skip
    if result.passed:
        return StepVerdict("pass", result.reason, result, n, min_labels)
    return StepVerdict(
        "hold", f"Holding on {n} of {min_labels} labels: {result.reason}", result, n, min_labels
    )


# --------------------------------------------------------------------------------------------
# Paired comparison on the same parts


@dataclass(frozen=True)
class PairedComparison:
    n: int  # parts both versions ran on, with a blind label
    champion_correct: int
    candidate_correct: int
    champion_only: int  # discordant: the champion right, the candidate wrong
    candidate_only: int  # discordant: the candidate right, the champion wrong
    p_value: float  # McNemar's exact test (a binomial test on the discordant pairs)

    @property
    def champion_accuracy(self) -> float | None:
        return self.champion_correct / self.n if self.n else None

    @property
    def candidate_accuracy(self) -> float | None:
        return self.candidate_correct / self.n if self.n else None


def paired_comparison(
    champion_correct: Sequence[bool] | ArrayLike, candidate_correct: Sequence[bool] | ArrayLike
) -> PairedComparison:
    """McNemar's exact test: only the parts where exactly one version was right count."""
    a = np.asarray(champion_correct, dtype=bool)
    b = np.asarray(candidate_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("the two versions must be judged on the same parts")
    champion_only = int((a & ~b).sum())
    candidate_only = int((~a & b).sum())
    discordant = champion_only + candidate_only
    from scipy.stats import binomtest  # at the first call, as in prob_better

    p_value = 1.0 if discordant == 0 else float(binomtest(candidate_only, discordant).pvalue)
    return PairedComparison(
        n=int(a.size),
        champion_correct=int(a.sum()),
        candidate_correct=int(b.sum()),
        champion_only=champion_only,
        candidate_only=candidate_only,
        p_value=p_value,
    )
