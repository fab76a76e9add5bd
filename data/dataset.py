"""Labeled images from a folder: the synthetic sets, and a plant's own.

A plant brings its own labeled images in either of two layouts (the generator writes both at
once):

- ``root/manifest.csv`` with columns ``file`` (path relative to ``root``, forward slashes) and
  ``class``; optionally ``boxes`` (JSON list of ``[x0, y0, x1, y1]``, inclusive-exclusive
  pixels), ``seed`` and ``params`` (the generator's; ignored here).
- one folder per class: ``root/<class>/*.png|jpg|jpeg|bmp``; no boxes.

When ``manifest.csv`` exists it is the whole truth and the folders are not scanned: images it
does not list are not part of the dataset. Class names are the product's (``CLASS_NAMES``),
compared after trimming spaces and lower-casing, so ``OK`` in a spreadsheet means ``ok``.
Anything else is refused with a :class:`DatasetError` that names the file or row, because a
silently skipped row is a training set nobody asked for.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from inspect_app.domain import CLASS_NAMES, DefectClass

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("file", "class")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: inclusive-exclusive pixel bounds


class DatasetError(ValueError):
    """A dataset folder or manifest that cannot be used as it is; the message says where."""


@dataclass(frozen=True)
class LabeledImage:
    path: Path
    label: str
    boxes: tuple[Box, ...] = ()  # defect locations where known; empty for ok and for folders


def load_dataset(root: Path) -> list[LabeledImage]:
    """Every labeled image under ``root``, sorted by path so that splits are reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        items, layout = _read_manifest(manifest, root), MANIFEST_NAME
    else:
        items, layout = _read_class_folders(root), "class folders"
    if not items:
        raise DatasetError(
            f"{root}: no labeled images; expected {MANIFEST_NAME} or folders named "
            f"{', '.join(CLASS_NAMES)} holding {'/'.join(IMAGE_SUFFIXES)} files"
        )
    items.sort(key=lambda item: item.path.as_posix())
    counts = Counter(item.label for item in items)
    logger.info(
        "loaded %d images from %s (%s): %s",
        len(items),
        root,
        layout,
        ", ".join(f"{c} {counts[c]}" for c in CLASS_NAMES if counts[c]),
    )
    return items


def _class_name(raw: str, where: str) -> str:
    name = raw.strip().lower()
    if name not in CLASS_NAMES:
        raise DatasetError(f"{where}: unknown class {raw!r}; known: {', '.join(CLASS_NAMES)}")
    return name


def _read_manifest(manifest: Path, root: Path) -> list[LabeledImage]:
    # utf-8-sig: spreadsheets often save CSV with a byte-order mark before the header.
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{manifest}: missing column(s) {', '.join(missing)}; "
                f"found {', '.join(columns) or 'no header'}"
            )
        reader.fieldnames = columns
        items: list[LabeledImage] = []
        seen: dict[str, int] = {}
        for row in reader:
            where = f"{manifest} line {reader.line_num}"
            items.append(_parse_row(row, where, root, seen, reader.line_num))
    return items


def _parse_row(
    row: dict[str | None, str | list[str] | None],
    where: str,
    root: Path,
    seen: dict[str, int],
    line: int,
) -> LabeledImage:
    if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
        raise DatasetError(f"{where}: malformed row (wrong number of cells)")
    file = str(row["file"]).strip().replace("\\", "/")
    if not file:
        raise DatasetError(f"{where}: empty 'file'")
    label = _class_name(str(row["class"]), f"{where} ({file})")
    if file in seen:
        raise DatasetError(f"{where}: {file} is listed twice (first on line {seen[file]})")
    seen[file] = line
    path = root / file
    if not path.is_file():
        raise DatasetError(f"{where}: image file not found: {path}")
    boxes = _parse_boxes(str(row.get("boxes") or ""), f"{where} ({file})")
    if boxes and label == DefectClass.OK:
        raise DatasetError(f"{where} ({file}): class ok cannot have defect boxes")
    return LabeledImage(path=path, label=label, boxes=boxes)


def _parse_boxes(text: str, where: str) -> tuple[Box, ...]:
    text = text.strip()
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: boxes are not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(raw, list):
        raise DatasetError(f"{where}: boxes must be a JSON list of [x0, y0, x1, y1]: {text!r}")
    boxes = []
    for box in raw:
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            and 0 <= box[0] < box[2]
            and 0 <= box[1] < box[3]
        ):
            raise DatasetError(
                f"{where}: bad box {box!r}; expected [x0, y0, x1, y1] integers with "
                "0 <= x0 < x1 and 0 <= y0 < y1"
            )
        boxes.append((box[0], box[1], box[2], box[3]))
    return tuple(boxes)


def _read_class_folders(root: Path) -> list[LabeledImage]:
    items: list[LabeledImage] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue  # loose files (a README) and hidden or system folders are not classes
        label = _class_name(folder.name, f"{folder}")
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                items.append(LabeledImage(path=path, label=label))
            else:
                logger.debug("skipping %s: not an image file", path)
    return items
