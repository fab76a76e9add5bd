"""The statistics behind trusting the model: agreement, what-if, the evidence gate, the
threshold recommendation and the live audit test that demotes a line (design.md section 4).

Pure: arrays and counts in, frozen dataclasses out; no database, no clock. The queries that
turn labeled inspections into these inputs live in `inspect_app.agreement`; the decisions
that act on the results (raise, demote) live in `inspect_app.automation`.

* `intervals`: binomial bounds and `RateEstimate`, what every other module reports in.
* `figures`: the model against the human labels (confusion, kappa, rates).
* `gate`: what a policy would have automated (`what_if`) and whether that passes the gate.
* `recommendation`: the thresholds with the most coverage that pass, by fixed-sequence tests.
* `sequential`: the live audit test that demotes a line.

Conventions, so every figure means one thing everywhere:

* A confusion matrix has the human's label in the rows and the model's prediction in the
  columns. The human is the reference: the product measures the model against people.
* Every rate is a `RateEstimate`: its count, its denominator and a two-sided 95%
  Clopper-Pearson interval. Clopper-Pearson (exact, conservative) rather than Wilson, so the
  intervals shown to a supervisor and the one-sided bounds the gate uses come from the same
  binomial model and can never disagree about a count of zero.
* The gate's bounds are one-sided 95% Clopper-Pearson upper bounds: the largest rate under
  which seeing as few errors as we saw still has at least a 5% chance.

Callers import from here (`from inspect_app.evidence import check_gate`); the modules are
how the code is read, not a second way to import it.
"""

from inspect_app.evidence.figures import (
    AgreementFigures,
    BinaryConfusion,
    agreement_figures,
    cohen_kappa,
)
from inspect_app.evidence.gate import (
    FULL_AUTOMATION_CUT,
    GateResult,
    GateTargets,
    SideCheck,
    SideEvidence,
    WhatIf,
    automated_masks,
    check_gate,
    check_side,
    side_evidence,
    what_if,
)
from inspect_app.evidence.intervals import (
    CONFIDENCE,
    RateEstimate,
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_lower_array,
    clopper_pearson_upper,
    clopper_pearson_upper_array,
    labels_needed,
    rate_estimate,
    zero_error_sample_size,
)
from inspect_app.evidence.recommendation import (
    THRESHOLD_GRID,
    CurvePoint,
    Recommendation,
    fixed_sequence_walk,
    recommend_thresholds,
    side_counts,
)
from inspect_app.evidence.sequential import (
    DEMOTION_ALTERNATIVE_FACTOR,
    DEMOTION_FALSE_ALARM,
    AuditAlarm,
    audit_alarm,
    audit_log_likelihood_ratio,
)

__all__ = [
    "CONFIDENCE",
    "DEMOTION_ALTERNATIVE_FACTOR",
    "DEMOTION_FALSE_ALARM",
    "FULL_AUTOMATION_CUT",
    "THRESHOLD_GRID",
    "AgreementFigures",
    "AuditAlarm",
    "BinaryConfusion",
    "CurvePoint",
    "GateResult",
    "GateTargets",
    "RateEstimate",
    "Recommendation",
    "SideCheck",
    "SideEvidence",
    "WhatIf",
    "agreement_figures",
    "audit_alarm",
    "audit_log_likelihood_ratio",
    "automated_masks",
    "check_gate",
    "check_side",
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "clopper_pearson_lower_array",
    "clopper_pearson_upper",
    "clopper_pearson_upper_array",
    "cohen_kappa",
    "fixed_sequence_walk",
    "labels_needed",
    "rate_estimate",
    "recommend_thresholds",
    "side_counts",
    "side_evidence",
    "what_if",
    "zero_error_sample_size",
]
