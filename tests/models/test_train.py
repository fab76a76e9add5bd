"""Training on tiny data: the loop learns, splits are disjoint, the checkpoint loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspect_app.domain import CLASS_NAMES
from models.predictor import Predictor
from models.train import (
    Augmenter,
    TrainConfig,
    defect_crops,
    distill_loss,
    fit,
    locator_loss,
    prior_preserving_weights,
    rehearsal_order,
    rehearsal_rates,
    stratified_split,
    time_split,
)

SIZE = 48


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _toy_images(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Grey noisy plates (ok) and plates with a dark diagonal line (scratch), 48x48 RGB."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    images = rng.normal(140, 6, size=(n, 3, SIZE, SIZE))
    for i in np.flatnonzero(labels == 1):
        offset = rng.integers(-12, 12)
        for r in range(6, SIZE - 6):
            c = int(np.clip(r + offset, 0, SIZE - 2))
            images[i, :, r, c : c + 2] -= 50
    return torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8)), labels


def test_tiny_training_run_learns(tmp_path: Path) -> None:
    images, labels = _toy_images(96, seed=0)
    config = TrainConfig(
        data=tmp_path, out=tmp_path / "toy.pt", epochs=8, batch_size=8, lr=1e-2,
        width_mult=0.25, input_size=SIZE, val_fraction=0.25, calib_fraction=0.25, seed=0,
    )  # fmt: skip
    result = fit(config, images, labels)

    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert result.report is not None
    assert result.report.binary_accuracy > 0.75  # chance is 0.5
    assert result.model_card.exists() and result.model_card.with_suffix(".json").exists()

    predictor = Predictor.from_checkpoint(result.checkpoint)
    assert predictor.version == result.version
    assert predictor.input_size == SIZE
    test_images, test_labels = _toy_images(40, seed=1)
    bgr = [im.permute(1, 2, 0).numpy()[:, :, ::-1].copy() for im in test_images]
    predicted = [p.predicted_class for p in predictor.predict(bgr)]
    right = sum(p == CLASS_NAMES[t] for p, t in zip(predicted, test_labels, strict=True))
    assert right / len(test_labels) > 0.75


def test_splits_are_disjoint_stratified_and_deterministic() -> None:
    labels = np.array([0] * 40 + [1] * 20 + [2] * 20)
    train, val, calib = stratified_split(labels, [0.1, 0.2], seed=3)
    assert len(set(train) | set(val) | set(calib)) == len(labels)
    assert not (set(train) & set(val)) and not (set(val) & set(calib))
    assert np.bincount(labels[val]).tolist() == [4, 2, 2]
    assert np.bincount(labels[calib]).tolist() == [8, 4, 4]
    again = stratified_split(labels, [0.1, 0.2], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, calib), again, strict=True))


def test_augmentation_keeps_a_dark_line_visible() -> None:
    images, labels = _toy_images(16, seed=2)
    x = images.to(torch.float32)
    mask = torch.zeros(16, 1, SIZE, SIZE)
    mask[:, :, 10:20, 30:40] = 1.0
    out, out_mask = Augmenter(SIZE, torch.Generator().manual_seed(0))(x.clone(), mask.clone())
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    # the mask moves with the image (flips, warps) but keeps its area
    assert out_mask.shape == mask.shape
    assert torch.allclose(out_mask.sum(dim=(1, 2, 3)), mask.sum(dim=(1, 2, 3)), rtol=0.25)
    # every scratched plate still has pixels far darker than its own median
    for img, label in zip(out, labels, strict=True):
        grey = img.mean(0)
        darkest = float(grey.flatten().kthvalue(20).values)
        gap = float(grey.median()) - darkest
        assert (gap > 25) == bool(label), f"label {label}: gap {gap:.1f}"


def test_defect_crops_keep_the_defect_in_the_window() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = [[], [(10, 20, 30, 40)], [(0, 0, 200, 60)], [(240, 250, 246, 256)]]
    for _ in range(50):
        origins = defect_crops([0, 1, 2, 3], boxes, 256, 128, 0, generator)
        for (top, left), image_boxes in zip(origins, boxes, strict=True):
            assert 0 <= top <= 128 and 0 <= left <= 128
            for x0, y0, x1, y1 in image_boxes:
                # small boxes whole; a box wider than the window keeps its central half
                assert top <= y0 and y1 <= top + 128
                cx, quarter = (x0 + x1) / 2, (x1 - x0) / 4
                if x1 - x0 <= 128:
                    assert left <= x0 and x1 <= left + 128
                else:
                    assert left <= cx - quarter and cx + quarter <= left + 128


def test_locator_loss_rewards_the_right_cell() -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 20:24, 40:44] = 1.0  # a pit in cell (1, 2) of a 4x4 grid of 16-px cells
    labels, located = torch.tensor([3]), torch.tensor([True])  # pit: defect channel 2
    right = torch.full((1, 4, 4, 4), -5.0)
    right[0, 2, 1, 2] = 5.0
    wrong = torch.full((1, 4, 4, 4), -5.0)
    wrong[0, 2, 3, 3] = 5.0
    assert locator_loss(right, mask, labels, located, 0) < locator_loss(
        wrong, mask, labels, located, 0
    )
    # an image whose defect place is unknown teaches the locator nothing
    assert locator_loss(wrong, mask, labels, torch.tensor([False]), 0) == 0


# -- retraining options (issue 12): time splits, sample weights, fine-tuning, several folders


def test_time_split_puts_the_newest_in_validation_and_never_later_in_training() -> None:
    rng = np.random.default_rng(5)
    for n in (3, 7, 40, 101):
        times = rng.permutation(n).astype(float) + rng.integers(0, 3, n)  # with ties
        train, val, calib = time_split(times, val_fraction=0.2, calib_fraction=0.15)
        assert sorted([*train, *val, *calib]) == list(range(n))
        assert len(val) >= 1 and len(calib) >= 1
        assert times[train].max() <= times[calib].min() <= times[calib].max() <= times[val].min()
    again = time_split(times, val_fraction=0.2, calib_fraction=0.15)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, calib), again, strict=True))


def _toy_config(tmp_path: Path, name: str, **changes: object) -> TrainConfig:
    settings: dict[str, object] = dict(
        data=tmp_path, out=tmp_path / name, epochs=2, batch_size=8, lr=1e-2, width_mult=0.25,
        input_size=SIZE, val_fraction=0.25, calib_fraction=0.25, seed=0,
    )  # fmt: skip
    return TrainConfig(**(settings | changes))  # type: ignore[arg-type]


def test_fit_takes_explicit_splits_weights_and_reports_subsets(tmp_path: Path) -> None:
    images, labels = _toy_images(48, seed=0)
    splits = (np.arange(0, 32), np.arange(40, 48), np.arange(32, 40))
    weights = np.where(np.arange(48) >= 24, 3.0, 1.0)
    result = fit(
        _toy_config(tmp_path, "split.pt"), images, labels, splits=splits,
        sample_weights=weights, val_subsets={"newest": np.arange(44, 48)},
    )  # fmt: skip
    metrics = torch.load(result.checkpoint, weights_only=True)["metrics"]
    assert metrics["val_images"] == 8 and metrics["calib_images"] == 8
    assert metrics["validation_subsets"]["newest"]["n"] == 4
    assert "newest" in result.model_card.read_text()
    with pytest.raises(ValueError, match="disjoint"):
        fit(_toy_config(tmp_path, "bad.pt"), images, labels,
            splits=(np.arange(0, 40), np.arange(39, 44), np.arange(44, 48)))  # fmt: skip
    with pytest.raises(ValueError, match="positive"):
        fit(_toy_config(tmp_path, "bad.pt"), images, labels, sample_weights=np.zeros(48))


def test_fine_tuning_starts_from_the_parents_weights_and_input(tmp_path: Path) -> None:
    images, labels = _toy_images(48, seed=0)
    parent = fit(_toy_config(tmp_path, "parent.pt"), images, labels)
    child = fit(
        _toy_config(tmp_path, "child.pt", init_from=parent.checkpoint, epochs=1,
                    notes={"parent_version": parent.version}),
        images, labels,
    )  # fmt: skip
    saved = torch.load(child.checkpoint, weights_only=True)
    parent_saved = torch.load(parent.checkpoint, weights_only=True)
    assert saved["preprocessing"] == parent_saved["preprocessing"]  # normalisation kept
    assert saved["metrics"]["init_from"] == parent.version
    assert saved["metrics"]["parent_version"] == parent.version
    assert child.version != parent.version
    with pytest.raises(ValueError, match="px"):
        small = images[:, :, :32, :32].contiguous()
        fit(_toy_config(tmp_path, "c2.pt", init_from=parent.checkpoint), small, labels)


def test_prior_preserving_weights_keep_the_base_class_mix_and_the_plants_weight() -> None:
    # base: 40 ok + 60 scratch, weight 1; plant: 96 ok + 4 scratch, weight 3 (a line's mix)
    labels = np.array([0] * 40 + [1] * 60 + [0] * 96 + [1] * 4)
    weights = np.array([1.0] * 100 + [3.0] * 100)
    train, base = np.arange(200), np.arange(100)
    ok_share = weights[labels == 0].sum() / weights.sum()
    assert ok_share > 0.7  # the plant's weight alone would move the prior to 82% ok

    kept = prior_preserving_weights(labels, weights, train, base)
    assert kept[labels == 0].sum() / kept.sum() == pytest.approx(0.4)  # the base data's mix
    assert kept.sum() == pytest.approx(weights.sum())
    # within a class, a plant label still counts three base images
    assert kept[100] / kept[0] == pytest.approx(3.0) and kept[199] / kept[99] == pytest.approx(3.0)
    # images outside `train` keep their weights; a class the base lacks keeps its own
    labels3 = np.append(labels, [2, 2])
    out = prior_preserving_weights(labels3, np.append(weights, [2.0, 2.0]), np.arange(202), base)
    assert out[200] == out[201] == pytest.approx(2.0)
    assert out[:200][labels == 0].sum() / out[:200].sum() == pytest.approx(0.4)


def test_distillation_is_zero_on_the_parents_answers_and_only_counts_picked_images() -> None:
    teacher = torch.nn.Linear(4, 3)
    xb = torch.randn(6, 4)
    with torch.no_grad():
        same = teacher(xb)
    picked = torch.tensor([True, True, False, False, True, False])
    assert float(distill_loss(teacher, xb, same, picked, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = same.clone()
    other[2] += torch.tensor([5.0, -5.0, 0.0])  # an image that is not picked
    assert float(distill_loss(teacher, xb, other, picked, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other[0] += torch.tensor([5.0, -5.0, 0.0])
    assert float(distill_loss(teacher, xb, other, picked, 2.0)) > 0.1
    assert float(distill_loss(teacher, xb, other, torch.zeros(6, dtype=torch.bool), 2.0)) == 0


def test_a_distilled_fine_tune_stays_closer_to_its_parent(tmp_path: Path) -> None:
    images, labels = _toy_images(48, seed=0)
    parent = fit(_toy_config(tmp_path, "parent.pt", epochs=4), images, labels)
    flipped = 1 - labels  # labels that contradict the parent everywhere
    answers = {}
    for name, weight in (("free.pt", 0.0), ("distilled.pt", 5.0)):
        child = fit(
            _toy_config(tmp_path, name, init_from=parent.checkpoint, epochs=2, lr=3e-3,
                        distill_weight=weight),
            images, flipped, distill=np.ones(48, dtype=bool),
        )  # fmt: skip
        predictor = Predictor.from_checkpoint(child.checkpoint)
        bgr = [im.permute(1, 2, 0).numpy()[:, :, ::-1].copy() for im in images]
        answers[name] = [p.predicted_class for p in predictor.predict(bgr)]
    truth = [CLASS_NAMES[t] for t in labels]
    agree = {k: sum(a == t for a, t in zip(v, truth, strict=True)) for k, v in answers.items()}
    assert agree["distilled.pt"] > agree["free.pt"]


def test_rehearsal_batches_hold_the_base_share_and_go_round_each_kind() -> None:
    train = np.arange(40)
    is_base = np.arange(60) < 30  # training: 30 base, 10 others (20 images not in training)
    batches = rehearsal_order(
        train,
        is_base,
        batch_size=8,
        share=0.75,
        steps=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(batches) == 10 and all(len(b) == 8 for b in batches)
    assert all(int(is_base[b.numpy()].sum()) == 6 for b in batches)  # 0.75 of 8
    drawn = torch.cat(batches).numpy()
    assert set(drawn) <= set(train)
    base_drawn = drawn[is_base[drawn]]
    assert sorted(base_drawn[:30]) == list(range(30))  # every base image once before a repeat
    others = drawn[~is_base[drawn]]
    assert sorted(others[:10]) == list(range(30, 40)) and len(others) == 20
    with pytest.raises(ValueError, match="base images and other"):
        rehearsal_order(np.arange(30), is_base, batch_size=8, share=0.5, steps=1,
                        generator=torch.Generator())  # fmt: skip


def test_rehearsal_keeps_the_class_mix_at_its_sampling_rates() -> None:
    # base: 60 ok / 40 defect; plant: 95 ok / 5 defect, weight 3; rehearsal at 0.5
    labels = np.array([0] * 60 + [1] * 40 + [0] * 95 + [1] * 5)
    is_base = np.arange(200) < 100
    train = np.arange(200)
    rates = rehearsal_rates(is_base, train, 32, 0.5)
    assert rates[0] == pytest.approx(1.0) and rates[150] == pytest.approx(1.0)  # half and half
    rates = rehearsal_rates(is_base, train, 32, 0.75)
    assert rates[0] == pytest.approx(1.5) and rates[150] == pytest.approx(0.5)
    weights = np.where(is_base, 1.0, 3.0)
    seen = prior_preserving_weights(labels, weights * rates, train, np.arange(100))
    assert seen[labels == 0].sum() / seen.sum() == pytest.approx(0.6)


def test_a_rehearsed_fine_tune_trains_on_batches_with_the_stated_base_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.train as train_module

    images, labels = _toy_images(64, seed=0)
    parent = fit(_toy_config(tmp_path, "parent.pt"), images, labels)
    is_base = np.arange(64) < 40  # the first 40 are the base data, the rest the plant's
    drawn: list[list[torch.Tensor]] = []
    real = train_module.rehearsal_order

    def spy(*args: object, **kwargs: object) -> list[torch.Tensor]:
        drawn.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return drawn[-1]

    monkeypatch.setattr(train_module, "rehearsal_order", spy)
    child = fit(
        _toy_config(tmp_path, "child.pt", init_from=parent.checkpoint, epochs=2,
                    base_share=0.5, distill_weight=1.0),
        images, labels, base=is_base, distill=is_base,
    )  # fmt: skip
    assert len(drawn) == 2  # one order per epoch
    train = 32  # 64 images, a quarter each to validation and calibration
    for epoch in drawn:
        assert len(epoch) == train // 8
        assert all(len(b) == 8 and int(is_base[b.numpy()].sum()) == 4 for b in epoch)
    saved = torch.load(child.checkpoint, weights_only=True)
    assert saved["metrics"]["train_config"]["base_share"] == 0.5
    with pytest.raises(ValueError, match="base images marked"):
        fit(_toy_config(tmp_path, "bad.pt", base_share=0.5), images, labels)
    with pytest.raises(ValueError, match="base_share"):
        _toy_config(tmp_path, "bad.pt", base_share=1.0)
