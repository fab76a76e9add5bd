"""How good the model is, in the figures the plant decides on, and the model card.

`evaluate_probabilities` is pure (probabilities + labels -> `EvaluationReport`); training
calls it on its validation split and `inspect-app evaluate` on a fresh test set, so the
model card and the command line print the same figures computed the same way.

The line's decision is binary (ok passes, any defect fails), so the headline figures are
binary: accuracy, defect recall (1 - escape rate), and, because automation acts only on
confident predictions, the share of images with calibrated confidence >= 0.95 and the
binary error among them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.stats import binomtest
from tqdm import tqdm

from inspect_app.domain import CLASS_NAMES, DefectClass
from models.calibrate import expected_calibration_error
from models.defect_cnn import DefectCNNConfig
from models.preprocess import Preprocessing

if TYPE_CHECKING:
    from models.predictor import Predictor

log = logging.getLogger(__name__)

CONFIDENT = 0.95  # the confidence the targets are stated at


@dataclass(frozen=True)
class ClassFigures:
    precision: float | None  # None: the model never predicted this class
    recall: float | None  # None: no image of this class
    support: int  # images of this class
    predicted: int  # images the model put in this class


@dataclass(frozen=True)
class EvaluationReport:
    n: int
    accuracy: float  # five-class
    binary_accuracy: float  # ok vs defect
    binary_accuracy_ci95: tuple[float, float]  # Clopper-Pearson
    defect_recall: float | None  # of the defective parts, the share called a defect
    defect_recall_ci95: tuple[float, float]
    false_reject_rate: float | None  # of the ok parts, the share called a defect
    ece: float  # top-label, 15 bins
    nll: float
    confident_share: float  # images with top-class confidence >= 0.95
    confident_count: int
    confident_binary_error: float | None  # binary error among those
    confident_binary_errors: int
    binary_confident_share: float  # images with max(P(ok), P(defect)) >= 0.95 (what routing uses)
    binary_confident_error: float | None
    per_class: dict[str, ClassFigures] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted

    def to_dict(self) -> dict:
        d = asdict(self)
        d["binary_accuracy_ci95"] = list(self.binary_accuracy_ci95)
        d["defect_recall_ci95"] = list(self.defect_recall_ci95)
        return d

    def summary(self) -> str:
        """The report as a plant engineer reads it on a terminal."""

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        lo, hi = self.binary_accuracy_ci95
        rlo, rhi = self.defect_recall_ci95
        lines = [
            f"images                        {self.n}",
            f"binary accuracy (ok/defect)   {pct(self.binary_accuracy)}"
            f"  (95% CI {pct(lo)} - {pct(hi)})",
            f"defect recall                 {pct(self.defect_recall)}"
            f"  (95% CI {pct(rlo)} - {pct(rhi)})",
            f"false-reject rate             {pct(self.false_reject_rate)}",
            f"5-class accuracy              {pct(self.accuracy)}",
            f"ECE (15 bins)                 {self.ece:.4f}",
            f"NLL                           {self.nll:.4f}",
            f"confidence >= {CONFIDENT}          {pct(self.confident_share)} of images "
            f"({self.confident_count}); binary error among them "
            f"{pct(self.confident_binary_error)} ({self.confident_binary_errors})",
            f"max(P(ok),P(defect)) >= {CONFIDENT} {pct(self.binary_confident_share)} of images; "
            f"binary error among them {pct(self.binary_confident_error)}",
            "",
            f"{'class':<15}{'precision':>10}{'recall':>10}{'support':>9}{'predicted':>11}",
        ]
        for name, f in self.per_class.items():
            lines.append(
                f"{name:<15}{pct(f.precision):>10}{pct(f.recall):>10}{f.support:>9}{f.predicted:>11}"
            )
        return "\n".join(lines)


def _exact_ci95(successes: int, n: int) -> tuple[float, float]:
    """Two-sided 95% Clopper-Pearson interval: the exact binomial interval the service's
    evidence figures use too, so a model card and the supervisor's page never disagree."""
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def evaluate_probabilities(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> EvaluationReport:
    """(N, C) calibrated probabilities and (N,) true class indices -> the figures."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != len(class_names) or labels.shape != (probs.shape[0],):
        raise ValueError(
            f"probs {probs.shape} / labels {labels.shape} / {len(class_names)} classes"
        )
    n = len(labels)
    if n == 0:
        raise ValueError("nothing to evaluate")
    ok = list(class_names).index(DefectClass.OK)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    true_defect = labels != ok
    pred_defect = predicted != ok
    binary_wrong = true_defect != pred_defect
    n_defect, n_ok = int(true_defect.sum()), int((~true_defect).sum())
    caught = int((true_defect & pred_defect).sum())
    rejected_ok = int((~true_defect & pred_defect).sum())

    confident = confidence >= CONFIDENT
    p_ok = probs[:, ok]
    binary_confident = np.maximum(p_ok, 1.0 - p_ok) >= CONFIDENT
    # the binary call from P(ok) alone; it can differ from the argmax when the defect mass is split
    binary_call_wrong = (p_ok < 0.5) != true_defect

    confusion = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        support, npred, hit = (
            int(confusion[i].sum()),
            int(confusion[:, i].sum()),
            int(confusion[i, i]),
        )
        per_class[name] = ClassFigures(
            precision=hit / npred if npred else None,
            recall=hit / support if support else None,
            support=support,
            predicted=npred,
        )
    n_right = int((~binary_wrong).sum())
    nll = float(-np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0)).mean())
    return EvaluationReport(
        n=n,
        accuracy=float((predicted == labels).mean()),
        binary_accuracy=n_right / n,
        binary_accuracy_ci95=_exact_ci95(n_right, n),
        defect_recall=caught / n_defect if n_defect else None,
        defect_recall_ci95=_exact_ci95(caught, n_defect) if n_defect else (0.0, 1.0),
        false_reject_rate=rejected_ok / n_ok if n_ok else None,
        ece=expected_calibration_error(probs, labels),
        nll=nll,
        confident_share=float(confident.mean()),
        confident_count=int(confident.sum()),
        confident_binary_error=float(binary_wrong[confident].mean()) if confident.any() else None,
        confident_binary_errors=int(binary_wrong[confident].sum()),
        binary_confident_share=float(binary_confident.mean()),
        binary_confident_error=(
            float(binary_call_wrong[binary_confident].mean()) if binary_confident.any() else None
        ),
        per_class=per_class,
        confusion=confusion.tolist(),
    )


def evaluate_checkpoint(
    data: Path, checkpoint: Path | None = None, *, batch_size: int = 32, progress: bool = False
) -> EvaluationReport:
    """Run a checkpoint (default: the bundled weights) over a labeled dataset folder."""
    from models.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    return evaluate_predictor(predictor, data, batch_size=batch_size, progress=progress)


def evaluate_predictor(
    predictor: Predictor, data: Path, *, batch_size: int = 32, progress: bool = False
) -> EvaluationReport:
    """Run a loaded predictor over a labeled dataset folder (class folders or manifest.csv)."""
    from data.dataset import load_dataset

    items = load_dataset(data)
    labels = np.array([predictor.class_names.index(it.label) for it in items], dtype=np.int64)
    probs = []
    for start in tqdm(
        range(0, len(items), batch_size), desc="evaluate", unit="batch", disable=not progress
    ):
        images = []
        for it in items[start : start + batch_size]:
            image = cv2.imread(str(it.path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read test image {it.path}")
            images.append(image)
        probs.append(predictor.predict_tensor(predictor.preprocess(images)))
    report = evaluate_probabilities(np.concatenate(probs), labels, predictor.class_names)
    log.info(
        "evaluated %s on %s (%d images): binary accuracy %.4f, defect recall %s, ECE %.4f",
        predictor.version, data, report.n, report.binary_accuracy, report.defect_recall,
        report.ece,
    )  # fmt: skip
    return report


# -- model card ------------------------------------------------------------------------------


def card_paths(checkpoint: Path) -> tuple[Path, Path]:
    """The model card beside a checkpoint: ``<stem>.md`` and ``<stem>.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_suffix(".md"), checkpoint.with_suffix(".json")


def write_model_card(
    checkpoint: Path,
    *,
    version: str,
    metrics: dict,
    model_config: DefectCNNConfig,
    preprocessing: Preprocessing,
    test_sets: dict[str, dict] | None = None,
) -> Path:
    """Write the Markdown card (for people) and the JSON card (for tools); returns the .md."""
    md_path, json_path = card_paths(checkpoint)
    card = {
        "version": version,
        "checkpoint": Path(checkpoint).name,
        "architecture": model_config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "validation": {k: v for k, v in metrics.items() if k != "history"},
        "history": metrics.get("history", []),
        "test_sets": test_sets or {},
    }
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    md_path.write_text(_card_markdown(card))
    return md_path


def add_test_result(checkpoint: Path, name: str, report: EvaluationReport, version: str) -> Path:
    """Record a fresh-test-set evaluation in the checkpoint's model card (both files)."""
    md_path, json_path = card_paths(checkpoint)
    try:
        card = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"no readable model card at {json_path}: {exc}") from exc
    if card.get("version") != version:
        raise ValueError(f"model card {json_path} is for {card.get('version')}, not {version}")
    card.setdefault("test_sets", {})[name] = report.to_dict()
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    md_path.write_text(_card_markdown(card))
    return md_path


