"""Drift tests: is the line still showing the model what it was checked on (design.md section 10)?

Pure: arrays in, frozen reports out; no database, no clock, no model. The service keeps the
windows (`inspect_app.monitoring.windows`), runs these tests on them and turns the reports into
alarms; the reference they compare against is the model version's reference profile.

Four questions, one test each:

* `input_drift`: have the image metrics (brightness, contrast, sharpness, clipped share, colour
  means) moved? A two-sample Kolmogorov-Smirnov test per metric, Benjamini-Hochberg across the
  metrics. A dimmed lamp moves brightness and contrast; a lens out of focus moves sharpness.
* `embedding_drift`: do the images look different to the model, in ways no single metric shows?
  A classifier two-sample test (adversarial validation) with a permutation p-value, and the
  recent images that look least like the reference, for a person to look at.
* `prediction_drift`: does the model answer differently? The predicted defect rate against the
  reference's (exact binomial test) and the histogram of P(defect) (chi-square, two samples).
* `DisagreementMonitor`: is the model wrong more often? A Bernoulli CUSUM on the stream of
  blind-audit (or review) disagreements, the concept-drift test: only labels can show that the
  same-looking parts now deserve different answers.

Every p-value here is valid at its stated level on a window of any size the test accepts, and
the false-positive rates and powers are measured, not assumed: `bench/drift_tests.py` prints
them, and the tests check the false-positive rates over seeded runs.

A window of parts is tested as an independent sample. Parts that arrive in runs (a batch of one
colour, a shift's lamp warming up) are positively dependent, and every test here then fires
more often than its alpha: the reference should span the variation a line normally shows, and
the alarm layer's hold time absorbs the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Imports: scipy.stats and scikit-learn are imported by the functions that use them, not
# here. This module is imported by every `serve` and by the CLI, and those two libraries add
# about 2.5 s to each start at load ~5 (`python -X importtime`). Most CLI commands never test
# drift. A service tests drift only after a line's first window of parts.

# The default levels, set against the scenario's budget of one false alarm per 20,000 clean
# parts for the whole system, with the figures bench/drift_tests.py measured:
#
# * Input metrics are cheap to test (~5 ms for eight metrics), so the service can test the last
#   50 parts every 10 parts: 2,000 overlapping tests per 20,000 parts. At 1e-4 a test, clean
#   streams of real synthetic photos showed 0.1 false alarms per 20,000 parts (1 in 200,000;
#   0.8 at 1e-3), and a 40% lighting drop fired within 39 parts (median 29), a 9 px blur
#   within 27 (median 21).
# * The embedding and prediction tests need a larger window and, for the embedding, permutations
#   (999 allow p = 0.001): tested once per 200-part window they run 100 times per 20,000 parts,
#   so 1e-3 a test spends about 0.1 false alarms per 20,000 parts on each.
INPUT_ALPHA = 1e-4
WINDOW_ALPHA = 1e-3

# The quantile levels a reference profile stores per metric: every percentile, min and max
# included. Linear interpolation between percentiles keeps the reference's CDF within a
# fraction of a percent of the sample's, far below the KS distances a window can resolve.
PERCENTILES: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())

# A quantile table stands for at most this many reference images in the test. Past that the
# test's null distribution hardly changes, and a smaller stand-in only makes it conservative.
MAX_REFERENCE_POINTS = 10_000


# --------------------------------------------------------------------------------------------
# Input metrics


@dataclass(frozen=True, eq=False)
class QuantileTable:
    """One metric of a reference profile, stored as quantiles rather than images' values.

    `levels` are increasing probabilities in [0, 1] (0 and 1 give the minimum and maximum),
    `values` the metric's quantiles there (non-decreasing), and `n` the number of reference
    images they summarise: the test needs it, because a reference of 300 images is itself
    uncertain and a test that took its quantiles as exact would fire too often on clean data.
    """

    levels: NDArray[np.float64]
    values: NDArray[np.float64]
    n: int

    def __post_init__(self) -> None:
        levels = np.asarray(self.levels, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if levels.ndim != 1 or levels.shape != values.shape or levels.size < 2:
            raise ValueError("a quantile table needs matching 1-D levels and values, at least 2")
        if np.any(np.diff(levels) <= 0) or levels[0] < 0.0 or levels[-1] > 1.0:
            raise ValueError("quantile levels must increase strictly within [0, 1]")
        if not np.all(np.isfinite(values)) or np.any(np.diff(values) < 0):
            raise ValueError("quantile values must be finite and non-decreasing")
        if self.n < 1:
            raise ValueError(f"a quantile table summarises at least one image, got n={self.n}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_sample(cls, sample: ArrayLike, levels: Sequence[float] = PERCENTILES) -> QuantileTable:
        x = _finite(sample)
        if x.size == 0:
            raise ValueError("cannot summarise an empty sample")
        return cls(np.asarray(levels), np.quantile(x, levels), int(x.size))

    def quantile(self, p: ArrayLike) -> NDArray[np.float64]:
        """The reference's quantile function, linear between the stored levels."""
        return np.interp(p, self.levels, self.values)

    def stand_in_sample(self) -> NDArray[np.float64]:
        """The n values that have these quantiles: the quantile function at (i - 1/2) / n.

        The test compares a window against this sample with the two-sample KS test, rather
        than against the interpolated CDF with the one-sample test, for two reasons: the
        two-sample null distribution charges the reference's own sampling noise (n images, not
        a known population), and point masses (clipped share is exactly 0 on most images) are
        handled correctly, where a one-sample test against a CDF with a jump is not. Measured
        (bench/drift_tests.py, 800 reference photos): at alpha 0.05 `ks_1samp` against the
        interpolated CDF fired on 5-10% of clean windows of 25-200 parts for the continuous
        metrics and on all of them for the clipped shares; this stand-in, 3.6-4.3% per metric
        over all eight.
        """
        m = min(self.n, MAX_REFERENCE_POINTS)
        return self.quantile((np.arange(m) + 0.5) / m)


