"""False-positive rates, power and delays of the drift tests (``inspect_app.monitoring.drift``).

Measured, not assumed; prints, asserts nothing. Sections (``--only`` picks some):

* ``input``: per-metric KS + Benjamini-Hochberg on the metrics of real synthetic photos
  (``data.synth.render_sample``, measured by ``inspect_app.imaging.input_stats``: brightness,
  contrast, sharpness, clipped shares, colour means). Each run splits a pool of clean images
  at random into a reference and a held-out set; a no-drift window is drawn from the held-out
  images, a drifted one from their twins darkened to 60% (every pixel x0.6) or blurred (9 px
  Gaussian, cv2). The reference is given both as its values and as a percentile table (what a
  reference profile stores).
* ``stream``: the service's use: a window of the last 50 parts tested every 10 parts at alphas
  1e-3 / 1e-4 / 1e-5, on 20,000-part clean streams (false alarms) and after a lighting drop or a
  blur (delay in parts). The stream resamples the held-out images, a little pessimistic: their
  empirical distribution differs from the population's by their own sampling noise.
* ``embedding``: the classifier two-sample test on Gaussian embeddings with a decaying
  spectrum (no real embeddings yet), its timing at 200 vs 800 of D = 300, and whether the most
  responsible rows are the injected ones.
* ``prediction``: defect rate (binomial) and P(defect) histogram (chi-square) on beta-mixture
  predictions, the reference itself a sample of 2,000 parts.
* ``concept``: the disagreement monitor (Bernoulli CUSUM) on simulated streams at a 1%
  reference rate: false alarms per 10,000 observations, delay after a jump to 3/5/10% that
  comes after 5,000 clean observations; against the era-long SPRT of the live audit test and,
  where river is importable, river's ADWIN, DDM, HDDM_A and Page-Hinkley at their defaults.

Run (each section a few to ~12 minutes on 2 shared cores, ~30 in all; ``--runs`` scales the
seeded repetitions, ``--streams`` the 20,000-part clean streams):

    OMP_NUM_THREADS=1 .venv/bin/python bench/drift_tests.py [--only input stream ...]

river is not a dependency; to include its detectors, install it in a separate environment and
put the project's site-packages after it (RIVER_PYTHON: that environment's python), e.g.

    PYTHONPATH=.:.venv/lib/python3.11/site-packages RIVER_PYTHON bench/drift_tests.py --only concept
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterable

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.stats import ks_1samp

from data.synth import class_schedule, image_seeds, render_sample
from inspect_app.imaging import input_stats
from inspect_app.monitoring.drift import (
    DisagreementMonitor,
    QuantileTable,
    confidence_histogram,
    defect_rate,
    embedding_drift,
    input_drift,
    prediction_drift,
)

ALPHAS = (0.05, 0.01, 0.001)
WINDOWS = (25, 50, 100, 200)
# A line sees mostly good parts; the defects are drawn too, since they are part of the stream.
LINE_MIX = {"ok": 0.9, "scratch": 0.025, "crack": 0.025, "pit": 0.025, "discoloration": 0.025}

Metrics = dict[str, NDArray[np.float64]]


# --------------------------------------------------------------------------------------------
# Images and their metrics


def image_metrics(image: NDArray[np.uint8]) -> dict[str, float]:
    """The input metrics of design.md section 10, as the reference profile keys them; the size
    ones are left out (every synthetic photo is 256 x 256, and size is the gate's business)."""
    stats = input_stats(image).metrics()
    return {k: v for k, v in stats.items() if k not in ("width", "height", "aspect")}


def darken(image: NDArray[np.uint8], gain: float = 0.6) -> NDArray[np.uint8]:
    return cv2.convertScaleAbs(image, alpha=gain)


def blur(image: NDArray[np.uint8], size: int = 9) -> NDArray[np.uint8]:
    return cv2.GaussianBlur(image, (size, size), 0)


def metric_pools(n: int, seed: int) -> dict[str, Metrics]:
    """Metrics of n rendered photos, clean, darkened and blurred (row i: the same part)."""
    t0 = time.perf_counter()
    rows: dict[str, list[dict[str, float]]] = {"clean": [], "dark": [], "blur": []}
    for s, c in zip(image_seeds(n, seed), class_schedule(n, seed, LINE_MIX), strict=True):
        image = render_sample(s, c).image
        rows["clean"].append(image_metrics(image))
        rows["dark"].append(image_metrics(darken(image)))
        rows["blur"].append(image_metrics(blur(image)))
    print(f"rendered and measured {n} photos x 3 variants in {time.perf_counter() - t0:.0f} s")
    return {
        variant: {k: np.array([r[k] for r in rs]) for k in rs[0]} for variant, rs in rows.items()
    }


def take(pool: Metrics, idx: NDArray[np.intp]) -> Metrics:
    return {k: v[idx] for k, v in pool.items()}


def rate(hits: Iterable[bool]) -> str:
    h = list(hits)
    return f"{np.mean(h):.4f}" if h else "-"


def _order_stat(values: NDArray[np.float64], q: float) -> str:
    """A quantile that is one of the values (never interpolated with inf): "inf" if missed."""
    v = float(np.quantile(values, q, method="higher"))
    return "inf" if math.isinf(v) else f"{v:.0f}"


# --------------------------------------------------------------------------------------------
# Input metrics: single windows


def section_input(pools: dict[str, Metrics], runs: int, n_ref: int, seed: int) -> None:
    clean = pools["clean"]
    n = len(next(iter(clean.values())))
    print(f"\n== input drift: KS per metric + BH, reference {n_ref} photos, {runs} runs ==")
    for variant in ("clean", "dark", "blur"):
        med = {k: float(np.median(v)) for k, v in pools[variant].items()}
        print(f"  median {variant:5s}: " + ", ".join(f"{k} {v:.4g}" for k, v in med.items()))
    rng = np.random.default_rng(seed)
    header = "  window | " + " | ".join(f"a={a:g}" for a in ALPHAS)
    for ref_kind in ("sample", "percentiles"):
        print(f"\n  reference given as {ref_kind}")
        print(
            f"  no drift: share of windows where any metric fired (FPR; BH across"
            f" {len(clean)} metrics),"
        )
        print("            and the per-metric raw KS rate (mean over metrics)")
        print(header)
        for m in WINDOWS:
            any_fired = {a: [] for a in ALPHAS}
            raw = {a: [] for a in ALPHAS}
            for _ in range(runs):
                perm = rng.permutation(n)
                ref = take(clean, perm[:n_ref])
                reference = (
                    {k: QuantileTable.from_sample(v) for k, v in ref.items()}
                    if ref_kind == "percentiles"
                    else ref
                )
                report = input_drift(reference, take(clean, perm[n_ref : n_ref + m]))
                lowest = min(r.adjusted_p for r in report.metrics)
                for a in ALPHAS:
                    any_fired[a].append(lowest <= a)
                    raw[a].append(np.mean([r.p_value <= a for r in report.metrics]))
            print(
                f"  {m:6d} | "
                + " | ".join(f"{rate(any_fired[a])} (raw {np.mean(raw[a]):.4f})" for a in ALPHAS)
            )
        for variant in ("dark", "blur"):
            print(f"  {variant}: power (any metric fired) and the metrics that fired most")
            print(header)
            for m in WINDOWS:
                fired = {a: [] for a in ALPHAS}
                counts: dict[str, int] = {}
                for _ in range(max(runs // 5, 50)):
                    perm = rng.permutation(n)
                    ref = take(clean, perm[:n_ref])
                    reference = (
                        {k: QuantileTable.from_sample(v) for k, v in ref.items()}
                        if ref_kind == "percentiles"
                        else ref
                    )
                    report = input_drift(reference, take(pools[variant], perm[n_ref : n_ref + m]))
                    lowest = min(r.adjusted_p for r in report.metrics)
                    for a in ALPHAS:
                        fired[a].append(lowest <= a)
                    for name in report.drifted:
                        counts[name] = counts.get(name, 0) + 1
                top = sorted(counts, key=lambda k: -counts[k])[:3]
                print(f"  {m:6d} | " + " | ".join(rate(fired[a]) for a in ALPHAS) + f"   {top}")

    # Why the percentile table is tested through a stand-in sample with the two-sample test:
    # the one-sample test against the interpolated CDF takes the reference as exact.
    print("\n  for comparison: ks_1samp against the percentile table's interpolated CDF")
    print("  (the reference taken as the population), per-metric raw rate at a=0.05:")
    print("  window | continuous metrics | clipped shares (a point mass at 0)")
    point_mass = [k for k in clean if k.startswith("clipped")]
    for m in WINDOWS:
        hits: dict[bool, list[bool]] = {True: [], False: []}
        for _ in range(runs // 2):
            perm = rng.permutation(n)
            for k in clean:
                table = QuantileTable.from_sample(clean[k][perm[:n_ref]])
                p = ks_1samp(clean[k][perm[n_ref : n_ref + m]], _table_cdf(table)).pvalue
                hits[k in point_mass].append(p <= 0.05)
        print(f"  {m:6d} | {rate(hits[False]):18s} | {rate(hits[True])}")


def _table_cdf(table: QuantileTable) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    return lambda x: np.interp(x, table.values, table.levels, left=0.0, right=1.0)


# --------------------------------------------------------------------------------------------
# Input metrics: the service's sliding window


STREAM_ALPHAS = (1e-3, 1e-4, 1e-5)


def _lowest_adjusted_p(reference: dict[str, QuantileTable], recent: Metrics) -> float:
    """The window fires at alpha exactly when this is <= alpha (BH's adjusted p-values do not
    depend on alpha), so one pass over a stream measures every alpha."""
    return min(m.adjusted_p for m in input_drift(reference, recent).metrics)


def section_stream(
    pools: dict[str, Metrics],
    streams: int,
    n_ref: int,
    seed: int,
    window: int = 50,
    step: int = 10,
    length: int = 20_000,
) -> None:
    clean = pools["clean"]
    n = len(next(iter(clean.values())))
    print(
        f"\n== input drift on a stream: last {window} parts tested every {step},"
        f" percentile reference of {n_ref} photos, {len(clean)} metrics =="
    )
    rng = np.random.default_rng(seed + 1)
    lowest: list[NDArray[np.float64]] = []
    t0 = time.perf_counter()
    for _ in range(streams):
        perm = rng.permutation(n)
        reference = {k: QuantileTable.from_sample(v) for k, v in take(clean, perm[:n_ref]).items()}
        stream = rng.choice(perm[n_ref:], size=length)
        lowest.append(
            np.array(
                [
                    _lowest_adjusted_p(reference, take(clean, stream[t - window : t]))
                    for t in range(window, length + 1, step)
                ]
            )
        )
    tests = sum(len(x) for x in lowest)
    parts = streams * length
    print(
        f"  clean: {streams} streams of {length:,} parts, {tests:,} tests"
        f" ({1e3 * (time.perf_counter() - t0) / tests:.1f} ms per test)"
    )
    for alpha in STREAM_ALPHAS:
        fired = sum(int(np.sum(x <= alpha)) for x in lowest)
        # An episode: consecutive firing tests, one alarm for the alarm layer.
        episodes = sum(
            int(np.sum(np.diff(np.r_[0, (x <= alpha).astype(int)]) == 1)) for x in lowest
        )
        print(
            f"    alpha {alpha:g}: {fired} tests fired in {episodes} episodes"
            f" = {episodes * 20_000 / parts:.2f} false alarms per 20,000 parts"
        )
    for variant in ("dark", "blur"):
        delays: dict[float, list[float]] = {a: [] for a in STREAM_ALPHAS}
        for _ in range(100):
            perm = rng.permutation(n)
            reference = {
                k: QuantileTable.from_sample(v) for k, v in take(clean, perm[:n_ref]).items()
            }
            before = rng.choice(perm[n_ref:], size=window)
            after = rng.choice(perm[n_ref:], size=5 * window)
            phase = int(rng.integers(step))
            first = dict.fromkeys(STREAM_ALPHAS, math.inf)
            for k in range(1, 5 * window + 1):
                if (k + phase) % step:
                    continue
                recent = {
                    name: np.concatenate([clean[name][before], pools[variant][name][after[:k]]])[
                        -window:
                    ]
                    for name in clean
                }
                p = _lowest_adjusted_p(reference, recent)
                for a in STREAM_ALPHAS:
                    if p <= a and math.isinf(first[a]):
                        first[a] = k
                if p <= min(STREAM_ALPHAS):
                    break
            for a in STREAM_ALPHAS:
                delays[a].append(first[a])
        for a in STREAM_ALPHAS:
            d = np.array(delays[a])
            print(
                f"  {variant}, alpha {a:g}: parts from the change to the alarm: median"
                f" {_order_stat(d, 0.5)}, 90th percentile {_order_stat(d, 0.9)},"
                f" max {_order_stat(d, 1.0)} (100 runs)"
            )


# --------------------------------------------------------------------------------------------
# Embeddings


def gaussian_embeddings(rng: np.random.Generator, n: int, d: int) -> NDArray[np.float64]:
    """N(0, diag(1/k)): variance concentrated in a few directions, as a CNN's features are."""
    return rng.normal(size=(n, d)) / np.sqrt(np.arange(1, d + 1))


def section_embedding(runs: int, n_ref: int, seed: int, d: int = 64) -> None:
    print(
        f"\n== embedding drift: classifier two-sample test, {n_ref} reference, D={d},"
        " 16 principal components =="
    )
    rng = np.random.default_rng(seed + 2)
    sd = 1.0 / np.sqrt(np.arange(1, d + 1))
    perms = 199
    print(f"  no drift ({runs} runs per window, {perms} permutations): FPR")
    print("  window | quadratic a=0.05  a=0.01 | linear a=0.05  a=0.01 | null AUC 95th pct")
    for m in WINDOWS:
        ps: dict[bool, list[float]] = {True: [], False: []}
        null95 = []
        for r in range(runs):
            ref, rec = gaussian_embeddings(rng, n_ref, d), gaussian_embeddings(rng, m, d)
            for quad in (True, False):
                rep = embedding_drift(ref, rec, n_permutations=perms, quadratic=quad, seed=r)
                ps[quad].append(rep.p_value)
                if quad:
                    null95.append(rep.null_auc_95)
        print(
            f"  {m:6d} | "
            + " | ".join(
                f"{np.mean(np.array(ps[q]) <= 0.05):.3f}  {np.mean(np.array(ps[q]) <= 0.01):.3f}"
                for q in (True, False)
            )
            + f" | {np.mean(null95):.3f}"
        )
    drifts: dict[str, Callable[[NDArray[np.float64]], NDArray[np.float64]]] = {
        "mean +0.1 sd in every coordinate": lambda x: x + 0.1 * sd,
        "mean +0.2 sd in every coordinate": lambda x: x + 0.2 * sd,
        "spread x0.8 (blur-like)": lambda x: 0.8 * x,
    }
    power_runs = max(runs // 3, 40)
    print(f"  power at a=0.01 ({power_runs} runs, {perms} permutations): quadratic | linear")
    for name, drift in drifts.items():
        cells = []
        for m in WINDOWS:
            hit = {True: 0, False: 0}
            for r in range(power_runs):
                ref, rec = gaussian_embeddings(rng, n_ref, d), drift(gaussian_embeddings(rng, m, d))
                for quad in (True, False):
                    rep = embedding_drift(ref, rec, n_permutations=perms, quadratic=quad, seed=r)
                    hit[quad] += rep.p_value <= 0.01
            cells.append(f"{m}: {hit[True] / power_runs:.2f} | {hit[False] / power_runs:.2f}")
        print(f"  {name:34s} " + "   ".join(cells))

    # The most responsible rows: 10 of 100 recent embeddings moved by 1 sd in every coordinate.
    precision = []
    for r in range(50):
        ref, rec = gaussian_embeddings(rng, n_ref, d), gaussian_embeddings(rng, 100, d)
        rec[:10] += sd
        rep = embedding_drift(ref, rec, n_permutations=perms, seed=r)
        precision.append(np.mean(rep.most_responsible < 10))
    print(
        "  10 of 100 recent rows moved by 1 sd: share of the 10 most responsible that are the"
        f" moved ones, mean over 50 runs: {np.mean(precision):.2f}"
    )

    print("  timing, defaults (999 permutations), 800 reference vs 200 recent, D=300:")
    ref, rec = gaussian_embeddings(rng, 800, 300), gaussian_embeddings(rng, 200, 300)
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        embedding_drift(ref, rec)
        print(f"    {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")


# --------------------------------------------------------------------------------------------
# Predictions


def p_defect_sample(
    rng: np.random.Generator, n: int, rate: float = 0.05, ok_shape: tuple[float, float] = (0.6, 40)
) -> NDArray[np.float64]:
    """Good parts near 0, defects near 1: a confident model on a line with `rate` defects."""
    defects = rng.binomial(n, rate)
    return rng.permutation(
        np.concatenate([rng.beta(40.0, 0.6, defects), rng.beta(*ok_shape, n - defects)])
    )


def section_prediction(runs: int, seed: int, n_ref: int = 2000) -> None:
    print(
        f"\n== prediction drift: binomial on the defect rate + chi-square on P(defect), "
        f"reference of {n_ref} parts at 5% defects =="
    )
    rng = np.random.default_rng(seed + 3)
    scenarios: dict[str, Callable[[int], NDArray[np.float64]]] = {
        "no drift": lambda m: p_defect_sample(rng, m),
        "defect rate 5% -> 15%": lambda m: p_defect_sample(rng, m, rate=0.15),
        "good parts less sure (rate unchanged)": lambda m: p_defect_sample(
            rng, m, ok_shape=(0.9, 40)
        ),
    }
    for name, draw in scenarios.items():
        n_runs = runs * 2 if name == "no drift" else runs // 2
        print(f"  {name} ({n_runs} runs): any / defect rate / histogram fired, per alpha")
        for m in WINDOWS:
            cells = []
            results = []
            for _ in range(n_runs):
                ref = p_defect_sample(rng, n_ref)
                rep = prediction_drift(defect_rate(ref), confidence_histogram(ref), draw(m))
                results.append(rep.adjusted_p)
            adj = np.array(results)
            for a in ALPHAS:
                any_hit = np.mean(adj.min(axis=1) <= a)
                cells.append(
                    f"a={a:g}: {any_hit:.3f} / {np.mean(adj[:, 0] <= a):.3f}"
                    f" / {np.mean(adj[:, 1] <= a):.3f}"
                )
            print(f"  {m:6d} | " + " | ".join(cells))


# --------------------------------------------------------------------------------------------
# Concept drift


def _detectors(reference_rate: float) -> dict[str, Callable[[], object]]:
    made: dict[str, Callable[[], object]] = {
        "CUSUM (DisagreementMonitor)": lambda: DisagreementMonitor(reference_rate)
    }
    try:
        from river import drift  # not a dependency: measured here when importable
    except ImportError:
        print("  river is not importable: its detectors are skipped")
        return made
    made.update(
        {
            "river ADWIN": drift.ADWIN,
            "river DDM": drift.binary.DDM,
            "river HDDM_A": drift.binary.HDDMA,
            "river PageHinkley": drift.PageHinkley,
        }
    )
    return made


def _first_alarm(detector: object, stream: NDArray[np.bool_]) -> int | None:
    update = detector.update  # type: ignore[attr-defined]
    for i, x in enumerate(stream):
        update(bool(x))
        if detector.drift_detected:  # type: ignore[attr-defined]
            return i
    return None


def section_concept(runs: int, seed: int, p0: float = 0.01) -> None:
    print(f"\n== concept drift: disagreement stream at {p0:.0%} ==")
    rng = np.random.default_rng(seed + 4)
    detectors = _detectors(p0)
    clean_length = 100_000
    clean_streams = max(runs // 50, 4)
    print(
        f"  false alarms per 10,000 observations at {p0:.0%} ({clean_streams} x {clean_length:,})"
    )
    for name, make in detectors.items():
        alarms, t0 = 0, time.perf_counter()
        for _ in range(clean_streams):
            detector = make()
            for x in rng.random(clean_length) < p0:
                detector.update(bool(x))  # type: ignore[attr-defined]
                alarms += detector.drift_detected  # type: ignore[attr-defined]
        per = 1e6 * (time.perf_counter() - t0) / (clean_streams * clean_length)
        print(
            f"  {name:28s} {alarms * 10_000 / (clean_streams * clean_length):.3f}"
            f"   ({alarms} alarms, {per:.1f} us per update)"
        )

    lead_in, cap = 5_000, 20_000
    n_runs = max(runs // 10, 50)
    print(
        f"  delay (observations) after a jump that comes after {lead_in:,} clean ones,"
        f" {n_runs} runs; median / 90th pct; share not detected within {cap:,}; false alarm"
        " before the jump"
    )
    sprt_up, sprt_down = math.log(3.0), math.log((1 - 3 * p0) / (1 - p0))
    for p1 in (0.03, 0.05, 0.10):
        print(f"  -> {p1:.0%}")
        streams = [
            np.concatenate([rng.random(lead_in) < p0, rng.random(cap) < p1]) for _ in range(n_runs)
        ]
        rows: dict[str, list[float]] = {}
        early: dict[str, int] = {}
        for name, make in detectors.items():
            delays, before = [], 0
            for stream in streams:
                first = _first_alarm(make(), stream)
                while first is not None and first < lead_in:  # restart after a false alarm
                    before += 1
                    detector = make()
                    later = _first_alarm(detector, stream[first + 1 :])
                    first = None if later is None else first + 1 + later
                delays.append(math.inf if first is None else first - lead_in + 1)
            rows[name], early[name] = delays, before
        # The live audit test: the era-long SPRT of 1% against 3% at a 5% false-alarm chance.
        llr = np.cumsum(np.where(np.array(streams), sprt_up, sprt_down), axis=1)
        crossed = llr >= math.log(20.0)
        sprt = []
        before = 0
        for row in crossed:
            hits = np.flatnonzero(row)
            if hits.size and hits[0] < lead_in:
                before += 1
            after = hits[hits >= lead_in]
            sprt.append(after[0] - lead_in + 1 if after.size else math.inf)
        rows["SPRT of the live audit test"], early["SPRT of the live audit test"] = sprt, before
        for name, delays in rows.items():
            d = np.array(delays)
            finite = d[np.isfinite(d)]
            print(
                f"    {name:28s} {_order_stat(d, 0.5):>6s} / {_order_stat(d, 0.9):>6s}"
                f"   missed {np.mean(np.isinf(d)):.2f}   early alarms {early[name]}"
                f"   (mean of detected {finite.mean() if finite.size else math.nan:.0f})"
            )
    monitor = DisagreementMonitor(p0)
    print(
        f"  CUSUM threshold {monitor.threshold:.2f}; mean LLR per observation at 3/5/10%: "
        + ", ".join(f"{monitor.mean_log_likelihood_ratio(q):.4f}" for q in (0.03, 0.05, 0.10))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["input", "stream", "embedding", "prediction", "concept"],
        default=["input", "stream", "embedding", "prediction", "concept"],
    )
    parser.add_argument("--runs", type=int, default=1000, help="seeded runs per no-drift cell")
    parser.add_argument("--images", type=int, default=1200, help="photos in the metric pool")
    parser.add_argument("--reference", type=int, default=800, help="reference size")
    parser.add_argument("--streams", type=int, default=5, help="20,000-part clean streams")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if {"input", "stream"} & set(args.only):
        pools = metric_pools(args.images, args.seed)
        if "input" in args.only:
            section_input(pools, args.runs, args.reference, args.seed)
        if "stream" in args.only:
            section_stream(pools, args.streams, args.reference, args.seed)
    if "embedding" in args.only:
        section_embedding(max(args.runs // 4, 50), args.reference, args.seed)
    if "prediction" in args.only:
        section_prediction(args.runs, args.seed)
    if "concept" in args.only:
        section_concept(args.runs, args.seed)


if __name__ == "__main__":
    main()