def add_serving_runtime(checkpoint: Path, record: dict, version: str) -> Path:
    """Record the ONNX export's parity check (`models.onnx_export.OnnxRecord.to_dict`) in
    the checkpoint's model card (both files), replacing an earlier one."""
    md_path, json_path = card_paths(checkpoint)
    try:
        card = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"no readable model card at {json_path}: {exc}") from exc
    if card.get("version") != version:
        raise ValueError(f"model card {json_path} is for {card.get('version')}, not {version}")
    card["serving_runtime"] = dict(record)
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    md_path.write_text(_card_markdown(card))
    return md_path


def _figures_table(fig: dict) -> list[str]:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lo, hi = fig["binary_accuracy_ci95"]
    rlo, rhi = fig["defect_recall_ci95"]
    rows = [
        "| figure | value |",
        "| --- | --- |",
        f"| images | {fig['n']} |",
        f"| binary accuracy (ok vs defect) | {pct(fig['binary_accuracy'])}"
        f" (95% CI {pct(lo)}-{pct(hi)}) |",
        f"| defect recall | {pct(fig['defect_recall'])} (95% CI {pct(rlo)}-{pct(rhi)}) |",
        f"| false-reject rate | {pct(fig['false_reject_rate'])} |",
        f"| 5-class accuracy | {pct(fig['accuracy'])} |",
        f"| ECE (15 bins) | {fig['ece']:.4f} |",
        f"| share with confidence >= {CONFIDENT} | {pct(fig['confident_share'])} |",
        f"| binary error among those | {pct(fig['confident_binary_error'])} "
        f"({fig['confident_binary_errors']} of {fig['confident_count']}) |",
        f"| share with max(P(ok), P(defect)) >= {CONFIDENT} (what routing thresholds) "
        f"| {pct(fig['binary_confident_share'])} |",
        f"| binary error among those | {pct(fig['binary_confident_error'])} |",
        "",
        "| class | precision | recall | support |",
        "| --- | --- | --- | --- |",
    ]
    for name, f in fig["per_class"].items():
        rows.append(f"| {name} | {pct(f['precision'])} | {pct(f['recall'])} | {f['support']} |")
    return rows