ReferenceMetric = QuantileTable | ArrayLike


@dataclass(frozen=True)
class MetricDrift:
    """One metric's test. `shift` is the window's median minus the reference's."""

    metric: str
    n_reference: int
    n_recent: int
    statistic: float  # KS distance: the largest gap between the two CDFs, 0..1
    p_value: float
    adjusted_p: float  # Benjamini-Hochberg across the report's metrics
    reference_median: float
    recent_median: float
    shift: float
    relative_shift: float | None  # shift / |reference median|; None when that median is 0
    direction: Literal["up", "down", "none"]
    drifted: bool  # adjusted_p <= alpha


@dataclass(frozen=True)
class InputDriftReport:
    alpha: float
    metrics: tuple[MetricDrift, ...]  # in the order of the window's metrics
    untested: tuple[str, ...]  # metrics with too few finite values in the window

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(m.metric for m in self.metrics if m.drifted)

    @property
    def any_drift(self) -> bool:
        return any(m.drifted for m in self.metrics)

    def metric(self, name: str) -> MetricDrift:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)


def _finite(values: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def input_drift(
    reference: Mapping[str, ReferenceMetric],
    recent: Mapping[str, ArrayLike],
    *,
    alpha: float = INPUT_ALPHA,
    min_recent: int = 10,
) -> InputDriftReport:
    """Test every metric of the window against the reference, with the false-discovery rate
    across metrics held at `alpha`.

    Each reference metric is either the reference images' values (any order) or a
    `QuantileTable`; both run the same two-sample KS test (`scipy.stats.ks_2samp`, exact p for
    the sizes a line uses), the table through its stand-in sample. KS because it needs no
    model of the metric's shape and sees a shift, a spread or a new tail alike; it is most
    sensitive in the middle of the distribution, which is where a lighting drop moves all the
    parts at once.

    Benjamini-Hochberg (`scipy.stats.false_discovery_control`) rather than a test per metric at
    alpha, because the metrics are several looks at one window: with eight metrics at alpha
    each, a clean window would fire up to eight times as often as the alpha says. When nothing has
    drifted BH's false-alarm chance is at most alpha, as Bonferroni's is; when a lamp moves
    three metrics at once it is more powerful. Brightness and contrast are positively
    correlated, which BH tolerates (PRDS).

    Measured on the eight metrics of rendered photos against 800 reference photos (1,000
    clean windows per size, bench/drift_tests.py): any metric fired on 2.0-3.7% of clean
    windows of 25-200 parts at alpha 0.05 and on 0-0.2% at 0.001, the same with the reference
    as percentiles; a 40% lighting drop and a 9 px blur were caught in every window of 25.

    Metrics with fewer than `min_recent` finite values in the window are listed as untested,
    not failed: a handful of parts cannot show a drift, and a metric missing from some images
    (NaN) should not stop the others being tested. Every metric of the window must be in the
    reference.
    """
    # imported here: see the note on imports at the top
    from scipy.stats import false_discovery_control, ks_2samp

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    missing = [name for name in recent if name not in reference]
    if missing:
        raise ValueError(f"no reference for metric(s) {missing}; known: {sorted(reference)}")
    tested: list[tuple[str, NDArray[np.float64], NDArray[np.float64], float, int]] = []
    untested: list[str] = []
    for name, values in recent.items():
        window = _finite(values)
        if window.size < min_recent:
            untested.append(name)
            continue
        ref = reference[name]
        if isinstance(ref, QuantileTable):
            sample, median, n_ref = ref.stand_in_sample(), float(ref.quantile(0.5)), ref.n
        else:
            sample = _finite(ref)
            if sample.size == 0:
                raise ValueError(f"the reference for {name!r} has no finite values")
            median, n_ref = float(np.median(sample)), int(sample.size)
        tested.append((name, window, sample, median, n_ref))

    results = [ks_2samp(w, s) for _, w, s, _, _ in tested]
    p_values = [float(r.pvalue) for r in results]
    statistics = [float(r.statistic) for r in results]
    adjusted = false_discovery_control(p_values, method="bh") if p_values else []
    metrics = []
    for (name, window, _, ref_median, n_ref), stat, p, adj in zip(
        tested, statistics, p_values, adjusted, strict=True
    ):
        recent_median = float(np.median(window))
        shift = recent_median - ref_median
        metrics.append(
            MetricDrift(
                metric=name,
                n_reference=n_ref,
                n_recent=int(window.size),
                statistic=stat,
                p_value=p,
                adjusted_p=float(adj),
                reference_median=ref_median,
                recent_median=recent_median,
                shift=shift,
                relative_shift=shift / abs(ref_median) if ref_median else None,
                direction="up" if shift > 0 else "down" if shift < 0 else "none",
                drifted=bool(adj <= alpha),
            )
        )
    return InputDriftReport(alpha=alpha, metrics=tuple(metrics), untested=tuple(untested))


# --------------------------------------------------------------------------------------------
# Embeddings


@dataclass(frozen=True, eq=False)
class EmbeddingDriftReport:
    """Can a classifier tell the window's embeddings from the reference's, better than chance?

    `auc` is the classifier's out-of-fold ROC AUC at telling a recent image from a reference
    one: 0.5 when they are alike, 1.0 when every recent image is recognisable. Chance alone
    takes it far above 0.5 on small windows (95th percentile 0.62 for 25 against 800, 0.55 for
    200): `null_auc_95` says where noise ends at this window's size, and `p_value` is what to
    act on.
    """

    n_reference: int
    n_recent: int
    n_features: int  # what the classifier saw: principal components (and their squares)
    auc: float
    p_value: float  # (1 + permutations with AUC >= auc) / (1 + permutations)
    n_permutations: int
    null_auc_95: float  # 95th percentile of the AUC with the labels permuted
    alpha: float
    drifted: bool  # p_value <= alpha
    recent_scores: NDArray[np.float64]  # (M,) out-of-fold score of each recent image
    most_responsible: NDArray[np.intp]  # indices into `recent`, least like the reference first


def _auc_per_column(
    scores: NDArray[np.float64], labels: NDArray[np.float64]
) -> NDArray[np.float64]:
    """ROC AUC of every column of scores against the same column of 0/1 labels.

    The Mann-Whitney identity, AUC = (rank sum of the positives - n1 (n1 + 1) / 2) / (n1 n0),
    with mid-ranks for ties: what `sklearn.metrics.roc_auc_score` returns, for a thousand label
    vectors in one vectorised pass instead of a thousand calls.
    """
    from scipy.stats import rankdata  # imported here: see the note at the top

    n1 = labels[:, 0].sum()
    n0 = labels.shape[0] - n1
    rank_sums = (rankdata(scores, axis=0) * labels).sum(axis=0)
    return (rank_sums - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)


def embedding_drift(
    reference: ArrayLike,
    recent: ArrayLike,
    *,
    alpha: float = WINDOW_ALPHA,
    n_permutations: int = 999,
    n_components: int = 16,
    quadratic: bool = True,
    n_folds: int = 5,
    ridge_alpha: float = 10.0,
    n_responsible: int = 10,
    seed: int = 0,
) -> EmbeddingDriftReport:
    """A classifier two-sample test (adversarial validation) of recent (M, D) embeddings against
    reference (N, D) ones, with a permutation p-value rather than a fixed AUC threshold.

    The steps, and what each trades:

    * The pooled embeddings are reduced to `n_components` principal components and
      standardised. Pooled, not reference-only, so that a direction in which only the recent
      images vary (something new in the picture) is kept; and since no label is used the
      permutation test stays exact. Fewer components: more power against a drift along the
      main directions of variation, blind to one outside them.
    * With `quadratic`, the squares of the components join them, so that a change of spread
      (a blur narrows what the network sees) is visible to a linear rule as well as a change of
      mean; it costs some power against a pure shift of the mean (twice the features).
      Measured on Gaussian embeddings (D = 64, 800 reference, alpha 0.01): spread x0.8 caught
      in 81% of windows of 25 with the squares and never without; a mean shift of 0.2 sd in
      every coordinate caught in 29% / 63% / 99% of windows of 25 / 50 / 100 with the squares,
      41% / 73% / 100% without.
    * The classifier is scikit-learn's `Ridge` on the 0/1 labels (a least-squares linear
      discriminant), scored out of fold by shuffled k-fold. Not logistic regression, because a
      ridge fit is linear in the labels: one fit per fold serves the true labels and all
      `n_permutations` permuted ones at once (a multi-target fit shares one factorisation),
      where logistic regression would need a thousand fits per fold, minutes not a second. For
      a shift of the mean under a shared covariance, the discriminant direction is the best
      linear rule anyway, and the AUC only needs the ranking. `ridge_alpha` shrinks the
      discriminant: more is steadier on windows of tens of parts, less is sharper on large ones.
    * The folds are drawn from the image positions, not stratified by label, so they do not
      depend on the labels and permuting the labels is an exact test of "the window comes from
      the reference's distribution". The p-value counts the permuted AUCs at least as large as
      the observed one, plus one (the observed labels are one of the permutations), so it is
      never below 1 / (n_permutations + 1): 999 permutations can show p = 0.001.

    `most_responsible` are the recent images the classifier found least like the reference
    (highest out-of-fold score), for a person to look at; they mean something when the test
    fired, and are just the window's oddest images when it did not. With 10 of 100 recent
    embeddings moved by 1 sd, 75% of the 10 most responsible were moved ones.

    Cost: 0.2 s of one core at the defaults for 200 recent against 800 reference embeddings of
    D = 300; memory about 3 x (N + M) x (n_permutations + 1) floats (24 MB there).
    """
    # imported here: see the note on imports at the top
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recent, dtype=np.float64)
    if ref.ndim != 2 or rec.ndim != 2 or ref.shape[1] != rec.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D), got {ref.shape} and {rec.shape}")
    if min(len(ref), len(rec)) < n_folds:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds} embeddings on each side,"
            f" got {len(ref)} reference and {len(rec)} recent"
        )
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(rec))):
        raise ValueError("embeddings must be finite")
    if n_permutations < 1:
        raise ValueError("the permutation test needs at least one permutation")
    n0, n1 = len(ref), len(rec)
    pooled = np.vstack([ref, rec])
    y = np.concatenate([np.zeros(n0), np.ones(n1)])

    k = min(n_components, pooled.shape[1], len(pooled) - 1)
    if k < pooled.shape[1]:
        pooled = PCA(n_components=k, random_state=seed).fit_transform(pooled)
    features = StandardScaler().fit_transform(pooled)
    if quadratic:
        features = StandardScaler().fit_transform(np.hstack([features, features**2]))

    rng = np.random.default_rng(seed)
    labels = np.empty((len(y), n_permutations + 1))  # column 0: the true labels
    labels[:, 0] = y
    labels[:, 1:] = rng.permuted(np.tile(y, (n_permutations, 1)), axis=1).T
    scores = np.empty_like(labels)
    for train, test in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(features):
        model = Ridge(alpha=ridge_alpha).fit(features[train], labels[train])
        scores[test] = model.predict(features[test])

    aucs = _auc_per_column(scores, labels)
    observed, permuted = float(aucs[0]), aucs[1:]
    p_value = (1.0 + float(np.sum(permuted >= observed))) / (n_permutations + 1.0)
    recent_scores = scores[n0:, 0]
    return EmbeddingDriftReport(
        n_reference=n0,
        n_recent=n1,
        n_features=int(features.shape[1]),
        auc=observed,
        p_value=p_value,
        n_permutations=n_permutations,
        null_auc_95=float(np.quantile(permuted, 0.95)),
        alpha=alpha,
        drifted=p_value <= alpha,
        recent_scores=recent_scores,
        most_responsible=np.argsort(-recent_scores, kind="stable")[:n_responsible],
    )


