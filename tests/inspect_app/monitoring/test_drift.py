"""The drift tests fire on known drifts and, over many seeded clean windows, no more often than
their alpha says (checked against a generous binomial bound, never a wall clock)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from inspect_app.monitoring.drift import (
    CONFIDENCE_BINS,
    DisagreementMonitor,
    QuantileTable,
    _auc_per_column,
    confidence_histogram,
    defect_rate,
    embedding_drift,
    input_drift,
    prediction_drift,
)

RUNS = 200


def at_most_by_chance(hits: int, runs: int, alpha: float) -> bool:
    """At most what a test of level alpha shows in `runs` tries, bar a 1-in-10,000 fluke."""
    return hits <= binom.ppf(0.9999, runs, alpha)


def metrics(rng: np.random.Generator, n: int, brightness_gain: float = 1.0) -> dict:
    """Three independent input metrics of n images, roughly as a line camera's look."""
    return {
        "brightness": brightness_gain * rng.normal(110.0, 12.0, n),
        "contrast": rng.gamma(20.0, 2.5, n),
        "sharpness": rng.lognormal(5.0, 0.3, n),
    }


# --------------------------------------------------------------------------------------------
# Input drift


@pytest.mark.parametrize("as_table", [False, True])
def test_a_lighting_drop_is_caught_on_a_small_window(as_table: bool) -> None:
    rng = np.random.default_rng(1)
    ref = metrics(rng, 800)
    reference = {k: QuantileTable.from_sample(v) for k, v in ref.items()} if as_table else ref
    report = input_drift(reference, metrics(rng, 25, brightness_gain=0.6), alpha=0.001)
    assert report.drifted == ("brightness",)
    brightness = report.metric("brightness")
    assert brightness.direction == "down"
    assert brightness.relative_shift == pytest.approx(-0.4, abs=0.08)
    assert brightness.n_reference == 800
    assert brightness.n_recent == 25


@pytest.mark.parametrize("as_table", [False, True])
def test_clean_windows_fire_no_more_often_than_alpha(as_table: bool) -> None:
    rng = np.random.default_rng(2)
    alpha = 0.05
    fired = raw = 0
    for _ in range(RUNS):
        ref = metrics(rng, 300)
        reference = {k: QuantileTable.from_sample(v) for k, v in ref.items()} if as_table else ref
        report = input_drift(reference, metrics(rng, 30), alpha=alpha)
        fired += report.any_drift
        raw += sum(m.p_value <= alpha for m in report.metrics)
    # Under the global null BH holds the chance of any alarm at alpha, over all three metrics.
    assert at_most_by_chance(fired, RUNS, alpha)
    # Each KS p-value is itself valid, and not so conservative that it cannot fire.
    assert at_most_by_chance(raw, 3 * RUNS, alpha)
    assert raw >= binom.ppf(0.0001, 3 * RUNS, alpha / 2)


def test_a_point_mass_in_the_reference_does_not_raise_false_alarms() -> None:
    """Clipped share is exactly 0 on most images: the quantile table's stand-in sample keeps
    the point mass, so clean windows do not look drifted."""
    rng = np.random.default_rng(3)

    def clipped(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.7, 0.0, rng.exponential(0.01, n))

    fired = 0
    for _ in range(RUNS):
        table = QuantileTable.from_sample(clipped(500))
        fired += input_drift(
            {"clipped_share": table}, {"clipped_share": clipped(40)}, alpha=0.05
        ).any_drift
    assert at_most_by_chance(fired, RUNS, 0.05)
    more_clipped = np.where(rng.random(40) < 0.2, 0.0, rng.exponential(0.02, 40))
    report = input_drift({"clipped_share": table}, {"clipped_share": more_clipped}, alpha=0.05)
    assert report.drifted == ("clipped_share",)


