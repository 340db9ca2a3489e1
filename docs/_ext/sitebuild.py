"""Build the course site: ``python -m nanotie site --out site/`` (or
``python docs/_ext/sitebuild.py --out site/``), offline, from the repository.

The pages are generated from whatever is in the tree, found by globbing:

* the home page, from README.md's opening and its set-up commands;
* ``walkthroughs/``: every ``notebooks/NN_*.py``, executed in quick mode
  (:mod:`notebooks`) and rendered by myst-nb with its plots;
* ``papers/``: one page per package under ``nanotie/papers/``: the claim (from its
  results page), the equations (from its walkthrough in README.md's paper table), the
  mechanism annotated side by side with a link to its tie, and the results page;
* ``exercises``: what each registered exercise teaches and how to start and check it,
  never its solution;
* ``api/``: autodoc, one page per package folder;
* ``code/``: every source file the pages link to, annotated (Python) or listed, with
  line anchors, so that each "source" link lands on its line offline.

Sphinx runs on a staging folder holding these pages; ``docs/conf.py`` is its
configuration. ``site.json`` in the output lists the pages and each walkthrough's
figure count, for the browser test.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from notebooks import NotebookFailed  # noqa: E402,F401  (beside this file; for the CLI)
from rstify import rstify  # noqa: E402
DOCS = HERE.parent
ROOT = DOCS.parent
IMAGE_SUFFIXES = {".png", ".svg", ".jpg", ".jpeg", ".gif"}
NEEDED = ["sphinx", "myst_nb", "furo", "latex2mathml", "jupytext", "nbclient", "ipykernel"]


class SiteError(RuntimeError):
    """Why the site cannot be built, in one line."""


def missing_packages() -> list[str]:
    import importlib.util
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def check_checkout(root: Path = ROOT) -> None:
    for needed in ("nanotie/__init__.py", "notebooks", "README.md", "docs/conf.py"):
        if not (root / needed).exists():
            raise SiteError(f"{root}: not a nanotie repository checkout (no {needed}); "
                            f"the site is built from a clone of the repository")


# ------------------------------------------------------------------ what is in the tree

def doc_of(path: Path) -> str:
    try:
        return ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def title_of(path: Path, fallback: str) -> str:
    """A module's title: its docstring's first line, without the full stop."""
    return first_line(doc_of(path)).rstrip(".") or fallback


def has_solution(path: Path) -> bool:
    """An exercise module: it defines ``reference``, the solution the site never shows."""
    try:
        tree = ast.parse(path.read_text())
    except SyntaxError:
        return True
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "reference":
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "reference"
                                                for t in node.targets):
            return True
    return False


def library_files(root: Path) -> list[Path]:
    files = sorted(p for p in (root / "nanotie").rglob("*.py") if "__pycache__" not in p.parts)
    return [p for p in files if not (p.parent.name == "exercises" and has_solution(p))]


def notebook_sources(root: Path) -> list[Path]:
    return sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.py"))


def notebook_title(path: Path) -> str:
    m = re.search(r"^# # (.+)$", path.read_text(), re.M)
    return m.group(1).strip() if m else path.stem


def paper_packages(root: Path) -> list[Path]:
    pkgs = [p for p in sorted((root / "nanotie" / "papers").iterdir())
            if p.is_dir() and (p / "__init__.py").exists()]
    rank = {name: i for i, name in enumerate(registry_titles(root))}
    return sorted(pkgs, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def registry_titles(root: Path) -> dict:
    """{package: (experiment name, title)} for each ``Experiment("name", "title")`` of
    the registry, in its order (the package is the name, dashes as underscores)."""
    text = (root / "nanotie" / "papers" / "__init__.py").read_text()
    return {m.group(1).replace("-", "_"): (m.group(1), m.group(2)) for m in re.finditer(
        r'Experiment\(\s*"([^"]+)",\s*"([^"]+)"', text)}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def markdown_section(text: str, heading_words: str) -> str | None:
    m = re.search(rf"^## [^\n]*{heading_words}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S | re.I)
    return m.group(1).strip() if m else None


# ------------------------------------------------------------------ links

def href(from_doc: str, to_doc: str, anchor: str = "") -> str:
    rel = posixpath.relpath(to_doc + ".html", posixpath.dirname(from_doc) or ".")
    return rel + (f"#{anchor}" if anchor else "")


def code_doc(rel_path: str) -> str:
    return "code/" + rel_path


class Links:
    """Rewrites a markdown file's relative links for a page of the site: an image is
    copied into the staging folder, a repository file goes to its code page, a
    folder of a paper to the paper's page, anything else keeps its text only."""

    def __init__(self, root: Path, src: Path, code_pages: set, paper_docs: dict):
        self.root, self.src, self.code_pages, self.paper_docs = root, src, code_pages, paper_docs

    def rewrite(self, text: str, base: Path, docname: str) -> str:
        def image(m):
            alt, target = m.group(1), m.group(2)
            if re.match(r"^[a-z]+:", target):
                return m.group(0)
            path = (base / target).resolve()
            if not path.exists():
                return f"*(missing image: {alt})*"
            rel = path.relative_to(self.root)
            dest = self.src / "_assets" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            return f"![{alt}]({posixpath.relpath('_assets/' + rel.as_posix(), posixpath.dirname(docname) or '.')})"

        def link(m):
            label, target = m.group(1), m.group(2)
            if re.match(r"^([a-z]+:|#)", target):
                return m.group(0)
            path_part, _, anchor = target.partition("#")
            path = (base / path_part).resolve()
            try:
                rel = path.relative_to(self.root).as_posix()
            except ValueError:
                return label
            line = re.match(r"L(\d+)", anchor or "")
            if rel in self.code_pages:
                # markdown between raw <a> and </a> stays markdown
                return f'<a href="{href(docname, code_doc(rel), f"L{line.group(1)}" if line else "")}">{label}</a>'
            if rel in self.paper_docs:
                return f'<a href="{href(docname, self.paper_docs[rel])}">{label}</a>'
            return label

        text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, text)
        return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, text)