# --------------------------------------------------------------------------------------------
# Predictions

# Bin edges of the P(defect) histogram a reference profile stores. Fine near 0 and 1, where the
# line's thresholds live (auto-pass at P(ok) >= 0.95 is P(defect) <= 0.05): a model that grows
# less sure of good parts shows there first, long before its defect rate moves.
CONFIDENCE_BINS: tuple[float, ...] = (
    0.0,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    1.0,
)

# A P(defect) above this is a predicted defect: the same cut routing applies at `full`
# automation (P(ok) >= 0.5 passes).
DEFECT_CUT = 0.5


def confidence_histogram(
    p_defect: ArrayLike, bin_edges: Sequence[float] = CONFIDENCE_BINS
) -> NDArray[np.int64]:
    """Counts of P(defect) per bin, the last bin closed: what a reference profile stores."""
    p = np.asarray(p_defect, dtype=np.float64).ravel()
    if np.any((p < 0.0) | (p > 1.0)) or np.any(np.isnan(p)):
        raise ValueError("P(defect) must lie in [0, 1]")
    counts, _ = np.histogram(p, bins=np.asarray(bin_edges, dtype=np.float64))
    return counts.astype(np.int64)


def defect_rate(p_defect: ArrayLike) -> float:
    """The share of parts the model calls defective (P(defect) > `DEFECT_CUT`)."""
    p = np.asarray(p_defect, dtype=np.float64).ravel()
    return float(np.mean(p > DEFECT_CUT)) if p.size else math.nan


