"""The image gate: each kind of bad frame is refused with its code, clean frames pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.off_distribution import off_distribution_frames
from inspect_app.domain import CLASS_NAMES
from inspect_app.imaging import input_stats
from inspect_app.monitoring import drift
from inspect_app.monitoring.gate import GateCode, GateConfig, GateVerdict, ImageGate
from models import DEFAULT_WEIGHTS
from models.predictor import Predictor
from models.profile import (
    LAYOUT_GRID,
    P_DEFECT_BINS,
    QUANTILE_LEVELS,
    ReferenceProfile,
    load_profile,
    profile_from_outputs,
    profile_path,
)

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"
D = 8  # embedding size of the toy profile
L = LAYOUT_GRID * LAYOUT_GRID  # values of an edge layout


def _typical() -> dict[str, float]:
    return {
        "width": 256.0, "height": 256.0, "aspect": 1.0, "brightness": 90.0, "contrast": 30.0,
        "sharpness": 120.0, "gradient_balance": 0.7, "end_balance": 0.0, "side_balance": 0.0,
        "tilt": 0.0, "clipped_dark": 0.0, "clipped_bright": 0.0,
        "mean_blue": 90.0, "mean_green": 90.0, "mean_red": 90.0,
    }  # fmt: skip


def _reference_rows(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    """`n` frames' metrics spread round `_typical()`."""
    rows = []
    for _ in range(n):
        row = _typical()
        row["brightness"] = float(rng.normal(90, 15))
        row["contrast"] = float(np.exp(rng.normal(np.log(30), 0.3)))
        row["sharpness"] = float(np.exp(rng.normal(np.log(120), 0.4)))
        row["gradient_balance"] = float(rng.normal(0.7, 0.3))
        row["end_balance"] = float(rng.normal(0.0, 0.4))
        row["side_balance"] = float(rng.normal(0.0, 0.25))
        row["tilt"] = float(rng.uniform(-7.0, 7.0))
        row["clipped_bright"] = float(rng.uniform(0, 0.01))
        for c in ("mean_blue", "mean_green", "mean_red"):
            row[c] = row["brightness"] + float(rng.normal(0, 3))
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def gate() -> ImageGate:
    """A gate on a toy profile: 400 frames spread round `_typical()`, Gaussian embeddings
    and Gaussian edge layouts."""
    rng = np.random.default_rng(0)
    n = 400
    rows = _reference_rows(rng, n)
    profile = profile_from_outputs(
        rng.dirichlet(np.ones(len(CLASS_NAMES)), size=n), rng.normal(size=(n, D)), rows,
        model_version="toy", source="toy frames", layouts=rng.normal(size=(n, L)),
    )  # fmt: skip
    return ImageGate(profile)


def _with(**changes: float) -> dict[str, float]:
    return _typical() | changes


def test_a_typical_frame_with_a_typical_embedding_is_usable(gate: ImageGate) -> None:
    verdict = gate.check(_typical(), np.zeros(D))
    assert verdict == GateVerdict(usable=True, ood_distance=verdict.ood_distance)
    assert verdict.code is None and verdict.ood_distance is not None


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"contrast": 0.4, "sharpness": 0.5}, GateCode.BLANK, "blank or nearly uniform frame"),
        ({"brightness": 5.0}, GateCode.UNDEREXPOSED, "under-exposed (mean grey 5"),
        ({"clipped_dark": 0.6}, GateCode.UNDEREXPOSED, "black-clipped 60% of pixels"),
        ({"brightness": 250.0}, GateCode.OVEREXPOSED, "over-exposed (mean grey 250"),
        ({"clipped_bright": 0.41}, GateCode.OVEREXPOSED, "clipped 41% of pixels"),
        ({"sharpness": 3.1}, GateCode.BLURRED, "out of focus (sharpness 3.1"),
        ({"gradient_balance": -2.0}, GateCode.DIRECTIONAL, "detail lost across the frame"),
        ({"sharpness": 40_000.0}, GateCode.NOISY, "noisy or grainy"),
        ({"end_balance": 4.0}, GateCode.FRAMING, "its outline is missing at the bottom"),
        ({"end_balance": -4.0}, GateCode.FRAMING, "its outline is missing at the top"),
        ({"side_balance": -3.0}, GateCode.FRAMING, "its outline is missing on the left"),
        ({"side_balance": 3.0}, GateCode.FRAMING, "its outline is missing on the right"),
        # inside each one's own range, together where no reference frame lies
        ({"end_balance": 0.9, "gradient_balance": 0.0}, GateCode.FRAMING,
         "part not whole in the frame, or stretched (end balance 0.90, gradient balance 0.00"),
        ({"tilt": 20.0}, GateCode.TILTED, "part turned in its fixture: 20 degrees clockwise"),
        ({"tilt": -30.0}, GateCode.TILTED, "30 degrees anticlockwise"),
        ({"mean_red": 250.0}, GateCode.COLOUR, "unusual colour (mean red 250"),
        ({"width": 640.0, "height": 480.0, "aspect": 4 / 3}, GateCode.SIZE,
         "wrong size/aspect (640x480, reference 256x256)"),
    ],
)  # fmt: skip
def test_each_kind_of_bad_frame_is_refused_with_its_code(
    gate: ImageGate, changes: dict[str, float], code: GateCode, words: str
) -> None:
    verdict = gate.check(_with(**changes), np.zeros(D))
    assert not verdict.usable
    assert verdict.code == code
    assert len(verdict.codes) == len(verdict.reasons)
    assert words in verdict.reasons[0]


