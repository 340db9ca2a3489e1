"""Results pages: a reproduction's report becomes its paper's README, plots relinked,
and the top README's one results table is rewritten from the headlines."""

import json

import pytest

from nanotie.pages import END, START, write_pages


def _fake_run(runs, name, headline):
    d = runs / name
    d.mkdir(parents=True)
    (d / "report.md").write_text(f"# {name} report\n\nA table.\n\n![curve](loss.png)\n"
                                 "![gone](missing.png)\n\n## Set-up\n\n```\n# a comment\n```\n")
    (d / "loss.png").write_bytes(b"\x89PNG fake")
    (d / "results.json").write_text(json.dumps({"headline": headline, "device": "cpu"}))


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "pyproject.toml").write_text("")
    (root / "README.md").write_text(f"intro\n{START}\nold table\n{END}\nrest\n")
    return root


def test_pages_copy_reports_relink_plots_and_rewrite_the_table(tmp_path, checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "fewer parameters", "where": "Table 1",
                             "verdict": "holds", "figure": "-45%"})
    _fake_run(runs, "trellis", [{"claim": "c1", "verdict": "holds"},
                                {"claim": "c2", "verdict": "within noise"}])
    written = write_pages(runs, root=checkout)
    page = checkout / "nanotie" / "papers" / "stlm" / "README.md"
    assert page in written and (checkout / "README.md") in written
    text = page.read_text()
    assert "\n## The quick profile" in text and "\n### stlm report" in text
    assert "\n#### Set-up" in text and "\n# a comment" in text   # code blocks untouched
    assert "![curve](../../../docs/results/stlm/quick/loss.png)" in text
    assert (page.parent / "../../../docs/results/stlm/quick/loss.png").resolve().exists()
    assert "![gone](missing.png)" in text            # a missing plot is left as it was
    readme = (checkout / "README.md").read_text()
    assert "old table" not in readme and readme.startswith("intro\n") and "rest" in readme
    assert "| [stlm](nanotie/papers/stlm/README.md) | fewer parameters (Table 1) | holds" \
        in readme
    assert readme.count("[trellis]") == 2            # one row per claim


def test_pages_skip_unfinished_runs_and_refuse_a_non_checkout(tmp_path, checkout):
    runs = tmp_path / "runs"
    (runs / "stlm").mkdir(parents=True)              # no report yet
    assert write_pages(runs, root=checkout) == []
    with pytest.raises(FileNotFoundError, match="not a nanotie checkout"):
        write_pages(runs, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        write_pages(tmp_path / "nope", root=checkout)