def _card_markdown(card: dict) -> str:
    val = card["validation"]
    arch = card["architecture"]
    prep = card["preprocessing"]
    origin = (
        f"fine-tuned from {val['init_from']}" if val.get("init_from") else "trained from scratch"
    )
    lines = [
        f"# Model card: {card['version']}",
        "",
        f"Defect classifier for phone inspection images, `{card['checkpoint']}`.",
        "",
        "## Model",
        f"- torchvision `{arch['arch']}`, width x{arch['width_mult']}, global {arch['pool']} "
        f"pooling, dropout {arch['dropout']}, {arch['num_classes']} classes "
        f"({', '.join(CLASS_NAMES)}), {origin}, with a box-supervised defect "
        "locator on the stride-16 features (see `models/defect_cnn.py`).",
        f"- Input: {prep['input_size']}x{prep['input_size']} RGB (BGR images are converted), "
        f"mean {[round(v, 4) for v in prep['mean']]}, std {[round(v, 4) for v in prep['std']]}.",
        f"- Calibration: temperature {val.get('temperature', float('nan')):.4f}, fitted on "
        f"{val.get('calib_images', '?')} held-out images.",
        f"- Training: best epoch {val.get('best_epoch')} of {val.get('epochs_run')}, "
        f"{val.get('train_images')} training images, {val.get('train_minutes')} min, "
        f"trained {val.get('trained_at')}.",
        *[
            f"- From {name}: {n['train']} training, {n['val']} validation, {n['calib']} "
            "calibration images."
            for name, n in (val.get("splits_by_source") or {}).items()
        ],
        "",
        "## Validation figures (calibrated)",
        f"{val.get('evaluated_on', '')}",
        "",
        *_figures_table(val),
    ]
    for name, fig in (val.get("validation_subsets") or {}).items():
        lines += ["", f"## Validation figures on {name} (calibrated)", "", *_figures_table(fig)]
    if val.get("init_from") or val.get("lineage"):
        lines += ["", "## Lineage", f"- Fine-tuned from: {val.get('init_from') or '-'}"]
        lines += [f"- {k}: {v}" for k, v in (val.get("lineage") or {}).items()]
    for name, fig in card.get("test_sets", {}).items():
        lines += ["", f"## Fresh test set: {name}", "", *_figures_table(fig)]
    runtime = card.get("serving_runtime")
    if runtime:
        parity = runtime.get("parity") or {}
        lines += [
            "",
            "## Serving runtime",
            "- ONNX Runtime on the CPU, its graph accepted by the parity check; torch remains "
            "the fallback a setting selects."
            if runtime["accepted"]
            else f"- torch: the ONNX export was refused ({runtime['reason']}).",
            f"- Parity check: max absolute difference of calibrated probabilities against torch "
            f"{parity.get('max_abs_diff', float('nan')):.2e} (limit {parity.get('tolerance')}), "
            f"on {parity.get('images', '-')}; onnxruntime "
            f"{runtime['runtime'].get('onnxruntime')}, opset {runtime.get('opset')}.",
        ]
    lines += [
        "",
        "## Limits",
        "- Trained and tested on synthetic line-camera images (`data/synth.py`) only; a real "
        "line needs its own labeled evidence before automation (shadow mode first).",
        "- Confidence is calibrated on the synthetic distribution; it drifts with lighting, "
        "optics or parts the generator does not draw.",
        "",
    ]
    return "\n".join(lines)
