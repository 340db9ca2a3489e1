"""The `gpt` experiment: its outputs, its checkpoint cache, and (slow) its claim."""

from __future__ import annotations

import json

import pytest

from nanotie import cli
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


def test_gpt_writes_report_results_and_plot_and_reuses_its_cache(tiny, tmp_path):
    first = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    for name in ("report.md", "results.json", "loss.png"):
        assert (tmp_path / "gpt" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "gpt" / "results.json").read_text())
    assert saved["val_bpb"] == first["val_bpb"] and 0 < first["val_bpb"] < 8.5
    assert saved["steps"] == TINY_PROFILE[1].steps
    assert len(first["sample"]) > 0 and "val bpb" in first["summary"]
    assert saved["parameters_if_untied"] - saved["parameters"] == 256 * 16
    assert f"{first['val_bpb']:.3f}" in (tmp_path / "gpt" / "report.md").read_text()
    cached = list((tmp_path / "cache").glob("gpt-quick-*.npz"))
    assert len(cached) == 1

    second = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    # Loaded, not retrained: the recorded training time comes from the cache.
    assert second["train_seconds"] == first["train_seconds"]
    assert second["val_bpb"] == first["val_bpb"]


def test_the_cache_key_changes_with_the_settings(tiny, tmp_path):
    experiment.run(quick=True, out_dir=tmp_path / "gpt", seed=0)
    experiment.run(quick=True, out_dir=tmp_path / "gpt", seed=1)
    assert len(list((tmp_path / "cache").glob("gpt-quick-*.npz"))) == 2


def test_cli_runs_registered_experiments_and_prints_a_summary(tiny, tmp_path, capsys):
    assert "gpt" in REGISTRY
    assert cli.main(["reproduce", "gpt", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Summary" in out and "gpt" in out and "val bpb" in out
    assert (tmp_path / "gpt" / "report.md").exists()


@pytest.mark.slow
def test_quick_profile_beats_the_unigram_baseline_by_a_bit_per_byte(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "gpt")
    assert results["val_bpb"] < results["unigram_bpb"] - 1.0
