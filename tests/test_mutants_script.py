"""scripts/mutants.py makes the changes it says, and only well-formed ones."""

import ast
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutants.py"
spec = importlib.util.spec_from_file_location("mutants_script", SCRIPT)
mutants_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutants_script)

SOURCE = '''def f(a, b=1):
    """Doc."""
    c = a + b * 2
    if a <= b and not c:
        c -= 1
    return c is None or a in (b,)
'''


def test_each_mutant_parses_differs_and_keeps_the_line_numbers():
    found = mutants_script.mutants(SOURCE)
    assert found
    for line, what, mutated in found:
        text = mutated.decode()
        ast.parse(text)
        assert text != SOURCE and len(text.splitlines()) == len(SOURCE.splitlines()), what
        changed = [i + 1 for i, (x, y) in enumerate(zip(SOURCE.splitlines(),
                                                        text.splitlines())) if x != y]
        assert changed[0] == line, what          # an if or a for may span more lines


def test_the_kinds_of_change():
    found = {(line, what) for line, what, _ in mutants_script.mutants(SOURCE)}
    for expected in [(1, "1 -> 2"), (3, "+ -> -"), (3, "* -> /"), (3, "2 -> 3"),
                     (3, "Assign -> pass"), (4, "<= -> <"), (4, "and -> or"), (4, "drop not"),
                     (4, "If -> pass"), (5, "-= -> +="), (6, "is -> is not"),
                     (6, "in -> not in"), (6, "or -> and")]:
        assert expected in found, expected
    assert not any("Doc" in what or what == "Return -> pass" for _, what in found)


def test_report_before_a_run_and_zero_jobs_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mutants_script, "WORK", tmp_path)
    (tmp_path / "lines.json").write_text('{"lines": {}, "seconds": {}}')
    for argv in (["report"], ["run", "nanotie/files.py", "--jobs", "0"]):
        monkeypatch.setattr("sys.argv", ["mutants.py", *argv])
        with pytest.raises(SystemExit) as exit_:
            mutants_script.main()
        assert exit_.value.code == 2, argv
        assert "error:" in capsys.readouterr().err, argv


def test_a_test_that_no_longer_exists_stops_the_run_before_any_mutant(tmp_path, monkeypatch):
    rel = "nanotie/__init__.py"
    line = mutants_script.mutants((mutants_script.ROOT / rel).read_text())[0][0]
    (tmp_path / "lines.json").write_text(json.dumps(
        {"lines": {rel: {str(line): ["tests/test_gone.py::test_gone"]}}, "seconds": {}}))
    monkeypatch.setattr(mutants_script, "WORK", tmp_path)
    with pytest.raises(SystemExit, match="a test of the map is gone"):
        mutants_script.run([rel], 1)
    assert not (tmp_path / "results.jsonl").exists()


def test_a_mutant_that_breaks_a_test_modules_import_is_killed(tmp_path):
    """pytest says its tests are not found (exit status 4), as for a test that is gone."""
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "test_m.py").write_text("import m\n\n\ndef test_x():\n    assert m.x == 1\n")
    mutated = b"raise ImportError('the mutant')\n"
    assert mutants_script.run_one(tmp_path, "m.py", mutated, ["test_m.py::test_x"]) == "killed"
    assert (tmp_path / "m.py").read_text() == "x = 1\n"


def test_map_on_a_failing_suite_stops_in_one_line(tmp_path, monkeypatch):
    """It used to end in a CalledProcessError traceback."""
    import subprocess

    monkeypatch.setattr(mutants_script, "WORK", tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1))
    with pytest.raises(SystemExit, match="the suite did not pass .pytest exit 1"):
        mutants_script.map_lines()
