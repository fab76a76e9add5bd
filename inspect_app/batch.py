"""Batch inspection: every file under a folder through the model, one CSV row per file.

For re-inspecting a lot offline or checking a new model on a folder of images. Files are
decoded and validated by `inspect_app.imaging.decode_image`, the same code the service's
camera endpoint uses, so a file the service would refuse (not an image, truncated JPEG,
decompression bomb) gets a row with the reason here too, never a crash.

Files that are not meant as images at all (a README, a manifest.csv, a camera's .txt log:
neither an image's name nor an image's first bytes) are skipped without a row and counted in
the summary, so a dataset folder can be inspected as it is. A file named as an image, or
starting like one, that does not decode is an error row: that is a broken image.

`decision_if_automated` is what a line at `partial` automation with the given thresholds
would have been told (`pass`, `fail`, or `pending` for a human), via
`inspect_app.routing.route_inspection`, so the CSV answers "what would automation have done".
"""

from __future__ import annotations

import csv
import logging
import os
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.dataset import IMAGE_SUFFIXES
from inspect_app.domain import AutomationLevel, LinePolicy, Prediction
from inspect_app.imaging import ImageRejected, decode_image, sniff_format
from inspect_app.routing import route_inspection
from inspect_app.settings import Settings
from models.predictor import Predictor

log = logging.getLogger(__name__)

_LIMITS = Settings.model_fields
MAX_IMAGE_BYTES: int = _LIMITS["max_image_bytes"].default
MAX_IMAGE_PIXELS: int = _LIMITS["max_image_pixels"].default


@dataclass(frozen=True)
class BatchSummary:
    output_csv: Path
    files: int  # rows written
    inspected: int  # rows with a prediction
    errors: int  # rows with an error instead
    skipped: int  # files that are not images by name or content: no row
    model_version: str
    predicted: dict[str, int] = field(default_factory=dict)  # class -> count
    decisions: dict[str, int] = field(default_factory=dict)  # pass/fail/pending -> count


def list_files(input_dir: Path) -> list[Path]:
    """Every regular file below `input_dir`, sorted by relative path, so reruns give the same
    row order on any machine."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise NotADirectoryError(f"{input_dir} is not a folder")
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        found.extend(Path(root) / f for f in files)
    return sorted(found, key=lambda p: p.relative_to(input_dir).as_posix())


_SNIFF_BYTES = 32  # enough for every header `sniff_format` reads


def is_image_file(path: Path) -> bool:
    """Named like an image, or starting like one (a camera's files may have no extension)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False  # unreadable and not named as an image: nothing says it is one
    return sniff_format(head) is not None


def _read(path: Path) -> np.ndarray:
    """Decode one file like the camera endpoint would; raises ImageRejected or OSError."""
    data = path.read_bytes()
    return decode_image(data, None, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS).image


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_batch_inspection(
    input_dir: Path,
    output_csv: Path,
    *,
    checkpoint: Path | None = None,
    progress: bool = False,
    batch_size: int = 16,
    pass_threshold: float = LinePolicy.pass_threshold,
    fail_threshold: float = LinePolicy.fail_threshold,
) -> BatchSummary:
    """Inspect every file under `input_dir` and write `output_csv`; returns the counts."""
    input_dir, output_csv = Path(input_dir), Path(output_csv)
    candidates = [p for p in list_files(input_dir) if p.resolve() != output_csv.resolve()]
    files = [p for p in candidates if is_image_file(p)]
    skipped = len(candidates) - len(files)
    predictor = Predictor.from_checkpoint(checkpoint)
    policy = LinePolicy(
        level=AutomationLevel.PARTIAL,
        pass_threshold=pass_threshold,
        fail_threshold=fail_threshold,
        audit_rate=0.0,
    )
    columns = [
        "file",
        "predicted_class",
        "confidence",
        "p_defect",
        "decision_if_automated",
        *[f"p_{c}" for c in predictor.class_names],
        "model_version",
        "error",
    ]
    predicted: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    errors = 0
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_csv.with_name(output_csv.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        bar = tqdm(total=len(files), desc="inspect", unit="img", disable=not progress)
        for chunk in _chunks(files, batch_size):
            rows: dict[Path, dict[str, object]] = {}
            decoded: dict[Path, np.ndarray] = {}
            for path in chunk:
                rows[path] = {"file": path.relative_to(input_dir).as_posix(), "error": ""}
                try:
                    decoded[path] = _read(path)
                except ImageRejected as exc:
                    rows[path]["error"] = exc.detail
                except OSError as exc:
                    rows[path]["error"] = f"cannot read file: {exc.strerror or exc}"
                except (ValueError, struct.error) as exc:  # a header too mangled to parse
                    rows[path]["error"] = f"corrupt image: {exc}"
            if decoded:
                predictions = predictor.predict(list(decoded.values()))
                for path, prediction in zip(decoded, predictions, strict=True):
                    rows[path].update(_prediction_columns(prediction, policy))
                    predicted[prediction.predicted_class] += 1
                    decisions[str(rows[path]["decision_if_automated"])] += 1
            for path in chunk:
                if rows[path]["error"]:
                    errors += 1
                    log.warning("batch: %s: %s", rows[path]["file"], rows[path]["error"])
                writer.writerow(rows[path])
            bar.update(len(chunk))
        bar.close()
    tmp.replace(output_csv)
    summary = BatchSummary(
        output_csv=output_csv,
        files=len(files),
        inspected=len(files) - errors,
        errors=errors,
        skipped=skipped,
        model_version=predictor.version,
        predicted=dict(predicted),
        decisions=dict(decisions),
    )
    log.info(
        "batch inspection of %s with %s: %d files, %d inspected, %d errors, %d skipped "
        "(not images) -> %s",
        input_dir, predictor.version, summary.files, summary.inspected, errors, skipped,
        output_csv,
    )  # fmt: skip
    return summary


def _prediction_columns(prediction: Prediction, policy: LinePolicy) -> dict[str, object]:
    outcome = route_inspection(prediction, policy, draw=1.0)  # draw 1.0: no audit lottery
    return {
        "predicted_class": prediction.predicted_class,
        "confidence": f"{prediction.confidence:.6f}",
        "p_defect": f"{prediction.p_defect:.6f}",
        "decision_if_automated": outcome.decision.value,
        **{f"p_{c}": f"{p:.6f}" for c, p in prediction.probabilities.items()},
        "model_version": prediction.model_version,
    }
