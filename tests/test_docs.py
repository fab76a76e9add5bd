"""The README and the project's own design in ``docs/`` point only inside the repository:
every link names a file of the repository and, with an anchor, a heading that file has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def links(document: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", document.read_text()))


def anchors(document: Path) -> set[str]:
    return {anchor(h) for h in _HEADING.findall(_FENCE.sub("", document.read_text()))}


def test_anchors_are_made_as_github_makes_them() -> None:
    assert anchor("Replacing a model safely: registry, deployments, rollout") == (
        "replacing-a-model-safely-registry-deployments-rollout"
    )
    assert anchor("Line outputs: decisions pushed to the line") == (
        "line-outputs-decisions-pushed-to-the-line"
    )
    assert anchor("`make run` and `PORT=`") == "make-run-and-port"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(document: Path) -> None:
    found = links(document)
    assert found or document.name != "README.md", "the README links to the docs"
    for target in found:
        assert "://" not in target and not target.startswith("mailto:"), (
            f"{document.name} links outside the repository: {target}"
        )
        path, _, fragment = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.is_relative_to(ROOT), f"{document.name}: {target} leaves the repository"
        assert linked.exists(), f"{document.name}: {target} names no file"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{document.name}: {target} names no heading"


def test_the_readme_links_to_the_projects_design() -> None:
    targets = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    assert {"docs/architecture.md", "docs/operations.md", "docs/api.md"} <= targets
