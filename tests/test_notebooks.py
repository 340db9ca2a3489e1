"""The notebooks: each jupytext ``.py`` source has an up-to-date paired ``.ipynb``, and
every notebook runs from top to bottom in quick mode, asserting its own claims.

The kernel is the interpreter running this test: we register a kernelspec whose argv
is ``sys.executable`` under a temporary JUPYTER_PATH, with a name nothing else uses.
Asking nbclient for "python3" instead would pick whichever kernelspec of that name
comes first on the Jupyter path (a user-level one can point at another Python that
lacks nanotie), and only fall back to ipykernel's own when there is none.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("*.py"))
KERNEL_NAME = "nanotie-test-python"
CELL_TIMEOUT_S = 300          # per cell; the notebooks take seconds in quick mode
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _resync_hint(source: Path) -> str:
    return (f"re-sync the pair with: jupytext --sync {source.relative_to(NOTEBOOK_DIR.parent)}"
            f"  (or: jupytext --to ipynb {source.relative_to(NOTEBOOK_DIR.parent)})")


def _cells(nb) -> list:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_paired_ipynb_matches_source(source: Path):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing; {_resync_hint(source)}"
    expected = _cells(jupytext.read(source))
    actual = _cells(nbformat.read(paired, as_version=4))
    for i, (want, got) in enumerate(zip(expected, actual)):
        assert want == got, (f"{paired.name} cell {i} differs from {source.name}:\n"
                             f"  .py:    {want[0]} {want[1][:200]!r}\n"
                             f"  .ipynb: {got[0]} {got[1][:200]!r}\n{_resync_hint(source)}")
    assert len(expected) == len(actual), (
        f"{source.name} has {len(expected)} cells, {paired.name} has {len(actual)}; "
        f"{_resync_hint(source)}")


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_paired_ipynb_has_no_outputs(source: Path):
    paired = source.with_suffix(".ipynb")
    if not paired.exists():
        pytest.skip(f"{paired.name} is missing (reported by the pairing test)")
    nb = nbformat.read(paired, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{paired.name} holds executed outputs in cells {dirty}; commit it "
                       f"without them. {_resync_hint(source)} after clearing, e.g. "
                       f"jupyter nbconvert --clear-output --inplace {paired.name}")


@pytest.fixture
def kernel_env(tmp_path_factory, monkeypatch):
    """A kernelspec for this interpreter on a private Jupyter path, and the notebook
    environment: quick mode, a non-interactive matplotlib backend."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"nanotie tests ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    monkeypatch.setenv("NANOTIE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return KERNEL_NAME


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source: Path, kernel_env, tmp_path):
    paired = source.with_suffix(".ipynb")
    if not paired.exists():
        pytest.skip(f"{paired.name} is missing (reported by the pairing test)")
    nb = nbformat.read(paired, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_env, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}})   # cwd: files land in tmp
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        # The message holds the failing cell's source and its traceback.
        failure = f"{paired.name} failed:\n{ANSI.sub('', str(exc))}"
    except nbclient.exceptions.CellTimeoutError as exc:
        failure = f"{paired.name}: a cell ran past {CELL_TIMEOUT_S}s: {exc}"
    if failure:   # outside the except block, so the report shows it once
        pytest.fail(failure, pytrace=False)
