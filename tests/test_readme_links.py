"""The README's links into the code stay true: every ``path#Lnn`` link opens a line
that holds a tie (the shared parameter reused, or the engine's tying sum), and every
relative link names a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINKS = re.findall(r"\]\(([^)\s#]+)(?:#L(\d+))?\)", README)
LINE_LINKS = [(path, int(line)) for path, line in LINKS if line]


def test_the_readme_links_to_the_lines_of_the_ties():
    assert len(LINE_LINKS) >= 8          # one per paper, the GPT's and the tying sum


@pytest.mark.parametrize("path,line", LINE_LINKS, ids=[f"{p}#L{n}" for p, n in LINE_LINKS])
def test_a_line_link_opens_a_tie(path, line):
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    assert line <= len(lines), f"{path} has {len(lines)} lines; the README links line {line}"
    text = lines[line - 1].lower()
    assert "tie" in text or "tying sum" in text, (
        f"README links {path}#L{line}, which now reads {lines[line - 1].strip()!r}: "
        "move the link to the line of the tie")


@pytest.mark.parametrize("path", sorted({p for p, _ in LINKS
                                         if not re.match(r"[a-z]+:", p)}))
def test_a_relative_link_names_something_that_exists(path):
    assert (ROOT / path).exists(), f"README links {path}, which does not exist"
