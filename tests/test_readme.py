"""The README's commands run as written, in order, on a fresh checkout.

Every fenced ``bash`` block of README.md runs in one temp folder laid out like a fresh clone
(the repository's files linked in, no ``var/``, no ``results.csv``), in one shell state:
variables a block sets (``B``, ``CAMERA_KEY``) are there for the next. What does not run:

- a block right after ``<!-- readme-test: skip (why) -->`` (invisible on the rendered page);
- ``make ...`` lines: the Makefile's targets build the venv and install system packages,
  which is what the test runs in, not something it can redo;
- the ``serve`` line: the service starts there from the ``running_service`` fixture (the same
  ``inspect-app serve --data-dir var``, on a free port the README's URLs are pointed at, and
  stopped by the fixture), since a background job of the script would outlive a failed test.

The data and training commands run at test sizes: ``--n`` at most `SMALL_N` images and
``train`` for one epoch; what they check is that the commands work, not the model. The
simulated camera posts at least `FAST_RATE` images/s: the README's 2/s over the 50 samples
is 25 s of waiting that checks nothing more.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from models import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
SMALL_N = 150  # images per generated set: enough for training's splits and its profile
FAST_RATE = 25  # images/s the simulated camera posts at, at least
NOT_IN_A_CLONE = {".git", "var", "results.csv", ".pytest_cache", ".ruff_cache"}

_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<marker>[^>]*?)\s*-->\s*\n)?^```bash\n(?P<body>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
_ASSIGNED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")
_SERVE = re.compile(r"^\S*inspect-app serve\b|^\$B serve\b")


@dataclass(frozen=True)
class Block:
    commands: list[str]  # logical lines: continuation lines joined, comments kept
    skip: str | None  # why it does not run


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for match in _BLOCK.finditer(text):
        marker = match.group("marker")
        skip = None
        if marker is not None:
            if not marker.startswith("skip"):
                raise ValueError(f"unknown readme-test marker {marker!r}")
            skip = marker.removeprefix("skip").strip(" ()") or "marked skip"
        commands = [
            line
            for line in match.group("body").replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        blocks.append(Block(commands=commands, skip=skip))
    return blocks


def at_test_size(command: str) -> str:
    """The same command on small data: fewer generated images, one training epoch, a
    faster camera."""
    command = re.sub(r"--n (\d+)", lambda m: f"--n {min(int(m.group(1)), SMALL_N)}", command)
    command = re.sub(
        r"--rate (\d+(?:\.\d+)?)",
        lambda m: f"--rate {max(float(m.group(1)), FAST_RATE):g}",
        command,
    )
    if re.search(r"inspect-app train\b", command):
        command = re.sub(r"(\s+#.*)?$", r" --epochs 1\1", command, count=1)
    return command


def fresh_clone(into: Path) -> Path:
    """A folder that looks like a fresh clone with its venv: the repository's files linked."""
    into.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in NOT_IN_A_CLONE:
            (into / entry.name).symlink_to(entry)
    return into


def run_script(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "\n".join(["set -euo pipefail", "set -x", *lines])
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_the_readme_parses_into_blocks() -> None:
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 5
    commands = [c for block in blocks for c in block.commands]
    assert sum(bool(_SERVE.search(c)) for c in commands) == 1, "one serve line, where it starts"
    assert any(block.skip for block in blocks)
    train = "inspect-app train --data d --out o"
    assert at_test_size(f"{train}  # why") == f"{train} --epochs 1  # why"
    assert at_test_size(train) == f"{train} --epochs 1"
    generate = "inspect-app data generate --out d --n {} --seed 1"
    assert at_test_size(generate.format(8000)) == generate.format(SMALL_N)
    assert at_test_size(generate.format(50)) == generate.format(50)
    simulate = "inspect-app simulate --line l --rate {} --data d"
    assert at_test_size(simulate.format(2)) == simulate.format(FAST_RATE)
    assert at_test_size(simulate.format(100)) == simulate.format(100)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(
    tmp_path: Path, running_service: Callable[..., AbstractContextManager]
) -> None:
    clone = fresh_clone(tmp_path / "clone")
    before: list[str] = []
    after: list[str] | None = None  # the lines after serve, once it is seen
    for block in readme_blocks(README.read_text()):
        if block.skip:
            continue
        for command in block.commands:
            if command.startswith("make "):
                continue
            if _SERVE.search(command):
                assert "--data-dir var" in command
                after = []
                continue
            (before if after is None else after).append(at_test_size(command))
    assert after, "the README has no commands after it starts the service"

    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env["OMP_NUM_THREADS"] = "1"  # two cores shared by the whole suite
    state = tmp_path / "shell-state.sh"
    assigned = sorted({m.group(1) for c in before if (m := _ASSIGNED.match(c))})
    keep = [f"declare -p {' '.join(assigned)} > {shlex.quote(str(state))}"] if assigned else []
    first = run_script(before + keep, clone, env)
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}"

    serve = running_service(
        clone / "var", weights=DEFAULT_WEIGHTS, log=tmp_path / "serve.log", review_ui=True
    )  # as the README starts it: with the review UI
    with serve as svc:
        restore = [f"source {shlex.quote(str(state))}"] if assigned else []
        rest = [c.replace(README_URL, svc.url) for c in after]
        second = run_script(restore + rest, clone, env)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
    out = first.stdout + second.stdout
    assert '"inspection_id"' in out and '"line":"line-2"' in out  # the curl answers
    assert "0 errors" in out and "other files skipped" in out  # batch on data/samples
    assert (clone / "results.csv").is_file() and (clone / "var" / "my-model.pt").is_file()