def test_an_embedding_unlike_the_reference_is_out_of_distribution(gate: ImageGate) -> None:
    verdict = gate.check(_typical(), np.full(D, 4.0))
    assert verdict.codes == (GateCode.OUT_OF_DISTRIBUTION,)
    assert verdict.ood_distance is not None and verdict.ood_distance > gate.ood_threshold
    assert "not like the model's training images" in verdict.reasons[0]
    assert "reference 99.5th percentile" in verdict.reasons[0]
    assert gate.ood_threshold == pytest.approx(gate.profile.ood_quantile(0.995))


def test_an_edge_layout_unlike_the_reference_is_refused_with_its_code(gate: ImageGate) -> None:
    """The layout check (where the frame's edges lie) is its own reason, with the distance
    and the reference quantile it was held to; a typical layout passes."""
    assert gate.check(_typical(), np.zeros(D), np.zeros(L)).usable
    verdict = gate.check(_typical(), np.zeros(D), np.full(L, 3.0))
    assert verdict.codes == (GateCode.LAYOUT,)
    assert verdict.layout_distance is not None and verdict.layout_distance > gate.layout_threshold
    assert verdict.reasons[0].startswith("not laid out like a whole part in its fixture")
    assert "reference 99.9th percentile" in verdict.reasons[0]
    assert gate.layout_threshold == pytest.approx(gate.profile.layout.quantile(0.999))
    looser = ImageGate(gate.profile, GateConfig(layout_level=1.0))
    assert looser.layout_threshold >= gate.layout_threshold
    assert not gate.check(_typical(), np.zeros(D), np.full(L, math.nan)).usable
    # without a layout (a caller that did not measure one) the check is skipped
    assert gate.check(_typical(), np.zeros(D)).layout_distance is None


def test_without_an_embedding_only_the_metrics_are_checked(gate: ImageGate) -> None:
    assert gate.check(_typical()).usable
    assert gate.check(_typical()).ood_distance is None
    assert gate.check(_with(brightness=2.0)).code == GateCode.UNDEREXPOSED


def test_a_missing_number_is_refused_not_waved_through(gate: ImageGate) -> None:
    assert not gate.check(_with(sharpness=math.nan), np.zeros(D)).usable
    assert not gate.check(_typical(), np.full(D, math.nan)).usable


