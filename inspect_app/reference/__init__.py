"""Known-answer parts: inspectors measured against answers a supervisor verified.

- `accuracy`: the pure core: per-inspector accuracy (binary ok/defect and per class) with
  Clopper-Pearson intervals from `inspect_app.evidence.intervals`, and the flag rule.
- `serving`: reference parts mixed blind into the review queue (`review_queue` calls it) and
  the verdicts on them, kept apart from labels so they never change a decision or count as
  evidence for the gate, the agreement figures or a rollout.
- `service`: the supervisor's use cases (mark, list, remove, set a line's rate, accuracy,
  flags) that the API, the CLI and the review UI call.
"""