def html_link(url: str, code: str) -> str:
    """A link whose text is code, in MyST: raw <a> around a code span (a code span
    keeps the underscores of __init__.py from reading as emphasis)."""
    return f'<a href="{url}">`{code}`</a>'


def demote(markdown: str, by: int = 1) -> str:
    out, fence = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"^#{1,5} ", line):
            line = "#" * by + line
        out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------ the pages

class Stager:
    def __init__(self, root: Path, src: Path, repo_url: str | None):
        self.root, self.src, self.repo_url = root, src, repo_url
        self.sources: dict[str, list] = {}      # docname -> [(repository path, line)]
        self.pages: list[str] = []
        self.code_pages: set[str] = set()
        self.papers = paper_packages(root)
        self.paper_docs = {p.relative_to(root).as_posix(): f"papers/{p.name}" for p in self.papers}
        self.links = Links(root, src, self.code_pages, self.paper_docs)
        self.readme = (root / "README.md").read_text()

    def write(self, docname: str, text: str, sources=(), suffix=".md") -> None:
        path = self.src / (docname + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.pages.append(docname)
        self.sources[docname] = [(p, line) for p, line in sources]

    def source_line(self, docname: str, rel: str, line: int = 1) -> str:
        return html_link(href(docname, code_doc(rel), f"L{line}"), rel)

    # -- code pages come first: every other page links to them
    def plan_code_pages(self, notebooks):
        files = library_files(self.root) + notebooks + [self.root / "README.md"]
        files += [p for p in [self.root / "notebooks" / "README.md"] if p.exists()]
        files += [p / "README.md" for p in self.papers if (p / "README.md").exists()]
        for path in files:
            self.code_pages.add(path.relative_to(self.root).as_posix())

    def stage_code_pages(self):
        groups: dict[str, list[str]] = {}
        for rel in sorted(self.code_pages):
            path = self.root / rel
            docname = code_doc(rel)
            if path.suffix == ".py" and rel.startswith("nanotie/"):
                mod = module_name(self.root, path)
                summary = first_line(doc_of(path))
                head = f"---\norphan: true\n---\n\n# `{mod}`\n\n" + (f"{_escape_md(summary)}\n\n" if summary else "")
                body = f"```{{annotated-source}} {rel}\n:module: {mod}\n```\n"
            else:
                head, body = f"---\norphan: true\n---\n\n# `{rel}`\n\n", f"```{{annotated-source}} {rel}\n:plain:\n```\n"
            self.write(docname, head + body, [(rel, 1)])
            groups.setdefault(posixpath.dirname(rel) or "the repository", []).append(rel)
        lines = ["# The source, annotated", "",
                 "Every file the pages link to, with line anchors. Python modules are shown "
                 "side by side: docstrings and comments on the left, the code they explain on "
                 "the right, ties highlighted.", ""]
        for folder, rels in groups.items():
            lines += [f"## `{folder}/`", ""]
            for rel in rels:
                summary = first_line(doc_of(self.root / rel)) if rel.endswith(".py") else ""
                lines.append(f"- {html_link(href('code/index', code_doc(rel)), rel)}"
                             + (f": {_escape_md(summary)}" if summary else ""))
            lines.append("")
        self.write("code/index", "\n".join(lines), [("nanotie/__init__.py", 1)])

    def stage_walkthroughs(self, notebooks, executed_dir: Path):
        lines = ["# The walkthroughs", "",
                 "Executed when this site was built, in quick mode (`NANOTIE_QUICK=1`): every "
                 "output and plot below is what the code printed and drew then, and every "
                 "`assert` in them passed.", ""]
        for nb in notebooks:
            docname = f"walkthroughs/{nb.stem}"
            dest = self.src / (docname + ".ipynb")
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = (executed_dir / f"{nb.stem}.ipynb").read_text()
            data = json.loads(text)
            for cell in data["cells"]:
                if cell["cell_type"] == "markdown":
                    src = "".join(cell["source"])
                    cell["source"] = self.links.rewrite(src, nb.parent, docname)
            dest.write_text(json.dumps(data, indent=1))
            self.pages.append(docname)
            self.sources[docname] = [(nb.relative_to(self.root).as_posix(), 1)]
            teaches = self.notebook_blurb(nb)
            lines.append(f"- [{_escape_md(notebook_title(nb))}]({nb.stem}.ipynb)"
                         + (f": {teaches}" if teaches else ""))
        lines += ["", "```{toctree}", ":hidden:", "", *[nb.stem for nb in notebooks], "```", ""]
        self.write("walkthroughs/index", "\n".join(lines), [("notebooks/README.md", 1)]
                   if "notebooks/README.md" in self.code_pages else [])

    def readme_rows(self) -> list[list[str]]:
        """The cells of every table row of README.md."""
        return [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in self.readme.splitlines() if line.startswith("|")]

    def notebook_blurb(self, nb: Path) -> str:
        """What README.md's notebook table says the walkthrough teaches."""
        for cells in self.readme_rows():
            if any(f"notebooks/{nb.name}" in c for c in cells):
                return cells[-1] if len(cells) > 1 else ""
        return ""

    def paper_row(self, pkg: Path) -> list[str]:
        """The cells of README.md's paper-table row whose tie is in the package, or []."""
        return next((cells for cells in self.readme_rows()
                     if len(cells) > 3 and f"(nanotie/papers/{pkg.name}/" in cells[2]), [])

    def about(self, pkg: Path) -> set:
        """The walkthroughs about the package: its row of README.md's paper table names them."""
        return set(re.findall(r"\(notebooks/(\w+)\.py\)", (self.paper_row(pkg) or [""] * 4)[3]))

    def related_notebooks(self, pkg: Path, notebooks) -> list[Path]:
        """Walkthroughs that import the package, the ones about it first."""
        found = [nb for nb in notebooks if re.search(
            rf"nanotie\.papers\.{pkg.name}\b|nanotie\.papers import[^\n]*\b{pkg.name}\b",
            nb.read_text())]
        return sorted(found, key=lambda nb: (nb.stem not in self.about(pkg), nb.name))

    def equations(self, nb: Path, limit: int = 8) -> list[str]:
        import jupytext
        paragraphs = []
        for cell in jupytext.read(nb).cells:
            if cell.cell_type != "markdown":
                continue
            paras = re.split(r"\n\s*\n", cell.source)
            for i, para in enumerate(paras):
                if "$$" not in para or para.lstrip().startswith("#"):
                    continue
                before = paras[i - 1].strip() if i else ""
                if before and "$$" not in before and not before.startswith(("#", "|", "```")) \
                        and before not in paragraphs and len(before) < 600:
                    paragraphs.append(before)      # the sentence that leads to it
                paragraphs.append(para.strip())
        return paragraphs[:limit]

    def claims(self, readme: str) -> list[str]:
        seen, out = set(), []
        for para in re.split(r"\n\s*\n", readme):
            m = re.match(r"\*\*(The paper's claim|The claim|The check|The sanity check)\*\*", para.strip())
            if m and para.strip() not in seen:
                seen.add(para.strip())
                out.append(para.strip())
        return out

    def stage_papers(self, notebooks):
        titles = registry_titles(self.root)
        index = ["# The papers", "",
                 "Each paper's mechanism is a package under `nanotie/papers/`. Its page gives "
                 "the claim, the equations, the mechanism's source annotated side by side (ties "
                 "highlighted) and the results of its miniature reproduction.", ""]
        for pkg in self.papers:
            docname = f"papers/{pkg.name}"
            init = (pkg / "__init__.py").relative_to(self.root).as_posix()
            doc = doc_of(pkg / "__init__.py")
            title = title_of(pkg / "__init__.py", pkg.name)
            lines = [f"# {_escape_md(title)}", ""]
            registered = titles.get(pkg.name)
            if registered:
                lines += [f"`python -m nanotie reproduce {registered[0]}`: {_escape_md(registered[1])}.", ""]
            readme_path = pkg / "README.md"
            readme = readme_path.read_text() if readme_path.exists() else ""
            claims = self.claims(readme)
            idea = _idea(doc)
            if claims or idea:
                lines += ["## The claim", ""]
                for claim in claims:
                    lines += [self.links.rewrite(claim, pkg, docname), ""]
                if idea:
                    lines += [rst_inline_to_md(idea), ""]
            related = self.related_notebooks(pkg, notebooks)
            eqs = [(nb, para) for nb in related[:1] if nb.stem in self.about(pkg)
                   for para in self.equations(nb)]
            if eqs:
                lines += ["## The equations", "",
                          f"From the walkthrough [{_escape_md(notebook_title(related[0]))}]"
                          f"(../walkthroughs/{related[0].stem}.ipynb):", ""]
                for nb, para in eqs:
                    lines += [self.links.rewrite(para, nb.parent, docname), ""]
            if len(related) > 1 or (related and not eqs):
                lines += ["Walkthroughs that use it: " + ", ".join(
                    f"[{_escape_md(notebook_title(nb))}](../walkthroughs/{nb.stem}.ipynb)"
                    for nb in related) + ".", ""]
            lines += ["## The mechanism, annotated", "",
                      "Docstrings and comments on the left, the code they explain on the right; "
                      "the lines that make a tie are highlighted.", "",
                      f"```{{annotated-source}} {init}\n:module: {module_name(self.root, pkg)}\n```", ""]
            row = self.paper_row(pkg)
            if row:
                lines += ["Where the tie is, highlighted: "
                          + self.links.rewrite(row[2], self.root, docname) + ".", ""]
            others = sorted(p for p in pkg.glob("*.py") if p.name != "__init__.py")
            if others:
                lines += ["The package's other modules, annotated the same way:", ""]
                for p in others:
                    rel = p.relative_to(self.root).as_posix()
                    summary = first_line(doc_of(p))
                    lines.append(f"- {html_link(href(docname, code_doc(rel)), p.name)}"
                                 + (f": {_escape_md(summary)}" if summary else ""))
                lines.append("")
            sources = [(init, 1)]
            if readme:
                body = re.sub(r"^# [^\n]*\n", "", readme, count=1)
                lines += ["## Results", "",
                          f"The results page {self.source_line(docname, readme_path.relative_to(self.root).as_posix())}, "
                          "as `python -m nanotie pages` wrote it from the latest reproduction.", "",
                          demote(self.links.rewrite(body, pkg, docname), 1), ""]
                sources.append((readme_path.relative_to(self.root).as_posix(), 1))
            self.write(docname, "\n".join(lines), sources)
            index.append(f"- [{_escape_md(title)}]({pkg.name}.md)")
        index += ["", "```{toctree}", ":hidden:", "", *[p.name for p in self.papers], "```", ""]
        self.write("papers/index", "\n".join(index), [("nanotie/papers/__init__.py", 1)])

    def stage_exercises(self, notebooks):
        init_rel = "nanotie/exercises/__init__.py"
        init_text = (self.root / init_rel).read_text()
        lines = ["# The exercises", "",
                 "Each exercise asks for a forward and a backward (or a formula) in plain NumPy. "
                 "Its checker compares your answer with the library's own op; where there is a "
                 "backward, it runs a float64 finite-difference gradient check with a random "
                 "upstream gradient; when something is wrong, it says what.", "",
                 "```bash", "python -m nanotie exercise list          # the exercises, numbered",
                 "python -m nanotie exercise start N       # writes exNN_<name>.py, a stub to fill in",
                 "python -m nanotie exercise check N       # checks it: exit status 0 when it passes",
                 "```", ""]
        for number, name, line in exercise_registry(init_text):
            path = self.root / "nanotie" / "exercises" / f"{name}.py"
            facts = module_constants(path)
            title = facts.get("TITLE", name)
            used_in = [nb for nb in notebooks
                       if re.search(rf"exercises\.get\({number}\)|exercise check {number}\b",
                                    nb.read_text())]
            lines += [f"## {number}. {_escape_md(title)}", ""]
            if facts.get("GOAL"):
                lines += [_escape_md(facts["GOAL"]), ""]
            said = f"You write `{facts['FUNCTION']}`. " if facts.get("FUNCTION") else ""
            if used_in:
                said += "It is also in the walkthrough " + ", ".join(
                    f"[{_escape_md(notebook_title(nb))}](walkthroughs/{nb.stem}.ipynb)"
                    for nb in used_in) + ". "
            lines += [said + f"Registered in {self.source_line('exercises', init_rel, line)}.", "",
                      "```bash", f"python -m nanotie exercise start {number}",
                      f"python -m nanotie exercise check {number}", "```", ""]
            task = doc_of(path)
            if task:
                lines += ["The task:", "", "```{eval-rst}", *rstify(task.strip("\n").splitlines()),
                          "```", ""]
            if facts.get("STUB"):
                lines += [f"The stub that `exercise start {number}` writes into "
                          f"`ex{number:02d}_{name}.py`, under a docstring that says the "
                          "goal and the check command:", "",
                          "```python", facts["STUB"].strip("\n"), "```", ""]
        self.write("exercises", "\n".join(lines), [(init_rel, 1)])

    def stage_api(self):
        groups: dict[Path, list[Path]] = {}
        for path in library_files(self.root):
            groups.setdefault(path.parent, []).append(path)
        index = ["# API reference", "",
                 "Generated from the docstrings. Each entry links to its line in the annotated "
                 "source.", ""]
        toc = []
        for folder, files in sorted(groups.items()):
            pkg = module_name(self.root, folder / "__init__.py")
            docname = f"api/{pkg}"
            mods = sorted(files, key=lambda p: (p.name != "__init__.py", p.name))
            lines = [pkg, "=" * len(pkg), ""]
            for path in mods:
                if path.name == "__main__.py" or re.match(r"_[^_]", path.name):
                    continue                    # private modules: code pages only
                mod = module_name(self.root, path)
                if path.name != "__init__.py":
                    lines += [f"``{mod}``", "-" * (len(mod) + 4), ""]
                lines += [f".. automodule:: {mod}", "   :members:", ""]
            init = mods[0].relative_to(self.root).as_posix()
            self.write(docname, "\n".join(lines), [(init, 1)], suffix=".rst")
            index.append(f"- [`{pkg}`]({pkg}.rst): {_escape_md(first_line(doc_of(folder / '__init__.py')))}")
            toc.append(pkg)
        index += ["", "```{toctree}", ":hidden:", "", *toc, "```", ""]
        self.write("api/index", "\n".join(index), [("nanotie/__init__.py", 1)])

    def stage_home(self, notebooks):
        intro = self.readme.split("\n## ", 1)[0]
        intro = re.sub(r"^# [^\n]*\n", "", intro).strip()
        setup = markdown_section(self.readme, "command") or ""
        lines = ["# nanotie", "", self.links.rewrite(intro, self.root, "index"), "",
                 "## Two commands", "", self.links.rewrite(demote(setup, 1), self.root, "index"), "",
                 "## The path through the material", "",
                 "1. **The engine.** Start with the first two walkthroughs: reverse-mode "
                 "autograd from the chain rule up, then modules and tying as aliasing.",
                 "2. **The papers.** One walkthrough per paper, each beside its page: the claim, "
                 "the equations, the mechanism annotated side by side, the results.",
                 "3. **The exercises.** Write a backward yourself; the checker says what is wrong.",
                 "4. **The reference.** The API from the docstrings, and every source file "
                 "annotated.", "",
                 "### Walkthroughs", ""]
        for nb in notebooks:
            lines.append(f"- [{_escape_md(notebook_title(nb))}](walkthroughs/{nb.stem}.ipynb)")
        lines += ["", "### Papers", ""]
        for pkg in self.papers:
            lines.append(f"- [{_escape_md(title_of(pkg / '__init__.py', pkg.name))}]"
                         f"(papers/{pkg.name}.md)")
        lines += ["", "### Exercises and reference", "",
                  "- [The exercises](exercises.md)", "- [API reference](api/index.md)",
                  "- [The source, annotated](code/index.md)", "",
                  "## This site", "",
                  "Built offline from the repository with `python -m nanotie site --out site/` "
                  "(the `docs` extra: `pip install -e \".[docs]\"`); open `site/index.html`. The "
                  "walkthroughs were executed by that command, in quick mode.", "",
                  "```{toctree}", ":hidden:", "", "walkthroughs/index", "papers/index",
                  "exercises", "api/index", "code/index", "```", ""]
        self.write("index", "\n".join(lines), [("README.md", 1)])


def exercise_registry(init_text: str) -> list[tuple[int, str, int]]:
    """(number, module name, line) of each ``register(N, "name")`` in the exercises'
    __init__, read without importing them (the solutions stay unimported)."""
    found = []
    for i, line in enumerate(init_text.splitlines(), 1):
        m = re.match(r'\s*register\(\s*(\d+)\s*,\s*"(\w+)"\s*\)', line)
        if m:
            found.append((int(m.group(1)), m.group(2), i))
    return sorted(found)


def module_constants(path: Path) -> dict:
    """A module's top-level string constants (TITLE, GOAL, FUNCTION, STUB), parsed."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, str):
                found[node.targets[0].id] = value
    return found


def _idea(doc: str) -> str:
    m = re.search(r"^The idea\.\s+(.*?)(?:\n\s*\n|\Z)", doc, re.M | re.S)
    return " ".join(m.group(1).split()) if m else ""


def rst_inline_to_md(text: str) -> str:
    """A docstring's sentence as MyST: ``x`` and :role:`x` become code, the rest is text."""
    out, last = [], 0
    for m in re.finditer(r":\w+:`~?\.?([^`]+)`|``([^`]+)``", text):
        out.append(_escape_md(text[last:m.start()]))
        out.append(f"`{m.group(1) or m.group(2)}`")
        last = m.end()
    out.append(_escape_md(text[last:]))
    return "".join(out)


def _escape_md(text: str) -> str:
    """Plain text as MyST inline text: nothing in it is markup (a `*`, `_`, `$` or `<`)."""
    return re.sub(r"([\\*_\[\]<>$|#])", r"\\\1", text)


# ------------------------------------------------------------------ the build

def build(out: Path, jobs: int | None = None, cache: Path | None = None,
          repo_url: str | None = None, root: Path = ROOT, quiet: bool = False,
          allow_errors: bool = False) -> dict:
    """Build the site into ``out``; return the manifest (also written as site.json)."""
    missing = missing_packages()
    if missing:
        raise SiteError(f"missing {', '.join(missing)}: install the docs extra with "
                        f"pip install -e \".[docs]\"")
    check_checkout(root)
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / "site.json").exists())):
        raise SiteError(f"--out {out}: exists and is not a site this command built; "
                        f"give a new folder")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from notebooks import execute_all
    from sphinx.application import Sphinx

    log = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    jobs = jobs or os.cpu_count() or 1
    start, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="nanotie-site-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        stager = Stager(root, src, repo_url)
        notebooks = notebook_sources(root)
        stager.plan_code_pages(notebooks)
        t0 = time.perf_counter()
        executed = execute_all(root, notebooks, Path(tmp) / "executed", jobs, cache, log,
                               allow_errors)
        nb_seconds = time.perf_counter() - t0
        stager.stage_home(notebooks)
        stager.stage_walkthroughs(notebooks, Path(tmp) / "executed")
        stager.stage_papers(notebooks)
        stager.stage_exercises(notebooks)
        stager.stage_api()
        stager.stage_code_pages()
        (src / "_site.json").write_text(json.dumps({
            "root": str(root), "sources": stager.sources, "repo_url": repo_url}))
        log(f"rendering {len(stager.pages)} pages with Sphinx")
        t1 = time.perf_counter()
        status = None          # Sphinx's own progress names the scratch folder: ours says more
        html = Path(tmp) / "html"         # myst-nb writes beside the output folder: tmp
        app = Sphinx(str(src), str(DOCS), str(html), str(Path(tmp) / "doctrees"), "html",
                     status=status, warning=sys.stderr, freshenv=True,
                     parallel=jobs if jobs > 1 else 0, keep_going=True)
        app.build()
        sphinx_seconds = time.perf_counter() - t1
        if app.statuscode:
            raise SiteError(f"Sphinx failed (status {app.statuscode}); see the messages above")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(html, out)
    manifest = {
        # every page, Sphinx's own (index, search, module index) included
        "pages": sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")
                        if not p.relative_to(out).parts[0].startswith("_")),
        "walkthroughs": {f"walkthroughs/{stem}.html": info for stem, info in executed.items()},
        "papers": [f"papers/{p.name}.html" for p in stager.papers],
        "seconds": {"total": round(time.perf_counter() - start, 1),
                    "notebooks": round(nb_seconds, 1), "sphinx": round(sphinx_seconds, 1),
                    "cpu_this_process": round(time.process_time() - cpu0, 1)},
    }
    (out / "site.json").write_text(json.dumps(manifest, indent=1))
    log(f"built {len(manifest['pages'])} pages into {out} in {manifest['seconds']['total']:.0f} s "
        f"(walkthroughs {nb_seconds:.0f} s, Sphinx {sphinx_seconds:.0f} s); "
        f"open {out / 'index.html'}")
    return manifest


def main(argv=None) -> int:
    """``python docs/_ext/sitebuild.py ARGS`` is ``python -m nanotie site ARGS``."""
    from nanotie.cli import main as cli_main
    return cli_main(["site", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