def test_benjamini_hochberg_controls_false_discoveries_across_metrics() -> None:
    rng = np.random.default_rng(4)
    alpha = 0.1
    runs, false_share, uncorrected_any, corrected_any = 60, [], 0, 0
    for _ in range(runs):
        reference = {f"m{i}": rng.normal(0.0, 1.0, 400) for i in range(10)}
        # m0..m4 moved by one standard deviation, m5..m9 not.
        recent = {f"m{i}": rng.normal(1.0 if i < 5 else 0.0, 1.0, 40) for i in range(10)}
        report = input_drift(reference, recent, alpha=alpha)
        found = report.drifted
        false_share.append(sum(name >= "m5" for name in found) / max(len(found), 1))
        clean = input_drift(
            {k: reference[k] for k in ("m5", "m6", "m7", "m8", "m9")},
            {k: recent[k] for k in ("m5", "m6", "m7", "m8", "m9")},
            alpha=alpha,
        )
        uncorrected_any += any(m.p_value <= alpha for m in clean.metrics)
        corrected_any += clean.any_drift
        assert {"m0", "m1", "m2", "m3", "m4"} <= set(found)
    # BH: the expected share of false discoveries is at most alpha (5/10 x alpha here).
    assert np.mean(false_share) <= alpha
    # Five clean metrics tested one by one fire far more often than alpha; BH does not.
    assert uncorrected_any > 2 * runs * alpha
    assert at_most_by_chance(corrected_any, runs, alpha)


def test_short_metrics_are_untested_and_unknown_ones_refused() -> None:
    rng = np.random.default_rng(5)
    reference = metrics(rng, 200)
    recent = metrics(rng, 30)
    recent["sharpness"][3:] = np.nan  # three finite values: too few to test
    report = input_drift(reference, recent)
    assert report.untested == ("sharpness",)
    assert [m.metric for m in report.metrics] == ["brightness", "contrast"]
    with pytest.raises(ValueError, match="no reference"):
        input_drift(reference, {"hue": np.ones(30)})


def test_a_quantile_table_checks_its_levels() -> None:
    with pytest.raises(ValueError, match="increase"):
        QuantileTable(np.array([0.0, 0.5, 0.5]), np.array([1.0, 2.0, 3.0]), 10)
    with pytest.raises(ValueError, match="non-decreasing"):
        QuantileTable(np.array([0.0, 1.0]), np.array([2.0, 1.0]), 10)
    table = QuantileTable.from_sample([1.0, 2.0, 3.0, 4.0, 5.0])
    assert table.n == 5
    assert float(table.quantile(0.5)) == 3.0
    np.testing.assert_allclose(table.stand_in_sample(), [1.4, 2.2, 3.0, 3.8, 4.6])


# --------------------------------------------------------------------------------------------
# Embedding drift (small D and few permutations: the statistics, not the scale)


