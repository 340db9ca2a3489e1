"""What experiments write: JSON that reads back, Markdown tables that show every seed,
and plots that draw the figures they are given. Every expected value here is written
out by hand from the inputs."""

import json
import math

import numpy as np
import pytest

from nanotie import protocol as P
from nanotie import report


@pytest.fixture
def saved(monkeypatch):
    """The figures that reach ``save_figure``, kept open so a test can read them."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(report, "save_figure", keep)
    yield figures
    for fig in figures:
        report.pyplot().close(fig)


# ------------------------------------------------------------------ results.json


def test_plain_turns_numpy_and_nan_into_json_and_keeps_nan_when_asked():
    value = {0.001: (np.int64(3), np.float32(0.5)), "a": np.array([[1, 2], [3, 4]]),
             "bad": [float("nan"), float("inf"), -float("inf")]}
    plain = report._plain(value)
    assert plain == {"0.001": [3, 0.5], "a": [[1, 2], [3, 4]], "bad": [None, None, None]}
    assert type(plain["0.001"][0]) is int and type(plain["0.001"][1]) is float
    kept = report._plain(value, nan_as_null=False)["bad"]
    assert math.isnan(kept[0]) and kept[1] == math.inf and kept[2] == -math.inf
    json.dumps(plain, allow_nan=False)                   # strict JSON: no NaN in the file
    nested = report._plain({"s": [P.spread([1.0, float("nan")])]}, nan_as_null=False)
    assert math.isnan(nested["s"][0]["values"][1])       # as_dict() keeps the setting


def test_results_json_is_indented_and_ends_with_a_newline(tmp_path):
    path = report.write_results(tmp_path, {"b": 1, "a": [np.float64(2.5)]})
    text = path.read_text()
    assert path == tmp_path / "results.json"
    assert text == '{\n  "b": 1,\n  "a": [\n    2.5\n  ]\n}\n'


def test_publish_returns_the_figures_with_nan_and_writes_null(tmp_path):
    out = report.publish(tmp_path, "T", {"x": np.float64("nan")}, "\n\n  body  \n\n")
    assert math.isnan(out["x"])
    assert json.loads((tmp_path / "results.json").read_text()) == {"x": None}
    assert (tmp_path / "report.md").read_text() == "# T\n\nbody\n"


def test_headline_takes_a_verdicts_outcome_or_the_outcome_itself():
    v = P.verdict([1.0, 1.1], [2.0, 2.1])
    row = report.headline("claim", "Table 1", v, "1.05 vs 2.05")
    assert row == {"claim": "claim", "where": "Table 1", "verdict": P.HOLDS,
                   "figure": "1.05 vs 2.05"}
    assert report.headline("c", "w", P.WITHIN_NOISE, "f")["verdict"] == P.WITHIN_NOISE


# ------------------------------------------------------------------ Markdown


def test_spread_table_prints_mean_std_text_and_every_seed():
    rows = [("A", {"loss": P.spread([1.0, 2.0]), "note": "lr 0.01"}),
            ("B", {"loss": P.spread([3.25])})]
    table = report.spread_table(rows, ["loss", "note"], digits=2, seeds_of="loss")
    assert table.split("\n") == [
        "| configuration | loss | note | loss, each seed |",
        "|---|---|---|---|",
        "| A | 1.50 ± 0.71 | lr 0.01 | 1.00, 2.00 |",
        "| B | 3.25 (1 seed) |  | 3.25 |",
        "",
        "*mean ± sample standard deviation over seeds*"]


def test_spread_table_without_a_seeds_column_and_with_text_in_it():
    rows = [("A", {"x": P.spread([1.0, 1.0])}), ("floor", {"x": "0.5"})]
    lines = report.spread_table(rows, ["x"]).split("\n")
    assert lines[:4] == ["| configuration | x |", "|---|---|",
                         "| A | 1.000 ± 0.000 |", "| floor | 0.5 |"]
    lines = report.spread_table(rows, ["x"], seeds_of="x").split("\n")
    assert lines[3] == "| floor | 0.5 |  |"                # text has no seeds to list


def test_tuning_table_names_its_setting_metric_and_digits():
    grid = {1: P.spread([2.0]), 2: P.spread([1.0]), 4: P.spread([3.0])}
    table = report.tuning_table({"M": {"best": 2, "grid": grid}}, setting="width",
                                metric="loss", digits=1)
    assert table.split("\n") == ["| method | width: validation loss (mean over seeds) |",
                                 "|---|---|", "| M | 1: 2.0, **2: 1.0**, 4: 3.0 |"]
    assert "**2: 1.000**" in report.tuning_table({"M": {"best": 2, "grid": grid}})


@pytest.mark.parametrize("grid,best", [
    ({"tied": P.spread([1.0]), "untied": P.spread([2.0])}, "tied"),   # not numbers
    ({0.01: P.spread([1.0])}, 0.01),                                  # one point
])
def test_tuning_table_sees_no_end_in_a_grid_without_one(grid, best):
    assert "end of the grid" not in report.tuning_table({"M": {"best": best, "grid": grid}})


def test_tuning_table_names_the_setting_of_a_choice_at_the_low_end():
    grid = {1e-3: P.spread([1.0]), 1e-2: P.spread([2.0])}
    table = report.tuning_table({"M": {"best": 1e-3, "grid": grid}}, setting="rate")
    assert "Chosen at an end of the grid: M. A rate outside the grid" in table


def test_claim_section_lists_each_verdict_and_the_note_after_a_blank_line():
    v = P.verdict([1.0, 1.1], [2.0, 2.1])
    text = report.claim_section("X beats Y", "Sec. 4", [("X vs Y", v), ("again", v)],
                                note="A note.", label="A check")
    assert text.split("\n") == ["**A check** (Sec. 4): X beats Y", "", f"- X vs Y: {v}",
                                f"- again: {v}", "", "A note."]
    assert report.claim_section("c", "w", []).split("\n") == ["**The paper's claim** (w): c",
                                                             ""]


def test_tuning_record_keeps_the_choice_and_the_grid_only():
    grid = {1e-3: P.spread([1.0])}
    choice = {"M": {"best": 1e-3, "grid": grid, "results": ["not kept"]}}
    assert report.tuning_record(choice) == {"M": {"best": 1e-3, "grid": grid}}


# ------------------------------------------------------------------ numbers for plots


def test_smooth_averages_up_to_window_past_values():
    out = report.smooth([1, 2, 3, 4, 6], window=2)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [1.0, 1.5, 2.5, 3.5, 5.0])
    np.testing.assert_allclose(report.smooth([2, 4, 9], window=5), [2.0, 3.0, 5.0])
    np.testing.assert_allclose(report.smooth([5.0] * 30), [5.0] * 30)
    assert report.smooth(range(30))[-1] == 19.5           # by default, the last 20: 10..29


def test_minmax_yerr_is_the_distance_to_each_end_clipped_at_zero():
    np.testing.assert_array_equal(report.minmax_yerr(2.0, 1.5, 3.0), [[0.5], [1.0]])
    err = report.minmax_yerr([1.0, 2.0], [0.0, 2.0 + 1e-16], [1.5, 2.0 - 1e-16])
    assert err.shape == (2, 2)
    np.testing.assert_array_equal(err, [[1.0, 0.0], [0.5, 0.0]])


# ------------------------------------------------------------------ plots


def test_finish_figure_adds_grid_legend_and_title(saved, tmp_path):
    plt = report.pyplot()
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], label="one")
    b.plot([1, 0], label="two")
    assert report.finish_figure(fig, (a, b), tmp_path / "f.png", title="T",
                                legend_size=7) == tmp_path / "f.png"
    assert saved == [fig] and fig._suptitle.get_text() == "T"
    for ax, label in ((a, "one"), (b, "two")):
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [label]
        assert legend.get_texts()[0].get_fontsize() == 7
        assert all(line.get_visible() for line in ax.get_xgridlines())


def test_save_figure_makes_the_folder_writes_a_png_and_closes(tmp_path):
    plt = report.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = report.save_figure(fig, str(tmp_path / "new" / "plot.png"))
    assert path == tmp_path / "new" / "plot.png"             # a Path, even from a str
    assert path.read_bytes().startswith(b"\x89PNG")
    assert fig.number not in plt.get_fignums()


def test_seed_bars_draw_the_mean_with_whiskers_to_min_and_max():
    plt = report.pyplot()
    fig, ax = plt.subplots()
    calls = []
    ax.errorbar = lambda x, y, yerr, **kw: calls.append((x, y, yerr, kw))
    report.seed_bars(ax, [1, 2], [[1.0, 4.0], [3.0, 2.0], [2.0, 6.0]], fmt="s-", label="L")
    plt.close(fig)
    (x, y, yerr, kw), = calls
    assert x == [1, 2] and (kw["fmt"], kw["label"]) == ("s-", "L")
    np.testing.assert_array_equal(y, [2.0, 4.0])
    np.testing.assert_array_equal(yerr, [[1.0, 2.0], [1.0, 2.0]])


def test_plot_bands_draws_the_mean_and_a_band_from_min_to_max(saved, tmp_path):
    ys = [[1.0, 5.0], [3.0, 1.0], [2.0, 3.0]]              # (seeds, x)
    report.plot_bands({"A": ([10, 20], ys)}, tmp_path / "b.png", "x", "y", "T")
    ax, = saved[0].axes
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [2.0, 3.0])
    band = ax.collections[0].get_paths()[0].vertices
    for x, ends in ((10, {1.0, 3.0}), (20, {1.0, 5.0})):    # min and max over the seeds
        assert set(band[np.isclose(band[:, 0], x), 1]) == ends
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y", "T")


def test_plot_spread_shows_means_whiskers_and_every_seed(saved, tmp_path):
    groups = {"A": P.spread([101.0, 103.0]), "B": P.spread([104.0, 104.0, 107.0])}
    report.plot_spread(groups, tmp_path / "s.png", "T", "loss")
    ax, = saved[0].axes
    assert [bar.get_height() for bar in ax.patches] == [102.0, 105.0]
    dots = [line for line in ax.lines if line.get_marker() == "."]
    assert [list(d.get_ydata()) for d in dots] == [[101.0, 103.0], [104.0, 104.0, 107.0]]
    assert [list(d.get_xdata()) for d in dots] == [[0, 0], [1, 1, 1]]
    whiskers = [seg for c in ax.collections for seg in c.get_segments()]
    assert [(s[0][0], sorted(s[:, 1])) for s in whiskers] == [(0, [101.0, 103.0]),
                                                               (1, [104.0, 107.0])]
    assert any("dots: seeds" in t.get_text() for t in ax.texts)        # says how to read it
    lo, hi = ax.get_ylim()     # zoomed on the seeds (not from 0), every seed inside, and
    assert lo < 101.0 < 107.0 < hi < lo + 2 * 6.0           # more room under the lowest
    assert 101.0 - lo > hi - 107.0                           # one: each bar shows a body
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
    assert (ax.get_ylabel(), ax.get_title()) == ("loss", "T")


def test_plot_spread_of_equal_values_still_has_a_height(saved, tmp_path):
    report.plot_spread({"A": P.spread([100.0, 100.0])}, tmp_path / "s.png", "T", "y")
    lo, hi = saved[0].axes[0].get_ylim()
    assert 0.0 < lo < 100.0 < hi and 100.0 - lo > hi - 100.0


# ------------------------------------------------------------------ progress


@pytest.mark.parametrize("progress,tty,shown", [(True, False, True), (False, True, False),
                                                (None, True, True), (None, False, False)])
def test_progress_bar_shows_when_asked_or_on_a_terminal(monkeypatch, progress, tty, shown):
    import io

    class Stderr(io.StringIO):
        def isatty(self):
            return tty

    monkeypatch.setattr("sys.stderr", Stderr())
    bar = report.progress_bar(10, "training", progress=progress, initial=3, unit="step")
    try:
        assert bar.disable is (not shown)
        if shown:
            assert (bar.total, bar.n, bar.desc, bar.unit, bar.leave) == (10, 3, "training",
                                                                         "step", False)
    finally:
        bar.close()


def test_a_hidden_progress_bar_does_not_import_tqdm_auto(monkeypatch):
    """tqdm.auto warns as it is imported in a Jupyter kernel without ipywidgets, so the
    walkthroughs' train(..., progress=False) printed "TqdmWarning: IProgress not found"."""
    import sys
    monkeypatch.delitem(sys.modules, "tqdm.auto", raising=False)
    report.progress_bar(10, "training", progress=False).close()
    assert "tqdm.auto" not in sys.modules


def test_progress_bar_starts_at_zero_counting_iterations():
    with report.progress_bar(4, "d", progress=True) as bar:
        assert (bar.n, bar.unit) == (0, "it")


@pytest.mark.parametrize("in_notebook,backend", [(False, "agg"), (True, "svg")])
def test_pyplot_draws_to_files_except_in_a_notebook(in_notebook, backend):
    """Outside a notebook, plots go to Agg whatever backend the environment asks for
    (svg here stands for a GUI one); in a notebook, its own backend stays."""
    import os
    import subprocess
    import sys

    code = ("import sys, types\n"
            + ("sys.modules['ipykernel'] = types.ModuleType('ipykernel')\n" if in_notebook
               else "")
            + "from nanotie import report\nprint(report.pyplot().get_backend().lower())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MPLBACKEND": "svg"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == backend
