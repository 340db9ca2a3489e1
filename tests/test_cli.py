"""The command line never loses work and never answers with a traceback.

Usage errors (a negative seed, an empty --out, an output folder that cannot be
written) are found before any training; a failure during a run (a full disk, a
cached checkpoint from another run) ends in one line; a damaged checkpoint is named
and retrained. Experiments here are small fakes registered for the test, so nothing
trains for long.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from nanotie import cli, data, files, nn, report
from nanotie import train as T


class Fake:
    """A registry entry whose run() records that it was called, then does ``action``."""

    def __init__(self, action=None):
        self.name, self.title, self.calls, self.action = "fake", "a fake experiment", [], action
        self.seeds = []

    def run(self, quick, out_dir, seed=0, device="cpu", runner=None):
        self.calls.append(out_dir)
        self.seeds.append(seed)
        if self.action:
            self.action(out_dir)
        return {"summary": {"result": "ok"}}


@pytest.fixture
def fake(monkeypatch):
    entry = Fake()
    monkeypatch.setattr(cli, "REGISTRY", {"fake": entry})
    return entry


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("nanotie: error:")
    return err[0]


# ------------------------------------------------------ found before any training


def test_a_negative_seed_is_a_usage_error_before_anything_is_written(fake, tmp_path,
                                                                     capsys):
    out = tmp_path / "o"
    assert cli.main(["reproduce", "--seed", "-1", "--out", str(out)]) == 2
    assert "--seed -1" in one_error_line(capsys)
    assert not fake.calls and not out.exists()


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_a_usage_error_not_the_current_folder(fake, tmp_path, monkeypatch,
                                                              capsys, out):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "--out", out]) == 2
    assert "--out" in one_error_line(capsys)
    assert not fake.calls and list(tmp_path.iterdir()) == []


def test_an_empty_scheduler_is_a_usage_error_not_a_local_run(fake, tmp_path, capsys):
    """``--scheduler $ADDRESS`` with the variable unset must not run on this machine."""
    out = tmp_path / "o"
    assert cli.main(["reproduce", "--scheduler", "", "--out", str(out)]) == 2
    assert "--scheduler" in one_error_line(capsys)
    assert not fake.calls and not out.exists()


def test_an_unwritable_experiment_folder_is_found_before_training(fake, tmp_path, capsys):
    """``o/fake`` cannot be written (here a file stands where the folder goes: the suite
    runs as root, which ignores chmod): one line naming it, and the run never starts."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "fake").write_text("not a folder")
    assert cli.main(["reproduce", "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and str(out / "fake") in line
    assert "[Errno" not in line, "the reason in words, the folder named once"
    assert not fake.calls


def test_a_full_disk_is_found_before_training(fake, tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.tempfile, "TemporaryFile", no_space)
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and "[Errno" not in line
    assert not fake.calls


def test_a_folder_given_as_a_string_is_probed_like_a_path(tmp_path):
    assert files.unwritable(str(tmp_path / "new" / "runs")) is None
    assert (tmp_path / "new" / "runs").is_dir() and not list((tmp_path / "new" / "runs").iterdir())


# ------------------------------------------------------------ failures during a run


def test_a_disk_that_fills_during_a_run_ends_in_one_line(fake, tmp_path, monkeypatch,
                                                        capsys):
    def fill(out_dir):
        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")     # as fsync does
        monkeypatch.setattr(files.os, "fsync", no_space)
        files.write_text(out_dir / "report.md", "# a report\n")
    fake.action = fill
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    report_md = tmp_path / "o" / "fake" / "report.md"
    assert line.endswith(f"cannot write {report_md}: No space left on device")
    assert list(report_md.parent.iterdir()) == [], "no half file, no temporary left"


def test_a_file_that_cannot_be_read_is_named_as_a_read_not_a_write(fake, tmp_path, capsys):
    """A file a run reads that is gone (or a folder where it should be) is not reported
    as a file that cannot be written; a failed save names its file, not the temporary."""
    def read_missing(out_dir):
        (tmp_path / "corpus.txt").read_bytes()
    fake.action = read_missing
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    assert line.endswith(f"cannot read {tmp_path / 'corpus.txt'}: No such file or directory")

    def save_over_a_folder(out_dir):
        (out_dir / "ck.npz").mkdir()
        files.write_text(out_dir / "ck.npz", "x")
    fake.action = save_over_a_folder
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    assert f"cannot write {tmp_path / 'o' / 'fake' / 'ck.npz'}: " in line
    assert ".tmp" not in line


def test_ctrl_c_during_a_run_ends_in_one_line_and_exit_status_130(fake, tmp_path, capsys):
    def interrupt(out_dir):
        raise KeyboardInterrupt
    fake.action = interrupt
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip() == "nanotie: interrupted"


def test_a_checkpoint_from_another_run_ends_in_one_line(fake, tmp_path, capsys):
    def clash(out_dir):
        raise T.CheckpointError(f"checkpoint {out_dir}/x.npz was made with another "
                                "TrainConfig (lr: checkpoint 0.01, now 0.02): delete it or "
                                "restore the settings")
    fake.action = clash
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    assert "x.npz" in line and "delete it" in line


def test_a_state_dict_that_does_not_fit_ends_in_one_line(fake, tmp_path, capsys):
    def misfit(out_dir):
        raise nn.StateDictError("load_state_dict: the checkpoint does not fit this GPT:\n"
                                "  - 'wpe.weight': checkpoint shape (9, 8) != model shape "
                                "(8, 8)\n  - missing key 'ln_f.bias'")
    fake.action = misfit
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    assert "wpe.weight" in line and "ln_f.bias" in line


def test_a_run_made_for_another_corpus_ends_in_one_line(fake, tmp_path, capsys):
    """As on a cluster whose workers run another Python, which ships other text."""
    def elsewhere(out_dir):
        from nanotie.protocol import check_corpus
        check_corpus("0123", "4567", "lm_run")
    fake.action = elsewhere
    assert cli.main(["reproduce", "--out", str(tmp_path / "o")]) == 1
    assert "lm_run: the corpus differs" in one_error_line(capsys)


def test_a_damaged_cached_checkpoint_is_named_and_retrained(fake, tmp_path, capsys):
    """The real training loop under the CLI: an empty .npz left in the cache (a disk
    that filled, say) is named in one line, the run trains, and the rerun is clean."""
    ids = np.frombuffer(data.prose_corpus(20_000), dtype=np.uint8)

    def tiny_run(out_dir):
        model = nn.GPT(nn.GPTConfig(vocab_size=256, context=8, d_model=8, n_layer=1,
                                    n_head=2))
        cfg = T.TrainConfig(steps=2, batch_size=2, warmup_steps=1, eval_interval=2,
                            eval_batches=1)
        T.train(model, ids[:15_000], ids[15_000:], cfg, checkpoint=out_dir / "ck.npz",
                progress=False)
    fake.action = tiny_run
    out = tmp_path / "o"
    (out / "fake").mkdir(parents=True)
    (out / "fake" / "ck.npz").write_bytes(b"")
    assert cli.main(["reproduce", "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "ck.npz" in line]
    assert len(err) == 1 and "empty" in err[0] and "training from scratch" in err[0]
    assert cli.main(["reproduce", "--out", str(out)]) == 0
    assert "ck.npz" not in capsys.readouterr().err


# --------------------------------------------------------- plots are written whole


def test_a_failed_plot_save_leaves_the_old_png_and_no_partial_file(tmp_path):
    plt = report.pyplot()
    path = tmp_path / "plot.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.save_figure(fig, path)
    old = path.read_bytes()
    assert old.startswith(b"\x89PNG")

    fig, ax = plt.subplots()

    def half_then_full_disk(target, **kwargs):
        if hasattr(target, "write"):
            target.write(b"\x89PNG half")
        else:
            with open(target, "wb") as f:
                f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")
    fig.savefig = half_then_full_disk
    with pytest.raises(OSError):
        report.save_figure(fig, path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert fig.number not in plt.get_fignums()        # closed even when it failed


# ------------------------------------------------------------ what a run prints


def test_a_run_says_what_it_runs_where_it_wrote_and_how_long_it_took(fake, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["reproduce", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== fake (quick profile, cpu) ==" in printed
    assert f"wrote {out / 'fake'}/report.md" in printed
    assert "fake" in printed.split("Summary:")[1] and "result ok  time 0 s" in printed
    assert fake.seeds == [0], "seeds start at 0 unless --seed says otherwise"


# ------------------------------------------------------------ the other commands


def test_no_command_prints_the_usage_and_exit_status_2(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_pages_passes_both_folders_and_says_what_it_wrote(monkeypatch, tmp_path, capsys):
    from nanotie import pages

    calls = []

    def write_pages(runs, full_runs):
        calls.append((runs, full_runs))
        return [tmp_path / "a.md"]
    monkeypatch.setattr(pages, "write_pages", write_pages)
    assert cli.main(["pages", "--from", "r", "--full-from", "f"]) == 0
    assert calls == [(Path("r"), Path("f"))]
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'a.md'}"


def test_pages_from_a_folder_without_runs_writes_nothing_and_says_so(tmp_path, capsys):
    assert cli.main(["pages", "--from", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == (f"no finished reproduction in {tmp_path}; "
                                               "nothing written")
    assert cli.main(["pages", "--from", str(tmp_path / "nope")]) == 2
    assert "no such folder" in one_error_line(capsys)


def test_site_refuses_zero_jobs_before_building(tmp_path, capsys):
    assert cli.main(["site", "--jobs", "0", "--out", str(tmp_path / "site")]) == 2
    assert "--jobs 0: need at least 1" in one_error_line(capsys)
    assert not (tmp_path / "site").exists()


def test_site_finds_an_unwritable_out_or_a_bad_repo_url_before_building(tmp_path, monkeypatch,
                                                                        capsys):
    import importlib.util

    def build(*args):
        raise AssertionError("the site was built before its arguments were checked")
    monkeypatch.setattr(importlib.util, "spec_from_file_location", build)
    (tmp_path / "a-file").write_text("")
    assert cli.main(["site", "--out", str(tmp_path / "a-file" / "site")]) == 2
    line = one_error_line(capsys)
    assert "cannot write in" in line and str(tmp_path / "a-file" / "site") in line
    assert cli.main(["site", "--repo-url", "github.com/OWNER/nanotie/blob/main", "--out",
                     str(tmp_path / "site")]) == 2
    assert "--repo-url github.com/OWNER" in one_error_line(capsys)


def test_site_without_the_docs_extra_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sphinx" else real(name, *a))
    assert cli.main(["site", "--out", str(tmp_path / "site")]) == 2
    assert "missing sphinx" in one_error_line(capsys)
    assert not (tmp_path / "site").exists()


def test_exercise_paths_of_the_wrong_kind_are_usage_errors(tmp_path, capsys):
    a_file = tmp_path / "stub.py"
    a_file.write_text("")
    assert cli.main(["exercise", "start", "1", "--dir", str(a_file)]) == 2
    assert "exists and is not a folder" in one_error_line(capsys)
    assert cli.main(["exercise", "start", "1", "--dir", str(a_file / "sub")]) == 2
    line = one_error_line(capsys)
    assert f"cannot write the stub in {a_file / 'sub'}: " in line and "[Errno" not in line
    assert cli.main(["exercise", "check", "1", str(tmp_path)]) == 2
    assert f"{tmp_path}: not a file" in one_error_line(capsys)


def test_exercise_list_ends_with_how_to_start_one(capsys):
    assert cli.main(["exercise", "list"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "Start one with: python -m nanotie exercise start N"


def test_list_names_the_distillation_that_hyena_reproduces(capsys):
    """The Laughing Hyena distillery's claims are judged by the hyena experiment, whose
    line said "filters" instead: a learner could not find that paper's reproduction."""
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "distillation" in next(line for line in lines if line.split()[0] == "hyena")


def test_pages_help_says_which_files_it_rewrites_and_where(capsys):
    """pages --help listed its options alone: nothing said that it rewrites tracked
    files of the checkout nanotie is imported from."""
    with pytest.raises(SystemExit):
        cli.main(["pages", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "README.md" in text and str(Path(cli.__file__).resolve().parents[1]) in text
