"""The bundled weights on the committed samples (data/samples, a seed training never used):
accuracy as the model card claims, and heatmaps that point at the defect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import binom

from data.dataset import load_dataset
from inspect_app.domain import DefectClass
from inspect_app.settings import SAMPLES_DIR
from models import DEFAULT_WEIGHTS
from models.evaluate import card_paths
from models.predictor import Predictor

pytestmark = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.exists(), reason="no bundled weights yet: run `make weights`"
)

# how far outside its box a heatmap's peak may fall: the map is built from stride-8
# activations and the box is drawn round the defect's own pixels
MARGIN_PX = 6


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.set_num_threads(1)
    return Predictor.from_checkpoint(None)


@pytest.fixture(scope="module")
def samples() -> list:
    import cv2

    items = load_dataset(SAMPLES_DIR)
    return [(item, cv2.imread(str(item.path), cv2.IMREAD_COLOR)) for item in items]


def test_samples_are_classified_as_accurately_as_the_card_claims(
    predictor: Predictor, samples: list
) -> None:
    card = json.loads(card_paths(DEFAULT_WEIGHTS)[1].read_text())
    assert card["version"] == predictor.version
    claimed = card["validation"]["binary_accuracy"]
    predictions = predictor.predict([image for _, image in samples])
    right = sum(
        (p.predicted_class == DefectClass.OK) == (item.label == DefectClass.OK)
        for (item, _), p in zip(samples, predictions, strict=True)
    )
    n = len(samples)
    # as few right answers as this (or fewer) must not be a 1-in-1000 event at the claimed rate
    assert binom.cdf(right, n, claimed) > 0.001, f"{right}/{n} right; the card claims {claimed:.3f}"


def test_heatmap_peaks_fall_in_the_defect_box(predictor: Predictor, samples: list) -> None:
    defects = [(item, image) for item, image in samples if item.label != DefectClass.OK]
    assert defects and all(item.boxes for item, _ in defects)
    predictions = predictor.predict([image for _, image in defects], heatmap=True)
    hits = []
    for (item, _), p in zip(defects, predictions, strict=True):
        assert p.heatmap is not None
        y, x = np.unravel_index(int(np.argmax(p.heatmap)), p.heatmap.shape)
        hits.append(
            any(
                x0 - MARGIN_PX <= x < x1 + MARGIN_PX and y0 - MARGIN_PX <= y < y1 + MARGIN_PX
                for x0, y0, x1, y1 in item.boxes
            )
        )
    share = sum(hits) / len(hits)
    assert share >= 0.75, f"peak in box on {sum(hits)} of {len(hits)} defect samples"
