"""Results pages: a reproduction's report becomes its paper's README, plots relinked,
and the top README's one results table is rewritten from the headlines."""

import json

import pytest

from nanotie.pages import END, START, write_pages


def _fake_run(runs, name, headline, profile="quick"):
    d = runs / name
    d.mkdir(parents=True)
    (d / "report.md").write_text(f"# {name} report\n\nA table.\n\n![curve](loss.png)\n"
                                 "![gone](missing.png)\n\n## Set-up\n\n```\n# a comment\n```\n")
    (d / "loss.png").write_bytes(b"\x89PNG fake")
    (d / "results.json").write_text(json.dumps({"headline": headline, "device": "cpu",
                                                "profile": profile}))


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


def test_a_plot_that_cannot_be_read_is_reported_as_a_read(tmp_path, checkout, monkeypatch,
                                                         capsys):
    from functools import partial

    from nanotie import cli, pages

    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    (runs / "stlm" / "loss.png").unlink()
    (runs / "stlm" / "loss.png").mkdir()             # there, but not a file to copy
    monkeypatch.setattr(pages, "write_pages", partial(write_pages, root=checkout))
    assert cli.main(["pages", "--from", str(runs)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nanotie: error: cannot read {runs / 'stlm' / 'loss.png'}: "), err


def test_a_full_from_or_from_that_is_not_a_folder_is_refused_and_changes_nothing(
        tmp_path, checkout):
    """A mistyped --full-from used to write every page without its full section."""
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    readme = (checkout / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="runs-ful: no such folder"):
        write_pages(runs, tmp_path / "runs-ful", root=checkout)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FileNotFoundError, match="a-file: not a folder"):
        write_pages(tmp_path / "a-file", root=checkout)
    assert (checkout / "README.md").read_text() == readme
    assert not (checkout / "nanotie").exists()


def test_a_full_from_holding_the_same_profile_is_refused_and_changes_nothing(tmp_path,
                                                                           checkout):
    """pages --full-from runs used to print the quick report twice on each page."""
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    readme = (checkout / "README.md").read_text()
    with pytest.raises(ValueError, match="holds a quick run, as .*--full-from takes"):
        write_pages(runs, runs, root=checkout)
    assert (checkout / "README.md").read_text() == readme
    _fake_run(tmp_path / "full", "stlm", {"claim": "c", "verdict": "holds"}, profile="full")
    write_pages(runs, tmp_path / "full", root=checkout)
    page = (checkout / "nanotie" / "papers" / "stlm" / "README.md").read_text()
    assert page.count("## The quick profile") == 1 and "## The full profile" in page


@pytest.mark.parametrize("results", ['[]', 'null', '{"headline": "holds"}',
                                     '{"headline": [1]}', '{"profile": "../../x"}'])
def test_a_results_json_that_reproduce_did_not_write_is_named_and_changes_nothing(
        tmp_path, checkout, results):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    (runs / "stlm" / "results.json").write_text(results)
    readme = (checkout / "README.md").read_text()
    with pytest.raises(ValueError, match="results.json: cannot be read"):
        write_pages(runs, root=checkout)
    assert (checkout / "README.md").read_text() == readme
    assert sorted(p.name for p in checkout.rglob("*")) == ["README.md", "pyproject.toml"]


def test_a_plot_that_cannot_be_read_stops_pages_before_any_page_is_written(tmp_path,
                                                                            checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    _fake_run(runs, "trellis", {"claim": "c", "verdict": "holds"})    # after stlm
    (runs / "trellis" / "loss.png").unlink()
    (runs / "trellis" / "loss.png").mkdir()
    readme = (checkout / "README.md").read_text()
    with pytest.raises(OSError):
        write_pages(runs, root=checkout)
    assert not (checkout / "nanotie").exists(), "no page of one run and not the other"
    assert (checkout / "README.md").read_text() == readme


def test_a_full_run_adds_its_own_section_and_command(tmp_path, checkout):
    runs, full = tmp_path / "runs", tmp_path / "runs-full"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    _fake_run(full, "stlm", {"claim": "c", "verdict": "holds"}, profile="full")
    _fake_run(runs, "trellis", {"claim": "c", "verdict": "holds"})   # no full run
    write_pages(str(runs), str(full), root=str(checkout))            # paths as strings
    stlm = (checkout / "nanotie" / "papers" / "stlm" / "README.md").read_text()
    quick, full_part = stlm.split("## The full profile")
    assert "`python -m nanotie reproduce stlm`" in quick and "--full" not in quick
    assert "`python -m nanotie reproduce stlm --full`" in full_part
    assert "../../../docs/results/stlm/full/loss.png" in full_part
    trellis = (checkout / "nanotie" / "papers" / "trellis" / "README.md").read_text()
    assert "## The quick profile" in trellis and "## The full profile" not in trellis


def test_a_run_from_another_first_seed_gives_its_seed_in_the_command(tmp_path, checkout):
    """A page made from reproduce --seed 1 told its reader to run it without --seed,
    which gives other figures."""
    for seeds, folder, flag in (([1, 2], "runs", " --seed 1"), ([0, 1], "runs0", "")):
        _fake_run(tmp_path / folder, "stlm", {"claim": "c", "verdict": "holds"})
        results = tmp_path / folder / "stlm" / "results.json"
        results.write_text(json.dumps({**json.loads(results.read_text()), "seeds": seeds}))
        write_pages(tmp_path / folder, root=checkout)
        page = (checkout / "nanotie" / "papers" / "stlm" / "README.md").read_text()
        assert f"`python -m nanotie reproduce stlm{flag}`" in page


def test_pages_regenerate_over_their_own_output(tmp_path, checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    first = write_pages(runs, root=checkout)
    assert write_pages(runs, root=checkout) == first      # the plots' folder exists now
    assert (checkout / "README.md").read_text().count(START) == 1


def test_a_run_without_its_results_is_skipped(tmp_path, checkout):
    """An interrupted run can leave report.md without results.json: no page from it."""
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    (runs / "stlm" / "results.json").unlink()
    assert write_pages(runs, root=checkout) == []


def test_a_readme_without_both_markers_is_left_alone(tmp_path, checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"})
    readme = checkout / "README.md"
    readme.write_text(f"intro\n{START}\nold table, its end marker deleted\n")
    written = write_pages(runs, root=checkout)
    assert readme not in written and "old table" in readme.read_text()


def test_a_full_run_given_as_the_runs_is_labelled_full(tmp_path, checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "stlm", {"claim": "c", "verdict": "holds"}, profile="full")
    write_pages(runs, root=checkout)
    page = (checkout / "nanotie" / "papers" / "stlm" / "README.md").read_text()
    assert "## The full profile" in page and "## The quick profile" not in page
    assert "`python -m nanotie reproduce stlm --full`" in page


def test_experiments_without_a_run_keep_their_rows(tmp_path, checkout):
    """After ``reproduce gpt`` alone, the other experiments' rows stay as they were."""
    readme = checkout / "README.md"
    readme.write_text(f"intro\n{START}\n| experiment | claim | verdict | figure |\n"
                      "|---|---|---|---|\n| [gpt](nanotie/papers/gpt/README.md) | old gpt | holds | 1 |\n"
                      "| [trellis](nanotie/papers/trellis/README.md) | t1 | holds | 2 |\n"
                      "| [trellis](nanotie/papers/trellis/README.md) | t2 | within noise | 3 |\n"
                      f"{END}\nrest\n")
    runs = tmp_path / "runs"
    _fake_run(runs, "gpt", {"claim": "new gpt", "verdict": "holds"})
    write_pages(runs, root=checkout)
    text = readme.read_text()
    assert "old gpt" not in text and "new gpt" in text
    assert "| t1 | holds | 2 |" in text and "| t2 | within noise | 3 |" in text
    assert text.index("new gpt") < text.index("| t1 |") < text.index("| t2 |")  # registry order


def test_a_damaged_results_file_is_named_and_no_page_is_written(tmp_path, checkout):
    runs = tmp_path / "runs"
    _fake_run(runs, "gpt", {"claim": "c", "verdict": "holds"})
    _fake_run(runs, "trellis", {"claim": "c", "verdict": "holds"})
    (runs / "trellis" / "results.json").write_text('{"headline": {"cla')
    before = (checkout / "README.md").read_text()
    with pytest.raises(ValueError, match="trellis.results.json: cannot be read"):
        write_pages(runs, root=checkout)
    assert not (checkout / "nanotie").exists()           # not even gpt's page
    assert (checkout / "README.md").read_text() == before