def test_batch_verdicts_match_one_by_one(gate: ImageGate) -> None:
    rows = [_typical(), _with(contrast=0.1), _typical()]
    embeddings = np.stack([np.zeros(D), np.zeros(D), np.full(D, 5.0)])
    batch = gate.check_batch(rows, embeddings)
    alone = [gate.check(r, e) for r, e in zip(rows, embeddings, strict=True)]
    assert [(v.usable, v.codes, v.reasons) for v in batch] == [
        (v.usable, v.codes, v.reasons) for v in alone
    ]
    assert [v.ood_distance for v in batch] == pytest.approx([v.ood_distance for v in alone])
    assert gate.check_batch(rows) == [gate.check(r) for r in rows]
    with pytest.raises(ValueError, match="3 metric rows but 2 embeddings"):
        gate.check_batch(rows, embeddings[:2])
    layouts = np.stack([np.zeros(L), np.full(L, 3.0), np.zeros(L)])
    batch = gate.check_batch(rows, embeddings, layouts)
    alone = [gate.check(r, e, lay) for r, e, lay in zip(rows, embeddings, layouts, strict=True)]
    assert [v.codes for v in batch] == [v.codes for v in alone]
    assert batch[1].codes == (GateCode.BLANK, GateCode.LAYOUT)
    with pytest.raises(ValueError, match="3 metric rows but 1 edge layouts"):
        gate.check_batch(rows, embeddings, layouts[:1])


def test_a_wider_margin_lets_more_through(gate: ImageGate) -> None:
    dim = _with(brightness=gate.limits["brightness"][0] - 1.0)
    assert not gate.check(dim).usable
    assert ImageGate(gate.profile, GateConfig(margin=1.0)).check(dim).usable


def test_framing_has_its_own_margin(gate: ImageGate) -> None:
    """The framing metrics' long clean tail gets `framing_margin`, the others `margin`."""
    wide = ImageGate(gate.profile, GateConfig(framing_margin=2.0))
    assert wide.limits["side_balance"][1] > gate.limits["side_balance"][1]
    assert wide.limits["brightness"] == gate.limits["brightness"]
    cut = _with(side_balance=gate.limits["side_balance"][1] + 0.01)
    assert not gate.check(cut).usable and wide.check(cut).usable


def test_the_joint_check_has_its_own_level(gate: ImageGate) -> None:
    """End and gradient balance together are refused beyond the reference's own distances
    at `joint_level`; a frame at the threshold's edge passes a looser level."""
    joint = gate.profile.joint_metrics
    assert joint is not None and joint.metrics == ("end_balance", "gradient_balance")
    assert gate.joint_threshold == pytest.approx(joint.quantile(0.999))
    odd = _with(end_balance=0.9, gradient_balance=0.0)
    assert not gate.check(odd).usable
    assert ImageGate(gate.profile, GateConfig(joint_level=1.0)).joint_threshold >= (
        gate.joint_threshold
    )
    assert not gate.check(_with(end_balance=math.nan)).usable


def test_a_profile_made_before_the_framing_metrics_does_not_check_them() -> None:
    """Profiles written before `end_balance`, `side_balance`, `tilt` and the joint check
    existed keep loading and gating on what they hold; those rules wait for a regenerated
    profile."""
    rng = np.random.default_rng(1)
    newer = ("end_balance", "side_balance", "tilt")
    old_rows = [
        {k: v for k, v in row.items() if k not in newer} for row in _reference_rows(rng, 50)
    ]
    profile = profile_from_outputs(
        rng.dirichlet(np.ones(len(CLASS_NAMES)), size=50), rng.normal(size=(50, D)), old_rows,
        model_version="old", source="a profile without the framing metrics",
    )  # fmt: skip
    written = profile.to_dict()
    assert "joint_metrics" not in written
    old = ImageGate(ReferenceProfile.from_dict(written))
    assert old.profile.joint_metrics is None and old.joint_threshold == math.inf
    assert not set(newer) & set(old.limits)
    assert old.check(_with(end_balance=9.0, side_balance=-9.0, tilt=30.0)).usable
    assert old.check(_with(brightness=2.0)).code == GateCode.UNDEREXPOSED


def test_the_shipped_profile_as_written_before_the_tilt_still_loads_and_gates() -> None:
    """The default weights' profile file less what the tilt and the joint check added (as
    committed before them): it loads, its gate checks what it holds and skips the rest."""
    raw = json.loads(profile_path(DEFAULT_WEIGHTS).read_text(encoding="utf-8"))
    del raw["joint_metrics"], raw["metric_quantiles"]["tilt"]
    old = ReferenceProfile.from_dict(raw)
    gate = ImageGate(old)
    assert old.joint_metrics is None and "tilt" not in gate.limits
    assert "end_balance" in gate.limits
    assert gate.check(_with(tilt=30.0)).code != GateCode.TILTED
    assert gate.check(_with(brightness=2.0)).code == GateCode.UNDEREXPOSED