def embeddings(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    return rng.normal(size=(n, d)) / np.sqrt(np.arange(1, d + 1))


def test_an_embedding_shift_is_detected_and_a_clean_window_is_not() -> None:
    rng = np.random.default_rng(6)
    reference = embeddings(rng, 200)
    shifted = embedding_drift(reference, embeddings(rng, 50) + 0.5, n_permutations=199, alpha=0.01)
    assert shifted.drifted
    assert shifted.auc > 0.75
    assert shifted.p_value == pytest.approx(1 / 200)
    # One clean window fires with probability alpha by design; the level itself is checked over
    # many windows below.
    clean = embedding_drift(
        reference, embeddings(np.random.default_rng(60), 50), n_permutations=199, alpha=0.01
    )
    assert not clean.drifted
    assert clean.auc < shifted.auc


def test_the_permutation_p_value_holds_its_level_over_clean_windows() -> None:
    rng = np.random.default_rng(7)
    alpha, runs, fired = 0.1, 100, 0
    for run in range(runs):
        report = embedding_drift(
            embeddings(rng, 60),
            embeddings(rng, 20),
            n_permutations=49,
            n_folds=3,
            alpha=alpha,
            seed=run,
        )
        assert 1 / 50 <= report.p_value <= 1.0
        fired += report.drifted
    # Exact by construction (label-free features and folds): about 10 of 100 fire.
    assert at_most_by_chance(fired, runs, alpha)
    assert fired >= binom.ppf(0.0001, runs, alpha)


def test_the_most_responsible_images_are_the_shifted_ones() -> None:
    rng = np.random.default_rng(8)
    recent = embeddings(rng, 40)
    recent[[3, 11, 17, 29, 36]] += 3.0  # five images unlike anything in the reference
    report = embedding_drift(embeddings(rng, 200), recent, n_permutations=99, n_responsible=5)
    assert set(report.most_responsible.tolist()) == {3, 11, 17, 29, 36}
    assert report.recent_scores.shape == (40,)


def test_the_scores_are_scikit_learns_out_of_fold_ridge_predictions() -> None:
    rng = np.random.default_rng(9)
    reference, recent = embeddings(rng, 80), embeddings(rng, 30) + 0.2
    report = embedding_drift(reference, recent, n_permutations=9, quadratic=False, seed=3)
    pooled = StandardScaler().fit_transform(np.vstack([reference, recent]))
    y = np.r_[np.zeros(80), np.ones(30)]
    folds = KFold(n_splits=5, shuffle=True, random_state=3)
    scores = cross_val_predict(Ridge(alpha=10.0), pooled, y, cv=folds)
    np.testing.assert_allclose(report.recent_scores, scores[80:], rtol=1e-9, atol=1e-12)
    assert report.auc == pytest.approx(roc_auc_score(y, scores))


def test_auc_per_column_matches_roc_auc_score_with_ties() -> None:
    rng = np.random.default_rng(10)
    y = np.r_[np.zeros(30), np.ones(10)]
    labels = np.column_stack([y, rng.permutation(y), rng.permutation(y)])
    scores = rng.integers(0, 5, size=labels.shape).astype(float)  # many ties
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(_auc_per_column(scores, labels), expected)


def test_embedding_drift_is_deterministic_by_seed_and_checks_shapes() -> None:
    rng = np.random.default_rng(11)
    reference, recent = embeddings(rng, 100, d=40), embeddings(rng, 30, d=40)
    a = embedding_drift(reference, recent, n_permutations=19, n_components=8, seed=5)
    b = embedding_drift(reference, recent, n_permutations=19, n_components=8, seed=5)
    assert (a.auc, a.p_value) == (b.auc, b.p_value)
    assert a.n_features == 16  # 8 components and their squares
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        embedding_drift(reference, recent[:, :10])
    with pytest.raises(ValueError, match="at least 5"):
        embedding_drift(reference, recent[:3])


# --------------------------------------------------------------------------------------------
# Prediction drift


def p_defect(rng: np.random.Generator, n: int, rate: float = 0.05, ok_a: float = 0.6) -> np.ndarray:
    defects = rng.binomial(n, rate)
    return rng.permutation(
        np.concatenate([rng.beta(40.0, 0.6, defects), rng.beta(ok_a, 40.0, n - defects)])
    )


def test_prediction_drift_holds_its_level_on_clean_windows() -> None:
    rng = np.random.default_rng(12)
    alpha, fired = 0.05, 0
    for _ in range(RUNS):
        ref = p_defect(rng, 1000)
        report = prediction_drift(
            defect_rate(ref), confidence_histogram(ref), p_defect(rng, 100), alpha=alpha
        )
        fired += report.drifted
    assert at_most_by_chance(fired, RUNS, alpha)


def test_a_jump_in_the_defect_rate_is_caught() -> None:
    rng = np.random.default_rng(13)
    ref = p_defect(rng, 3000)
    report = prediction_drift(
        defect_rate(ref), confidence_histogram(ref), p_defect(rng, 200, rate=0.2), alpha=0.001
    )
    assert report.defect_rate_drifted
    assert report.defect_rate > 2 * report.reference_defect_rate


def test_a_less_confident_model_shows_in_the_histogram_before_the_rate() -> None:
    rng = np.random.default_rng(14)
    ref = p_defect(rng, 3000)
    report = prediction_drift(
        defect_rate(ref), confidence_histogram(ref), p_defect(rng, 200, ok_a=2.0), alpha=0.001
    )
    assert report.histogram_drifted
    assert not report.defect_rate_drifted


def test_sparse_bins_are_merged_and_tiny_windows_not_tested() -> None:
    rng = np.random.default_rng(15)
    ref = p_defect(rng, 3000)
    counts = confidence_histogram(ref)
    assert counts.sum() == 3000 and len(counts) == len(CONFIDENCE_BINS) - 1
    report = prediction_drift(defect_rate(ref), counts, p_defect(rng, 40))
    assert 2 <= len(report.histogram_recent) < len(counts)
    assert np.all(report.histogram_expected >= 5.0)
    assert report.histogram_recent.sum() == 40
    assert report.histogram_edges[0] == 0.0 and report.histogram_edges[-1] == 1.0
    tiny = prediction_drift(defect_rate(ref), counts, p_defect(rng, 5))
    assert tiny.histogram_p == 1.0 and len(tiny.histogram_recent) == 1
    with pytest.raises(ValueError, match="bins"):
        prediction_drift(0.05, counts[:-1], p_defect(rng, 40))


# --------------------------------------------------------------------------------------------
# Concept drift


def test_the_monitor_stays_quiet_on_a_long_clean_stream() -> None:
    rng = np.random.default_rng(16)
    monitor = DisagreementMonitor(0.01)
    alarms = 0
    for disagreed in rng.random(20_000) < 0.01:
        monitor.update(bool(disagreed))
        alarms += monitor.drift_detected
    assert alarms == 0
    assert monitor.n == 20_000


def test_the_monitor_fires_soon_after_a_jump_even_after_a_long_clean_run() -> None:
    rng = np.random.default_rng(17)
    delays = []
    for _ in range(20):
        monitor = DisagreementMonitor(0.01)
        for disagreed in rng.random(5_000) < 0.01:
            monitor.update(bool(disagreed))
        assert not monitor.drift_detected
        for t, disagreed in enumerate(rng.random(2_000) < 0.10, start=1):
            monitor.update(bool(disagreed))
            if monitor.drift_detected:
                delays.append(t)
                break
    # About threshold / mean LLR = 9.2 / 0.09 = 100 observations at 10%.
    assert len(delays) == 20
    assert max(delays) <= 400
    assert 0 < monitor.run_disagreements <= monitor.run_length <= monitor.n


def test_false_alarms_are_no_more_frequent_than_the_stated_mean_run() -> None:
    rng = np.random.default_rng(18)
    monitor = DisagreementMonitor(0.05, false_alarm_every=100.0)  # loose, to count alarms
    observations, alarms = 100_000, 0
    for disagreed in rng.random(observations) < 0.05:
        monitor.update(bool(disagreed))
        alarms += monitor.drift_detected
    # A mean run of at least 100 between alarms allows about 1,000 in 100,000 observations.
    assert 0 < alarms <= 1_000


def test_after_an_alarm_the_monitor_starts_afresh() -> None:
    monitor = DisagreementMonitor(0.01, false_alarm_every=10.0)
    updates = 0
    while not monitor.drift_detected:
        monitor.update(True)
        updates += 1
    assert updates == 3  # log(10) / log(3) = 2.1: the third disagreement crosses
    monitor.update(False)
    assert not monitor.drift_detected
    assert monitor.n == 1 and monitor.statistic == 0.0
    assert monitor.mean_log_likelihood_ratio(0.01) < 0 < monitor.mean_log_likelihood_ratio(0.03)
    with pytest.raises(ValueError):
        DisagreementMonitor(0.5)
