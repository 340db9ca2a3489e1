"""The notebooks: each jupytext ``.py`` source has an up-to-date paired ``.ipynb``, and
every notebook runs from top to bottom in quick mode, asserting its own claims.

The notebooks leave their exercises to the reader: a learner's cell ends with a stub
``def NAME(...)`` that raises NotImplementedError. Before running a notebook the test
writes the answer in its place, so every checker runs and asserts: for a registered
exercise (``exercises.get(N).check_in_notebook(NAME)``) its reference solution,
renamed; for a notebook's own exercise, the solution in :data:`OWN_ANSWERS`.

The kernel is the interpreter running this test: we register a kernelspec whose argv
is ``sys.executable`` under a temporary JUPYTER_PATH, with a name nothing else uses.
Asking nbclient for "python3" instead would pick whichever kernelspec of that name
comes first on the Jupyter path (a user-level one can point at another Python that
lacks nanotie), and only fall back to ipykernel's own when there is none.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from nanotie import exercises

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("*.py"))
KERNEL_NAME = "nanotie-test-python"
CELL_TIMEOUT_S = 300          # per cell; the notebooks take seconds in quick mode
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The answers to the exercises that live only in a notebook (00, 01 and 02 have one each).
OWN_ANSWERS = {
    "softplus_backward": """\
def softplus_backward(a, g):
    xp = nanotie.backend.xp_of(a)
    return (g * 0.5 * (1 + xp.tanh(0.5 * a)),)          # sigmoid(a), without overflow
""",
    "share_first_block": """\
def share_first_block(model):
    for i in range(1, len(model.blocks)):
        model.blocks[i] = model.blocks[0]
    return model
""",
    "my_count": """\
def my_count(config, L, d):
    r = config.rank
    copies = 1 if config.tie_AB else L                  # a tied matrix exists once
    matrices = copies * (config.train_A * r * d + config.train_B * 3 * d * r)
    return matrices + L * (config.train_u * r + config.train_v * 3 * d)
""",
}
STUB = re.compile(r"^def (\w+)\(", re.M)
CHECKED = re.compile(r"exercises\.get\((\d+)\)\.check_in_notebook\((\w+)\)")


def answer_exercises(nb) -> int:
    """Replace each exercise stub (from its ``def`` to the end of its cell) with the
    answer; returns how many there were."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    numbers = {name: int(n) for cell in code for n, name in CHECKED.findall(cell.source)}
    answered = 0
    for cell in code:
        if "raise NotImplementedError" not in cell.source:
            continue
        stub = STUB.search(cell.source)
        assert stub, f"an exercise cell without a stub function:\n{cell.source}"
        name = stub.group(1)
        if name in numbers:
            src = textwrap.dedent(inspect.getsource(exercises.get(numbers[name]).reference))
            answer = src.replace("def reference(", f"def {name}(", 1)
        else:
            assert name in OWN_ANSWERS, f"no answer for the notebook's exercise {name}"
            answer = OWN_ANSWERS[name]
        cell.source = cell.source[:stub.start()] + answer
        answered += 1
    return answered


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
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("notebook-tmp")))  # their runs
    return KERNEL_NAME


def _execute(source: Path, kernel_name: str, tmp_path, answered: bool):
    """Run the paired notebook (with the exercises answered, or as a learner gets it);
    returns the text of all its outputs."""
    paired = source.with_suffix(".ipynb")
    if not paired.exists():
        pytest.skip(f"{paired.name} is missing (reported by the pairing test)")
    nb = nbformat.read(paired, as_version=4)
    if answered:
        assert answer_exercises(nb) >= 1, f"{paired.name} has no exercise stub"
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
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
    return "\n".join(out.get("text", "") for cell in nb.cells
                     for out in cell.get("outputs", []))


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source: Path, kernel_env, tmp_path):
    printed = _execute(source, kernel_env, tmp_path, answered=True)
    assert "not written yet" not in printed, "an exercise ran without its answer"


# The notebooks with an exercise of their own (the others' are registered exercises,
# which check_in_notebook replaces by their reference when unwritten).
UNANSWERED = [s for s in SOURCES if "skip_if_unwritten" in s.read_text()]


@pytest.mark.parametrize("source", UNANSWERED, ids=[p.stem for p in UNANSWERED])
def test_an_unanswered_notebook_says_so_and_runs_to_its_end(source: Path, kernel_env,
                                                             tmp_path):
    """As a learner gets it: every exercise says "not written yet", nothing crashes."""
    printed = _execute(source, kernel_env, tmp_path, answered=False)
    assert printed.count("not written yet") >= 2