def test_a_profile_made_before_the_edge_layout_loads_and_skips_that_check() -> None:
    """The default weights' profile file less its edge layout (as committed before it): it
    loads, and a frame's layout is not checked (nor measured) however odd it is."""
    raw = json.loads(profile_path(DEFAULT_WEIGHTS).read_text(encoding="utf-8"))
    wild = np.full(L, 5.0)
    new = ImageGate(ReferenceProfile.from_dict(raw))
    assert GateCode.LAYOUT in new.check(_typical(), None, wild).codes
    del raw["layout"]
    old = ImageGate(ReferenceProfile.from_dict(raw))
    assert old.profile.layout is None and old.layout_threshold == math.inf
    verdict = old.check(_typical(), None, wild)
    assert GateCode.LAYOUT not in verdict.codes and verdict.layout_distance is None
    assert old.check(_with(brightness=2.0), None, wild).code == GateCode.UNDEREXPOSED


@pytest.mark.parametrize(
    "setting",
    [
        {"low_level": 0.6},
        {"ood_level": 0.2},
        {"margin": -0.1},
        {"framing_margin": -0.1},
        {"tilt_margin": -1.0},
        {"joint_level": 0.3},
        {"layout_level": 1.5},
        {"colour_margin": -0.1},
        {"balance_high_margin": -1.0},
    ],
)
def test_config_refuses_levels_that_mean_nothing(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GateConfig(**setting)


def test_the_gradient_balance_and_the_colours_have_their_own_margins(gate: ImageGate) -> None:
    """Detail smeared up and down is refused only far out (the joint check of end and
    gradient balance sees the stretched crops nearer in); the colour means get a margin of
    their own; the other metrics keep `margin`."""
    wide = ImageGate(gate.profile, GateConfig(balance_high_margin=3.0, colour_margin=2.0))
    (lo, hi), (wide_lo, wide_hi) = gate.limits["gradient_balance"], wide.limits["gradient_balance"]
    assert wide_lo == lo and wide_hi > hi
    assert wide.limits["mean_red"][1] > gate.limits["mean_red"][1]
    assert wide.limits["brightness"] == gate.limits["brightness"]


def test_profile_stores_what_drift_monitoring_reads() -> None:
    # models/ cannot import the service, so these are copies: they must stay equal
    assert P_DEFECT_BINS == drift.CONFIDENCE_BINS
    assert all(any(math.isclose(p, q) for q in QUANTILE_LEVELS) for p in drift.PERCENTILES)


# -- the shipped weights and profile -------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> tuple[Predictor, ImageGate]:
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS)
    profile = load_profile(DEFAULT_WEIGHTS, version=predictor.version)
    assert isinstance(profile, ReferenceProfile)
    return predictor, ImageGate(profile)


def _verdicts(shipped: tuple[Predictor, ImageGate], images: list[np.ndarray]) -> list[GateVerdict]:
    """As the service checks frames: metrics and edge layout from decode, the embedding."""
    predictor, gate = shipped
    _, embeddings = predictor.predict_with_embeddings(images)
    stats = [input_stats(im) for im in images]
    layouts = np.stack([s.edge_layout for s in stats])
    return gate.check_batch([s.metrics() for s in stats], embeddings, layouts)


def test_shipped_gate_passes_the_committed_samples(shipped: tuple[Predictor, ImageGate]) -> None:
    paths = sorted(SAMPLES.glob("*/*.png"))[::5]  # 10 of the 50, every class
    verdicts = _verdicts(shipped, [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths])
    assert [v.reasons for v in verdicts if not v.usable] == []


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("blank/black", GateCode.BLANK),
        ("blank/white", GateCode.BLANK),
        ("blank/grey", GateCode.BLANK),
        ("noise/salt_pepper", GateCode.NOISY),
        ("size/small_4_3", GateCode.SIZE),
        ("exposure/lamp_off", GateCode.BLANK),
        ("pose/tilted", None),  # refused, by the embedding or the metrics
        ("crop/half", None),  # a half of a phone stretched to fill the frame
        ("crop/zoom_centre", None),
        ("photo/grace_hopper", None),
    ],
)
def test_shipped_gate_refuses_off_distribution_frames(
    shipped: tuple[Predictor, ImageGate], source: str, code: GateCode | None
) -> None:
    frames = off_distribution_frames("held_out", 2, seed=0, sources=(source,))
    for verdict in _verdicts(shipped, [f.image for f in frames]):
        assert not verdict.usable
        if code is not None:
            assert verdict.code == code


