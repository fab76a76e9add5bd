"""The reference profile: its statistics, its file, and re-deriving it from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA

from data.synth import generate_dataset
from inspect_app.domain import CLASS_NAMES
from inspect_app.imaging import input_stats
from models.predictor import Predictor
from models.profile import (
    JOINT_METRICS,
    LAYOUT_GRID,
    QUANTILE_LEVELS,
    EmbeddingModel,
    LayoutReference,
    ProfileConfig,
    ProfileError,
    ReferenceProfile,
    _decode,
    compute_profile,
    edge_layout,
    load_profile,
    profile_from_outputs,
    profile_path,
    write_profile,
)
from models.train import TrainConfig, profile_checkpoint, train_model, training_splits


def _toy_profile(n: int = 60, d: int = 12, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(len(CLASS_NAMES)), size=n)
    embeddings = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)
    metrics = [{"brightness": float(b), "contrast": float(c)} for b, c in rng.normal(90, 9, (n, 2))]
    return profile_from_outputs(
        probabilities, embeddings, metrics, model_version="v-test", source="toy",
        extra={"split_seed": 3},
    )  # fmt: skip


def test_profile_round_trips_through_json() -> None:
    profile = _toy_profile()
    again = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))

    assert again.model_version == "v-test" and again.n_images == 60
    assert again.metric_quantiles == profile.metric_quantiles
    assert again.ood_quantiles == profile.ood_quantiles
    assert again.p_defect_histogram == profile.p_defect_histogram
    assert again.extra == {"split_seed": 3}
    probe = np.random.default_rng(1).normal(size=(5, 12))
    # arrays travel as float32: distances agree to float32 precision
    np.testing.assert_allclose(
        again.embedding.distance(probe), profile.embedding.distance(probe), rtol=1e-5
    )
    np.testing.assert_allclose(
        again.reference_coordinates, profile.reference_coordinates, rtol=2e-3, atol=2e-3
    )


def test_profile_summarises_what_it_was_given() -> None:
    profile = _toy_profile()
    for values in profile.metric_quantiles.values():
        assert len(values) == len(QUANTILE_LEVELS)
        assert list(values) == sorted(values)
    assert profile.metric_quantile("brightness", 0.5) == pytest.approx(90, abs=4)
    assert list(profile.ood_quantiles) == sorted(profile.ood_quantiles)
    assert sum(profile.p_defect_histogram) == sum(profile.confidence_histogram) == 60
    assert sum(profile.predicted_class_rates.values()) == pytest.approx(1.0)
    assert 0.0 <= profile.predicted_defect_rate <= 1.0


def test_joint_metrics_are_a_gaussian_of_the_pair_with_a_cross_fitted_reference() -> None:
    """End and gradient balance together: sklearn's Mahalanobis distance of the pair, a
    reference that fresh frames from the same distribution exceed at about its own rate, a
    JSON round trip; metric rows without the pair make no joint check."""
    rng = np.random.default_rng(5)
    n = 400
    pair = rng.multivariate_normal([0.0, 0.7], [[0.16, 0.05], [0.05, 0.09]], size=n)
    rows = [{"end_balance": float(e), "gradient_balance": float(g)} for e, g in pair]
    profile = profile_from_outputs(
        rng.dirichlet(np.ones(len(CLASS_NAMES)), size=n), rng.normal(size=(n, 6)), rows,
        model_version="v", source="toy",
    )  # fmt: skip
    joint = profile.joint_metrics
    assert joint is not None and joint.metrics == JOINT_METRICS
    expected = np.sqrt(EmpiricalCovariance().fit(pair).mahalanobis(pair[:5]))
    np.testing.assert_allclose(joint.distance(pair[:5]), expected, rtol=1e-9)
    fresh = rng.multivariate_normal([0.0, 0.7], [[0.16, 0.05], [0.05, 0.09]], size=4000)
    assert np.mean(joint.distance(fresh) > joint.quantile(0.9)) == pytest.approx(0.1, abs=0.04)
    # inside each one's own range, together where the reference has no frame
    assert joint.distance(np.array([[0.8, 0.2]]))[0] > joint.quantile(0.999)

    again = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.joint_metrics is not None and again.joint_metrics.quantiles == joint.quantiles
    np.testing.assert_allclose(again.joint_metrics.distance(fresh[:9]), joint.distance(fresh[:9]),
                               rtol=1e-5)  # fmt: skip
    assert _toy_profile().joint_metrics is None  # brightness and contrast only


def test_edge_layout_says_where_the_edges_lie_whatever_the_lamp() -> None:
    """A bright rectangle on a dark ground: its layout is standardised, does not change with
    the lamp's level or the colour, moves with the rectangle, and a flat frame has none."""
    frame = np.full((256, 256, 3), 40, dtype=np.uint8)
    frame[40:216, 80:176] = 160  # a phone-shaped rectangle, 70% of the height
    layout = edge_layout(frame)
    assert layout.shape == (LAYOUT_GRID * LAYOUT_GRID,) and layout.dtype == np.float32
    assert float(layout.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(layout.std()) == pytest.approx(1.0, abs=1e-4)
    dimmer = (frame.astype(np.float64) * 0.6).astype(np.uint8)
    np.testing.assert_allclose(edge_layout(dimmer), layout, atol=0.05)
    np.testing.assert_array_equal(edge_layout(frame[:, :, 0]), edge_layout(frame))
    moved = np.roll(frame, 60, axis=1)
    assert float(np.abs(edge_layout(moved) - layout).max()) > 1.0
    assert not edge_layout(np.full((256, 256, 3), 90, dtype=np.uint8)).any()


def test_layout_reference_is_cross_fitted_and_round_trips() -> None:
    """The layout's PPCA scores fresh layouts from the same distribution beyond a reference
    quantile at about that rate (cross-fitted), and travels through JSON."""
    rng = np.random.default_rng(6)
    scale = np.linspace(3.0, 0.3, 40)
    layout = LayoutReference.fit(rng.normal(size=(300, 40)) * scale, ProfileConfig())
    fresh = rng.normal(size=(4000, 40)) * scale
    assert np.mean(layout.distance(fresh) > layout.quantile(0.9)) == pytest.approx(0.1, abs=0.04)
    assert list(layout.quantiles) == sorted(layout.quantiles)
    again = LayoutReference.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again.quantiles == layout.quantiles
    np.testing.assert_allclose(again.distance(fresh[:9]), layout.distance(fresh[:9]), rtol=1e-5)
    assert _toy_profile().layout is None  # no layouts given: no layout check


def test_ppca_distance_is_the_mahalanobis_distance_of_sklearns_ppca() -> None:
    x = np.random.default_rng(2).normal(size=(300, 10)) @ np.diag(np.linspace(4, 0.2, 10))
    model = EmbeddingModel.fit(x, components=4)
    pca = PCA(n_components=4, svd_solver="full").fit(x)
    probe = np.random.default_rng(3).normal(size=(6, 10)) * 3
    centred = probe - pca.mean_
    expected = np.sqrt(np.einsum("bi,ij,bj->b", centred, pca.get_precision(), centred))
    np.testing.assert_allclose(model.distance(probe), expected, rtol=1e-6)
    assert model.distance(pca.mean_[None])[0] == pytest.approx(0.0, abs=1e-9)


def test_cross_fitted_reference_is_not_fooled_by_its_own_images() -> None:
    # a PPCA scores the images it was fitted on closer than fresh ones; the stored reference
    # is what fresh images from the same distribution score, so its quantiles mean what they say
    rng = np.random.default_rng(4)
    embeddings = rng.normal(size=(80, 40))
    profile = profile_from_outputs(
        rng.dirichlet(np.ones(5), size=80), embeddings, [{"brightness": 1.0}] * 80,
        model_version="v", source="toy",
    )  # fmt: skip
    in_sample = profile.embedding.distance(embeddings)
    fresh = profile.embedding.distance(rng.normal(size=(2000, 40)))
    assert np.median(in_sample) < 0.9 * profile.ood_quantile(0.5)
    assert np.mean(fresh > np.quantile(in_sample, 0.9)) > 0.5
    assert np.mean(fresh > profile.ood_quantile(0.9)) < 0.25


def test_compute_profile_runs_the_predictor_like_the_service(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(5)
    images = [rng.integers(60, 200, (48, 56, 3), dtype=np.uint8) for _ in range(12)]
    profile = compute_profile(
        predictor, images, [input_stats(im).metrics() for im in images], source="noise"
    )
    assert profile.model_version == predictor.version
    assert profile.n_images == 12
    assert profile.embedding.dimension == predictor.predict_with_embeddings(images[:1])[1].shape[1]
    assert profile.metric_quantile("width", 0.5) == 56
    assert "sharpness" in profile.metric_quantiles
    # the edge layouts, measured here as the service's input_stats measures them
    assert profile.layout is not None
    assert profile.layout.model.dimension == LAYOUT_GRID * LAYOUT_GRID
    np.testing.assert_allclose(
        profile.layout.distance(np.stack([input_stats(im).edge_layout for im in images[:2]])),
        profile.layout.distance(np.stack([edge_layout(im) for im in images[:2]])),
    )


def test_load_profile_finds_the_sidecar_and_refuses_another_models(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    assert profile_path(checkpoint) == tmp_path / "model.profile.json"
    assert load_profile(checkpoint) is None

    write_profile(_toy_profile(), checkpoint)
    assert load_profile(checkpoint, version="v-test") is not None
    with pytest.raises(ProfileError, match="made for model v-test"):
        load_profile(checkpoint, version="v-other")
    profile_path(checkpoint).write_text("{}")
    with pytest.raises(ProfileError, match="not a reference profile"):
        load_profile(checkpoint)


def _assert_close(a: object, b: object, *, rtol: float) -> None:
    """The same nested structure, every number within `rtol`, everything else equal."""
    if isinstance(a, dict) and isinstance(b, dict) and {"float16", "float32"} & a.keys():
        np.testing.assert_allclose(_decode(a), _decode(b), rtol=rtol, atol=1e-7)  # an array
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key], rtol=rtol)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close(x, y, rtol=rtol)
    elif isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        assert a == pytest.approx(b, rel=rtol)
    else:
        assert a == b


def test_training_writes_the_profile_and_the_command_re_derives_the_same_split(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    data = tmp_path / "data"
    generate_dataset(data, n=60, seed=5)
    config = TrainConfig(
        data=data, out=tmp_path / "m.pt", epochs=1, batch_size=8, width_mult=0.25,
        input_size=48, val_fraction=0.2, calib_fraction=0.3, seed=3,
    )  # fmt: skip
    metrics = lambda image: input_stats(image).metrics()  # noqa: E731
    result = train_model(config, input_metrics=metrics)

    assert result.profile == profile_path(config.out) and result.profile.is_file()
    written = load_profile(config.out, version=result.version)
    assert written is not None and written.n_images == len(result.calib_indices)

    # the split the profile command re-derives is the one training drew, index for index
    from data.dataset import load_dataset

    labels = np.array([CLASS_NAMES.index(it.label) for it in load_dataset(data)])
    again = training_splits(labels, seed=3, val_fraction=0.2, calib_fraction=0.3)[2]
    np.testing.assert_array_equal(again, result.calib_indices)

    # ...and regenerating the profile without retraining gives the same profile
    remade, path = profile_checkpoint(config.out, data, metrics)
    assert path == result.profile
    again_dict, written_dict = remade.to_dict(), written.to_dict()
    # the edge layout's reference on 19 images is ill-conditioned (more PPCA directions than a
    # fold leaves room for): OpenCV's float32 resizes and BLAS vary in the last bits between
    # runs, which its distances (~3e4) magnify to ~1e-8 relative, so it is compared to 1e-6
    _assert_close(again_dict.pop("layout"), written_dict.pop("layout"), rtol=1e-6)
    assert again_dict == written_dict  # everything else exactly
    assert "split seed 3" in remade.source

    other = tmp_path / "other"
    generate_dataset(other, n=40, seed=6)
    with pytest.raises(ValueError, match="trained on 60"):
        profile_checkpoint(config.out, other, metrics)
