"""The `gpt` experiment: seeds with spread, the run cache and the weight checkpoints,
the learning-rate grid judged on val, and (slow) its sanity check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanotie import cli, data
from nanotie.nn import GPTConfig
from nanotie.papers import REGISTRY
from nanotie.papers.gpt import experiment
from nanotie.train import TrainConfig

TINY_PROFILE = (GPTConfig(context=16, d_model=16, n_layer=1, n_head=2),
                TrainConfig(steps=6, batch_size=4, warmup_steps=1, eval_interval=3,
                            eval_batches=2))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY_PROFILE)


def test_gpt_reports_test_bpb_over_seeds_against_the_unigram_model(tiny, tmp_path):
    first = experiment.run(quick=True, out_dir=tmp_path / "gpt", seed=3)
    for name in ("report.md", "results.json", "loss.png"):
        assert (tmp_path / "gpt" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "gpt" / "results.json").read_text())
    assert saved["seeds"] == [3, 4] and saved["test_bpb"]["n"] == 2
    assert saved["test_bpb"]["values"] == [r["test"]["bpb"] for r in first["runs"]]
    assert all(0 < v < 8.5 for v in saved["test_bpb"]["values"])
    assert all(r["steps"] == TINY_PROFILE[1].steps for r in saved["runs"])
    assert saved["parameters_if_untied"] - saved["parameters"] == 256 * 16
    splits = experiment.prose_splits()
    assert saved["unigram_bpb"]["test"] == experiment.unigram_bpb(splits.train, splits.test)
    assert saved["verdict"]["outcome"] == first["headline"]["verdict"]
    assert set(first["headline"]) == {"claim", "where", "verdict", "figure"}
    report = (tmp_path / "gpt" / "report.md").read_text()
    assert f"{first['test_bpb']['mean']:.3f}" in report and "each seed" in report
    assert len(list((tmp_path / "cache").glob("gpt-quick-*.npz"))) == 2   # one per seed

    second = experiment.run(quick=True, out_dir=tmp_path / "gpt", seed=3)
    assert all(r["cached"] for r in second["runs"])
    assert second["test_bpb"] == first["test_bpb"]


def test_trained_gpt_loads_the_runs_checkpoint_instead_of_training(tiny, tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    settings = experiment.base_settings(quick=True, cache_dir=tmp_path / "cache")
    model, history = experiment.trained_gpt(settings, seed=1)
    seed1 = [r for r in results["runs"] if r["seed"] == 1][0]
    assert history.seconds == seed1["train_seconds"]       # recorded, not retrained
    splits = experiment.prose_splits()
    from nanotie.train import evaluate
    bpb = evaluate(model, splits.test, model.config.context, 32) / np.log(2)
    assert bpb == pytest.approx(seed1["test"]["bpb"], rel=1e-6)


def test_a_checkpoint_is_keyed_by_the_code_version_and_the_device(tmp_path):
    """Weights trained by older code, or on another device, are never loaded as these."""
    settings = experiment.base_settings(quick=True, cache_dir=tmp_path)
    path = experiment._checkpoint_path(settings, 0, "cpu")
    assert path == experiment._checkpoint_path(dict(settings), 0, "cpu")
    assert path != experiment._checkpoint_path(settings, 0, "cuda")
    assert path != experiment._checkpoint_path({**settings, "version": -1}, 0, "cpu")
    assert path != experiment._checkpoint_path(settings, 1, "cpu")


def test_the_rate_is_chosen_on_val_over_every_seed(tiny, tmp_path):
    grid = (1e-3, 1e-2)
    results = experiment.run(quick=True, out_dir=tmp_path / "gpt", lr_grid=grid)
    tuning = results["tuning"]
    assert set(tuning) == {str(lr) for lr in grid}
    assert results["lr"] == float(min(tuning, key=lambda lr: tuning[lr]["mean"]))
    for lr in grid:                         # every rate at every seed, judged on val
        val = sorted(r["val"]["bpb"] for r in results["runs"] if r["lr"] == lr)
        assert sorted(tuning[str(lr)]["values"]) == val and len(val) == 2
    at_best = [r for r in results["runs"] if r["lr"] == results["lr"]]
    assert sorted(r["seed"] for r in at_best) == [0, 1]
    assert results["test_bpb"]["values"] == [r["test"]["bpb"] for r in at_best]
    with pytest.raises(ValueError, match="lr_grid"):
        experiment.run(quick=True, out_dir=tmp_path / "gpt", lr_grid=(0.0,))


def test_the_quick_report_flags_a_swept_rate_within_the_seeds_noise_of_the_choice(
        tiny, tmp_path, monkeypatch):
    """The quick profile quotes the sweep that chose its rate: a rate whose seeds straddle
    the choice is flagged (the tuning rule), one far from it is not; the chosen rate's
    figure is this run's."""
    monkeypatch.setattr(experiment, "QUICK_LR_SWEEP",
                        {3e-3: (99.0, 99.0), 7e-3: (0.0, 20.0), 8e-3: (30.0, 30.0)})
    results = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    report = (tmp_path / "gpt" / "report.md").read_text()
    row = [line for line in report.splitlines() if line.startswith("| GPT (tied) |")][-1]
    assert f"**0.003: {results['val_bpb']['mean']:.3f}**" in row and "99.000" not in row
    assert "0.007: 10.000" in row and "0.008: 30.000" in row
    assert "Within the seeds' noise of the choice: GPT (tied) (0.007)." in report


def test_the_shared_prose_splits_are_disjoint_and_cover_the_corpus():
    splits = experiment.prose_splits()
    whole = np.frombuffer(data.prose_corpus(), dtype=np.uint8)
    np.testing.assert_array_equal(np.concatenate([splits.train, splits.val, splits.test]),
                                  whole)


def test_unigram_bpb_is_the_cross_entropy_of_smoothed_byte_counts():
    train_ids = np.array([0] * 254 + [1] * 2)       # counts + 1: 255, 3, then 1 x 254
    val_ids = np.array([1, 1])
    assert experiment.unigram_bpb(train_ids, val_ids) == pytest.approx(-np.log2(3 / 512))
    assert experiment.unigram_bpb(train_ids, np.array([0])) < 1.1


def test_cli_runs_registered_experiments_and_prints_a_summary(tiny, tmp_path, capsys):
    assert "gpt" in REGISTRY
    assert cli.main(["reproduce", "gpt", "--out", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "Summary" in out and "gpt" in out and "test bpb" in out
    assert (tmp_path / "gpt" / "report.md").exists()


@pytest.mark.slow
def test_quick_profile_beats_the_unigram_baseline_by_a_bit_per_byte(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    assert results["verdict"]["outcome"] == "holds"
    assert max(results["test_bpb"]["values"]) < results["unigram_bpb"]["test"] - 1.0
