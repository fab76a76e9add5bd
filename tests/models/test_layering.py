"""``models/`` knows nothing of the plant: of the service it imports only the vocabulary
(``inspect_app.domain``), and nothing of the review UI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
ALLOWED = {"inspect_app.domain"}


def imported(source: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def plant_imports(names: set[str]) -> set[str]:
    """The imported names that reach the service or the UI, other than the vocabulary."""
    outside = {n for n in names if n.split(".")[0] in {"inspect_app", "review_ui"}}
    return {n for n in outside if not any(n == a or n.startswith(f"{a}.") for a in ALLOWED)}


def test_a_plant_import_is_found() -> None:
    names = {"inspect_app.domain", "inspect_app.domain.CLASS_NAMES", "inspect_app.settings"}
    assert plant_imports(names) == {"inspect_app.settings"}
    assert plant_imports({"review_ui.app", "torch"}) == {"review_ui.app"}


@pytest.mark.parametrize("source", sorted(MODELS.rglob("*.py")), ids=lambda p: p.name)
def test_models_import_only_the_vocabulary(source: Path) -> None:
    assert plant_imports(imported(source)) == set()