@dataclass(frozen=True, eq=False)
class PredictionDriftReport:
    """The window's predictions against the reference's. The defect rate's interval, where a
    person needs one, is `inspect_app.evidence.rate_estimate(defects, n_recent)`: one interval
    for every rate the product shows."""

    n_recent: int
    defects: int  # recent parts with P(defect) > DEFECT_CUT
    defect_rate: float
    reference_defect_rate: float
    defect_rate_p: float  # exact binomial test, two-sided
    histogram_edges: NDArray[np.float64]  # the bins after merging sparse ones
    histogram_recent: NDArray[np.int64]  # recent counts in the merged bins
    histogram_expected: NDArray[np.float64]  # what the reference's shares predict for them
    histogram_statistic: float  # chi-square; 0 when too few parts to test (one merged bin)
    histogram_p: float  # 1.0 when not tested
    adjusted_p: tuple[float, float]  # (defect rate, histogram), Benjamini-Hochberg
    alpha: float

    @property
    def defect_rate_drifted(self) -> bool:
        return self.adjusted_p[0] <= self.alpha

    @property
    def histogram_drifted(self) -> bool:
        return self.adjusted_p[1] <= self.alpha

    @property
    def drifted(self) -> bool:
        return self.defect_rate_drifted or self.histogram_drifted