def test_shipped_gate_refuses_a_phone_tilted_in_its_fixture_and_says_so(
    shipped: tuple[Predictor, ImageGate],
) -> None:
    """Phones turned by 18-25 degrees (the fixture allows 7): the embedding let them through
    before the tilt came in; clean parts turned by a few degrees still pass."""
    frames = off_distribution_frames("tuning", 3, seed=0, sources=("pose/tilted_slightly",))
    verdicts = _verdicts(shipped, [f.image for f in frames])
    assert all(GateCode.TILTED in v.codes for v in verdicts)
    tilted = [r for v in verdicts for r, c in zip(v.reasons, v.codes, strict=True) if c == "tilted"]
    assert all(r.startswith("part turned in its fixture: ") for r in tilted)
    sample = cv2.imread(str(sorted(SAMPLES.glob("ok/*.png"))[0]), cv2.IMREAD_COLOR)
    turn = cv2.getRotationMatrix2D((sample.shape[1] / 2, sample.shape[0] / 2), 3.0, 1.0)
    size = (sample.shape[1], sample.shape[0])
    slightly = cv2.warpAffine(sample, turn, size, borderMode=cv2.BORDER_REPLICATE)
    assert _verdicts(shipped, [slightly])[0].usable


def test_shipped_gate_refuses_a_phone_turned_sideways(
    shipped: tuple[Predictor, ImageGate],
) -> None:
    frames = off_distribution_frames("tuning", 2, seed=0, sources=("pose/turned_90",))
    verdicts = _verdicts(shipped, [f.image for f in frames])
    assert all(GateCode.OUT_OF_DISTRIBUTION in v.codes for v in verdicts)


def test_shipped_gate_refuses_a_part_cut_off_by_the_frame_and_says_so(
    shipped: tuple[Predictor, ImageGate],
) -> None:
    """A quarter of a phone zoomed to fill the frame, and a phone pushed a third of the way
    out of view: refused, and the framing rules (each end and side, and the ends together
    with the gradient balance) name the cut whatever else the gate also sees."""
    frames = off_distribution_frames("tuning", 3, seed=0, sources=("crop/corner", "pose/shifted"))
    verdicts = _verdicts(shipped, [f.image for f in frames])
    assert all(not v.usable for v in verdicts)
    named = [GateCode.FRAMING in v.codes for v in verdicts]
    assert all(named[:3]) and sum(named) >= 5  # every corner; a shifted phone may read blurred
    framing = [
        r for v in verdicts for r, c in zip(v.reasons, v.codes, strict=True) if c == "framing"
    ]
    assert all(r.startswith("part not whole in the frame") for r in framing)
    assert any("its outline is missing" in r for r in framing)
    assert any("or stretched (end balance" in r for r in framing)


def test_shipped_gate_refuses_a_half_phone_and_a_zoomed_in_centre_by_their_layout(
    shipped: tuple[Predictor, ImageGate],
) -> None:
    """The two frames that got through the gate before the edge layout and were then
    auto-decided (held-out seed 31, measured 2026-12-01): a half of a dark phone on a dark
    belt, stretched to fill the frame, and the zoomed-in centre of a phone. Each lies within
    every input metric's range and the embedding's; only where its edges lie gives it away."""
    half = off_distribution_frames("held_out", 11, seed=31, sources=("crop/half",))[10]
    centre = off_distribution_frames("held_out", 6, seed=31, sources=("crop/zoom_centre",))[5]
    verdicts = _verdicts(shipped, [half.image, centre.image])
    assert [v.codes for v in verdicts] == [(GateCode.LAYOUT,), (GateCode.LAYOUT,)]
    assert all(v.reasons[0].startswith("not laid out like a whole part") for v in verdicts)
