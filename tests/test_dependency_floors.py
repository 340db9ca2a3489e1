"""``.ci/oldest.txt`` pins exactly the floors of ``pyproject.toml``'s run-time
dependencies, so the suite run with those pins checks the oldest versions a user may get
(the README's "Other Pythons, oldest dependencies")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _version(text: str) -> tuple:
    """'2.0.0' and '2.0' are the same release: trailing zeros dropped."""
    parts = [int(p) for p in text.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_the_oldest_pins_are_the_floors():
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    runtime = project.split("\ndependencies = [", 1)[1].split("]", 1)[0]
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)"', runtime))
    pins = dict(line.split("==") for line in
                (ROOT / ".ci" / "oldest.txt").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#"))
    assert len(floors) >= 5 and set(pins) == set(floors)
    for name, floor in floors.items():
        assert _version(pins[name]) == _version(floor), (name, pins[name], floor)
