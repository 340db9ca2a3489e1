"""Results pages: each paper's ``README.md`` regenerated from its latest reproduction.

``python -m nanotie pages`` reads ``runs/<experiment>/`` (what ``reproduce`` wrote) and

* copies the experiment's ``report.md`` to its package's ``README.md`` (for example
  ``nanotie/papers/tied_lora/README.md``), under a header that says which profile and
  when, with its plots copied to ``docs/results/<experiment>/`` and the links rewritten;
* rewrites the one results table of the top ``README.md`` (between the markers
  ``<!-- results:start -->`` and ``<!-- results:end -->``) from each experiment's
  ``headline``: the paper's claim, where it is, the verdict and the headline figure.

A ``--full`` run written to another folder (``reproduce --full --out runs-full``) is
added to each page as a second section with ``--full-from runs-full``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from .files import atomic_write, write_text
from .papers import REGISTRY

ROOT = Path(__file__).resolve().parent.parent       # the repository (an editable install)
START, END = "<!-- results:start -->", "<!-- results:end -->"
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")

__all__ = ["write_pages", "results_table"]


def _load(run_dir: Path) -> tuple[str, dict] | None:
    """``(report.md, results.json)`` of a finished run; None if it did not finish."""
    report, results = run_dir / "report.md", run_dir / "results.json"
    if not report.exists() or not results.exists():
        return None
    try:
        text = report.read_text(encoding="utf-8")
        found = json.loads(results.read_text(encoding="utf-8"))
        if not _written_by_reproduce(found):
            raise ValueError("not what reproduce writes: a dict with a profile name and "
                             "a headline dict or list of dicts")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{getattr(exc, 'filename', None) or results}: cannot be read "
                         f"({exc}); rerun python -m nanotie reproduce for it") from None
    return text, found


def _written_by_reproduce(found) -> bool:
    """Whether ``found`` has the shape of reproduce's results.json: a non-empty dict whose
    profile is a plain name (it names a folder under docs/results) and whose headline is
    a dict or a list of dicts."""
    if not isinstance(found, dict) or not found:
        return False
    heads = found.get("headline") or {}
    heads = heads if isinstance(heads, list) else [heads]
    return bool(re.fullmatch(r"[\w-]+", str(found.get("profile", "quick")))) and all(
        isinstance(h, dict) for h in heads)


def _section(name: str, run_dir: Path, loaded: tuple, root: Path, page: Path) -> str:
    """``report.md`` of one run (``loaded``: what :func:`_load` read from ``run_dir``),
    its plots copied next to the docs and linked from page."""
    text, results = loaded
    profile = results.get("profile", "quick")
    images = root / "docs" / "results" / name / profile

    def relink(m):
        src = run_dir / m.group(2)
        if not src.exists():
            return m.group(0)
        raw = src.read_bytes()               # read, then write: an error says which
        with atomic_write(images / src.name) as f:
            f.write(raw)
        rel = Path("../" * (len(page.parent.relative_to(root).parts))) / images.relative_to(root)
        return f"![{m.group(1)}]({(rel / src.name).as_posix()})"

    when = _dt.datetime.fromtimestamp((run_dir / "results.json").stat().st_mtime,
                                      _dt.timezone.utc).strftime("%Y-%m-%d")
    body = _demote(_IMAGE.sub(relink, text))       # the page has its own title
    flag = "" if profile == "quick" else " --full"
    seeds = results.get("seeds")                  # a --seed run's figures need its --seed
    flag += f" --seed {seeds[0]}" if isinstance(seeds, list) and seeds and seeds[0] else ""
    return (f"## The {profile} profile\n\n*Run on {when} with `python -m nanotie reproduce "
            f"{name}{flag}`; device {results.get('device', 'cpu')}.*\n\n{body.strip()}\n")


def _demote(markdown: str, levels: int = 2) -> str:
    """Every heading ``levels`` deeper (``#`` -> ``###``), outside fenced code blocks."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,4} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def write_pages(runs="runs", full_runs=None, root=ROOT) -> list[Path]:
    """Regenerate every results page whose experiment has a finished run in ``runs``
    (and ``full_runs``), and the top README's results table. Returns the pages written."""
    runs, root = Path(runs), Path(root)
    if not (root / "pyproject.toml").exists():
        raise FileNotFoundError(f"{root} is not a nanotie checkout: results pages are "
                                "written into the repository (pip install -e .)")
    full_runs = None if full_runs is None else Path(full_runs)
    for folder in filter(None, (runs, full_runs)):    # a typo must not drop a section
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {'not a' if folder.exists() else 'no such'} "
                                    "folder; run python -m nanotie reproduce first")
    # Read every run before writing anything, so that a damaged one changes no page.
    found = {name: (_load(runs / name), full_runs and _load(full_runs / name))
             for name in REGISTRY}
    for name, (quick, full) in found.items():     # the same profile twice: one page, twice
        if quick and full and quick[1].get("profile") == full[1].get("profile"):
            raise ValueError(f"{full_runs / name} holds a {full[1].get('profile')} run, as "
                             f"{runs / name} does; --full-from takes the folder of a "
                             "reproduce --full")
    texts, headlines = {}, {}
    for name, exp in REGISTRY.items():
        quick, full = found[name]
        if quick is None:
            continue
        page = root.joinpath(*exp.module.split(".")[:-1]) / "README.md"   # the paper's package
        parts = [f"# Results: {exp.title}\n",
                 "Regenerated by `python -m nanotie pages` from the latest reproduction; "
                 "the mechanism itself is described in this package's docstrings and in "
                 "the notebook.\n",
                 _section(name, runs / name, quick, root, page)]
        if full is not None:
            parts.append(_section(name, full_runs / name, full, root, page))
        texts[page] = "\n".join(parts)        # written once every plot has been copied
        headlines[name] = (quick[1].get("headline") or {}, page)
    for page, text in texts.items():
        write_text(page, text)
    written = list(texts)
    readme = root / "README.md"
    if headlines and readme.exists():
        text = readme.read_text(encoding="utf-8")
        if START in text and END in text:
            head, rest = text.split(START, 1)
            table, tail = rest.split(END, 1)
            # An experiment without a run in ``runs`` keeps its row.
            kept = {}
            for line in table.splitlines():
                m = re.match(r"\| \[([\w-]+)\]\(", line)
                if m and m.group(1) not in headlines:
                    kept.setdefault(m.group(1), []).append(line)
            new = results_table(headlines, root, kept)
            write_text(readme, f"{head}{START}\n{new}\n{END}{tail}")
            written.append(readme)
    return written


def results_table(headlines: dict, root=ROOT, kept: dict | None = None) -> str:
    """The top README's table: ``{name: (headline dict, page path)}``, in the registry's
    order; ``kept``: ``{name: [row]}``, rows taken as they are for the other experiments."""
    lines = ["| experiment | the paper's claim (where) | verdict | headline figure (test split) |",
             "|---|---|---|---|"]
    kept = kept or {}
    for name in list(REGISTRY) + [n for n in headlines if n not in REGISTRY]:
        if name not in headlines:
            lines += kept.get(name, [])
            continue
        heads, page = headlines[name]
        link = Path(page).relative_to(root).as_posix()
        for h in heads if isinstance(heads, list) else [heads]:   # one row per claim
            where = f" ({h['where']})" if h.get("where") else ""
            lines.append(f"| [{name}]({link}) | {h.get('claim', '')}{where} | "
                         f"{h.get('verdict', '')} | {h.get('figure', '')} |")
    return "\n".join(lines)