def _merge_sparse_bins(expected: NDArray[np.float64], min_expected: float) -> list[list[int]]:
    """Groups of adjacent bins, left to right, each expecting at least `min_expected` parts
    (a short last group joins the one before): the chi-square approximation's condition."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for i, e in enumerate(expected):
        current.append(i)
        total += e
        if total >= min_expected:
            groups.append(current)
            current, total = [], 0.0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def prediction_drift(
    reference_defect_rate: float,
    reference_histogram: ArrayLike,
    recent_p_defect: ArrayLike,
    bin_edges: Sequence[float] = CONFIDENCE_BINS,
    *,
    alpha: float = WINDOW_ALPHA,
    min_expected: float = 5.0,
) -> PredictionDriftReport:
    """Does the model answer this window as it answered the reference?

    * The defect rate: `scipy.stats.binomtest`, exact and two-sided (fewer defects can mean
      a model gone blind as surely as more can mean a lamp gone dark), with the reference rate
      taken as known. That is right for a rate measured on thousands of parts and slightly
      liberal for one measured on a few hundred.
    * The histogram of P(defect) (`reference_histogram` counts per bin of `bin_edges`, as
      `confidence_histogram` makes them): a chi-square test of homogeneity on the 2 x bins
      table (`scipy.stats.chi2_contingency`), the reference's counts as counts. A two-sample
      test rather than goodness of fit against the reference's shares, because a reference of
      a few hundred parts is uncertain too and goodness of fit would not charge for it. Sparse
      bins are merged with their neighbours until the window expects `min_expected` parts in
      each (so every merged bin holds reference parts), so a window of 25 is tested on a few
      coarse bins and a larger one on finer bins; a window too small for two bins is not
      tested (p = 1).

    `drifted` is either test at `alpha` after Benjamini-Hochberg over the two.

    Measured (bench/drift_tests.py, a reference of 2,000 parts at 5% defects, 2,000 clean
    windows per size): fired on 3.2-4.8% of clean windows of 25-200 parts at alpha 0.05 and
    0.1-0.2% at 0.001. At 0.001 and 200 parts: a defect rate of 15% caught in 93% of windows;
    good parts grown less sure (P(defect) ~ Beta(0.9, 40) instead of Beta(0.6, 40)), with the
    rate unchanged, in 84%, all by the histogram.
    """
    # imported here: see the note on imports at the top
    from scipy.stats import binomtest, chi2_contingency, false_discovery_control

    if not 0.0 <= reference_defect_rate <= 1.0:
        raise ValueError(
            f"the reference defect rate must lie in [0, 1], got {reference_defect_rate}"
        )
    edges = np.asarray(bin_edges, dtype=np.float64)
    ref_counts = np.asarray(reference_histogram, dtype=np.float64).ravel()
    if ref_counts.size != edges.size - 1:
        raise ValueError(f"{ref_counts.size} reference counts for {edges.size - 1} bins")
    if np.any(ref_counts < 0) or ref_counts.sum() <= 0:
        raise ValueError("reference counts must be non-negative and not all zero")
    recent_counts = confidence_histogram(recent_p_defect, edges)
    p = np.asarray(recent_p_defect, dtype=np.float64).ravel()
    n = int(p.size)
    if n == 0:
        raise ValueError("the window holds no predictions")

    defects = int(np.sum(p > DEFECT_CUT))
    rate_test = binomtest(defects, n, reference_defect_rate, alternative="two-sided")

    # Merged on what the reference predicts for a window of n, never on the window's own
    # counts, so which bins are tested does not depend on the data being tested.
    expected = n * ref_counts / ref_counts.sum()
    groups = _merge_sparse_bins(expected, min_expected)
    merged_recent = np.array([recent_counts[g].sum() for g in groups], dtype=np.int64)
    merged_ref = np.array([ref_counts[g].sum() for g in groups])
    merged_edges = np.array([edges[g[0]] for g in groups] + [edges[-1]])
    if len(groups) >= 2:
        result = chi2_contingency(np.vstack([merged_ref, merged_recent]), correction=False)
        hist_stat, hist_p = float(result.statistic), float(result.pvalue)
    else:
        hist_stat, hist_p = 0.0, 1.0
    adjusted = false_discovery_control([float(rate_test.pvalue), hist_p], method="bh")
    return PredictionDriftReport(
        n_recent=n,
        defects=defects,
        defect_rate=defects / n,
        reference_defect_rate=float(reference_defect_rate),
        defect_rate_p=float(rate_test.pvalue),
        histogram_edges=merged_edges,
        histogram_recent=merged_recent,
        histogram_expected=np.array([expected[g].sum() for g in groups]),
        histogram_statistic=hist_stat,
        histogram_p=hist_p,
        adjusted_p=(float(adjusted[0]), float(adjusted[1])),
        alpha=alpha,
    )


# --------------------------------------------------------------------------------------------
# Concept drift: the disagreement stream


class DisagreementMonitor:
    """Page's CUSUM on a stream of disagreements (model against a blind human label).

    Feed it one `update(disagreed)` per labelled part and read `drift_detected`. The statistic
    is the log-likelihood ratio of "the model is wrong at `factor` x its reference rate" against
    "at its reference rate", summed over the stream and floored at zero: every agreement takes
    off a little, every disagreement adds log(factor) less a little, and it fires when the sum
    reaches log(`false_alarm_every`). After firing it starts afresh on the next update, as
    river's detectors do, so a drift that persists fires again.

    Why this test: it is the live audit test of `inspect_app.evidence.audit_alarm` (Wald's SPRT
    of the same two rates) restarted whenever it falls to zero. The SPRT bounds the chance of
    ever firing over an era, but after a long clean run it sits far below zero and a later
    deterioration needs ever more labels to show; the CUSUM is always at most one threshold
    away from firing, whatever came before, which is what a monitor running for months needs.
    Its false alarms are bounded per observation instead: the mean run between false alarms at
    the reference rate is at least `false_alarm_every` (Lorden 1971: each restart is an SPRT
    that fires with probability at most 1 / false_alarm_every), and on Bernoulli streams the
    jumps overshoot the threshold, so the measured runs are longer still.

    Measured at the defaults on simulated streams at a 1% reference rate (bench/drift_tests.py;
    a jump after 5,000 clean observations, 100 runs): no false alarm in 2,000,000 clean
    observations; median delay 599 / 216 / 96 observations after a jump to 3% / 5% / 10%
    (90th percentile 1,185 / 368 / 148). On the same streams river's ADWIN (defaults, also no
    false alarm) took 1,688 / 408 / 152; DDM raised 0.87 false alarms per 10,000 observations;
    HDDM_A and Page-Hinkley missed or lagged (3% missed 99% and 25% of the time); the era-long
    SPRT of the live audit test took 3,825 / 1,308 / 532. So river is not a dependency.

    Parameters and what they trade:

    * `reference_rate`: the disagreement rate the model showed when it was trusted (its
      audits' rate in the era it was raised), for one stream. Blind audits and reviews of
      uncertain parts disagree at very different rates: give each stream its own monitor.
    * `factor`: the deterioration the test is tuned for. A rate of `factor` x reference is
      caught in about log(false_alarm_every) / KL observations (the mean log-likelihood ratio
      per observation at that rate); any rate above roughly (factor - 1) / ln(factor) x
      reference is caught eventually; lower ones are tolerated. Larger: faster on big jumps,
      blind to small ones.
    * `false_alarm_every`: the least mean number of observations between false alarms at the
      reference rate. Longer: fewer false alarms, each detection later by log(10) / KL
      observations per factor of ten.

    State: a few numbers, never the stream.
    """

    def __init__(
        self,
        reference_rate: float,
        *,
        factor: float = 3.0,
        false_alarm_every: float = 10_000.0,
    ) -> None:
        if factor <= 1.0:
            raise ValueError(f"the alternative must be a rate above the reference, factor={factor}")
        if not 0.0 < reference_rate < 1.0 / factor:
            raise ValueError(f"reference rate {reference_rate} must lie in (0, 1/{factor})")
        if false_alarm_every <= 1.0:
            raise ValueError("false_alarm_every must exceed one observation")
        self.reference_rate = float(reference_rate)
        self.alternative_rate = factor * self.reference_rate
        self.threshold = math.log(false_alarm_every)
        self._on_disagreement = math.log(self.alternative_rate / self.reference_rate)
        self._on_agreement = math.log((1.0 - self.alternative_rate) / (1.0 - self.reference_rate))
        self.drift_detected = False
        self.statistic = 0.0
        self.n = 0  # observations since the start or the last alarm
        self.run_length = 0  # observations since the statistic was last at zero: the likely
        self.run_disagreements = 0  # start of a drift, and the disagreements since then

    def update(self, disagreed: bool) -> None:
        if self.drift_detected:
            self.reset()
        self.n += 1
        self.statistic += self._on_disagreement if disagreed else self._on_agreement
        if self.statistic <= 0.0:
            self.statistic, self.run_length, self.run_disagreements = 0.0, 0, 0
        else:
            self.run_length += 1
            self.run_disagreements += int(bool(disagreed))
        self.drift_detected = self.statistic >= self.threshold

    def reset(self) -> None:
        self.drift_detected = False
        self.statistic = 0.0
        self.n = self.run_length = self.run_disagreements = 0

    def mean_log_likelihood_ratio(self, rate: float) -> float:
        """The statistic's drift per observation at a true disagreement rate: its delay to an
        alarm is about threshold / this when positive; at or below zero it never fires but by
        chance."""
        return rate * self._on_disagreement + (1.0 - rate) * self._on_agreement
