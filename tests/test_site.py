"""The course site, built from the tree and opened in a real browser.

The site is built once per session, as ``python -m nanotie site`` builds it (into a tmp
folder, by the one worker that runs this file; executed walkthroughs come from
``build/site-cache`` when nothing they depend on has changed) and served on 127.0.0.1.
Headless Chromium, driven by selenium, opens every page and checks what a reader would
see: no console errors, no broken link or image, no raw TeX, every walkthrough's plots,
the side-by-side rows aligned. It saves screenshots of the home page, a walkthrough and
a paper page (to $NANOTIE_SCREENSHOTS, or a tmp folder) and says where.
$NANOTIE_SITE_DIR names a site built earlier to check instead of building one.

Needs the docs extra (``pip install -e ".[docs]"``) and, for the browser, Debian's
``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``);
without them these tests skip and say so.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from nanotie import cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
sitebuild = pytest.importorskip("sitebuild", reason="docs/_ext/sitebuild.py is missing")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"]
ALIGN_PX = 2
# TeX a reader should never see: $...$ or $$, \( \) \[ \], and common commands.
RAW_TEX = re.compile(r"\$\$|(?<![\w$])\$[^\s$][^$\n]{0,200}?[^\s\\$]\$(?![\w$])|\$[^\s$]\$"
                     r"|\\[()\[\]]|\\(?:frac|sum|mathrm|mathbb|mathcal|partial|alpha|beta|"
                     r"theta|lambda|sigma|cdot|times|qquad|operatorname|text|left|right|"
                     r"begin|end|sqrt|hat|bar|top|epsilon|tau|odot)\b")
EXTERNAL_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""",
                            re.I)

missing = sitebuild.missing_packages()
needs_docs = pytest.mark.skipif(bool(missing), reason=(
    f"the docs extra is not installed (missing: {', '.join(missing)}); install it with "
    f"pip install -e \".[docs]\""))


def _browser_missing() -> str | None:
    if missing:
        return (f"the docs extra is not installed (missing: {', '.join(missing)}); "
                f"pip install -e \".[docs]\"")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e \".[test]\" (or pip install selenium)"
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return ("headless Chromium is not installed: apt-get install chromium chromium-driver "
                "(Debian's packages; CI's .ci/run installs them)")
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None,
                                   reason=_browser_missing() or "")


# ------------------------------------------------------------------ the site, once

@pytest.fixture(scope="session")
def site(tmp_path_factory):
    if missing:
        pytest.skip(f"the docs extra is not installed: pip install -e \".[docs]\"")
    prebuilt = os.environ.get("NANOTIE_SITE_DIR")     # check a site built earlier instead
    if prebuilt:
        out = Path(prebuilt).resolve()
        return out, json.loads((out / "site.json").read_text())
    out = tmp_path_factory.mktemp("site") / "site"
    before = _runs_listing()
    with warnings.catch_warnings():          # the generator's own deprecation notices
        warnings.simplefilter("ignore")      # built as `python -m nanotie site` builds it
        assert cli.main(["site", "--out", str(out), "--jobs", str(os.cpu_count() or 1)]) == 0
    manifest = json.loads((out / "site.json").read_text())
    manifest["runs_changed"] = sorted(set(_runs_listing().items()) - set(before.items()))
    return out, manifest


def _runs_listing() -> dict:
    runs = ROOT / "runs"
    return {str(p.relative_to(ROOT)): p.stat().st_mtime_ns for p in runs.rglob("*")
            if p.is_file()} if runs.is_dir() else {}


@pytest.fixture(scope="session")
def server(site):
    out, _ = site

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="nanotie-chromium-")
    for flag in BROWSER_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


PAGE_FACTS = r"""
const skip = 'pre, code, script, style, math, textarea, .highlight, .sbs-code, .listing';
const main = document.querySelector('article') || document.body;
const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
const text = [];
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (el && !el.closest(skip) && el.getClientRects().length) text.push(n.textContent);
}
const rows = [...document.querySelectorAll('.sbs-row')].map(row => {
  const d = row.querySelector(':scope > .sbs-doc').getBoundingClientRect();
  const c = row.querySelector(':scope > .sbs-code').getBoundingClientRect();
  return [d.top, c.top, d.right, c.left];
});
return {
  hrefs: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  srcs: [...document.querySelectorAll('[src]')].map(e => e.getAttribute('src')),
  links: [...document.querySelectorAll('link[href]')].map(e => e.getAttribute('href')),
  images: [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0,
                                         !!i.closest('.cell_output, .output')]),
  math: [...document.querySelectorAll('math')].map(m => m.getBoundingClientRect().width),
  mathWithTeX: [...document.querySelectorAll('math')].map(m => m.textContent)
    .filter(s => s.includes('\\')),
  text: text.join(' '),
  rows: rows,
  ties: document.querySelectorAll('.sbs-code .line.tie').length,
};
"""


@pytest.fixture(scope="session")
def visited(site, server, browser):
    """Every page of the site, opened once: {page: (facts, severe console entries)}."""
    _, manifest = site
    seen = {}
    for page in manifest["pages"]:
        browser.get(urljoin(server, page))
        facts = browser.execute_script(PAGE_FACTS)
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        seen[page] = (facts, severe)
    return seen


# ------------------------------------------------------------------ the build

@needs_docs
def test_site_has_every_kind_of_page(site):
    out, manifest = site
    pages = set(manifest["pages"])
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    papers = sorted(p.name for p in (ROOT / "nanotie" / "papers").iterdir()
                    if (p / "__init__.py").exists())
    expected = {"index.html", "exercises.html", "api/index.html", "code/index.html"}
    expected |= {f"walkthroughs/{nb}.html" for nb in notebooks}
    expected |= {f"papers/{p}.html" for p in papers}
    assert not expected - pages, f"pages missing from the site: {sorted(expected - pages)}"
    for page in pages:
        assert (out / page).is_file(), f"{page} is in site.json but was not written"


@needs_docs
def test_site_fetches_nothing(site):
    """No script, style sheet, font or image comes from the network: math is MathML."""
    out, _ = site
    offenders = []
    for path in sorted(out.rglob("*")):
        if path.suffix not in {".html", ".css", ".js"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".html":
            text = re.sub(r"<a\s[^>]*>", "", text)      # a link to click is not a fetch
        for m in EXTERNAL_ASSET.finditer(text):
            offenders.append(f"{path.relative_to(out)}: {text[m.start():m.start() + 90]!r}")
    assert not offenders, "assets from the network:\n" + "\n".join(offenders[:20])
    assert not list(out.rglob("*mathjax*")), "MathJax should not be in the site"


@needs_docs
def test_nothing_written_into_runs(site):
    _, manifest = site
    assert manifest["walkthroughs"], "no walkthrough was executed"
    # Walkthroughs run in scratch folders: building the site leaves ./runs as it was.
    if "runs_changed" not in manifest:
        pytest.skip("a prebuilt site ($NANOTIE_SITE_DIR): ./runs was not watched")
    changed = manifest["runs_changed"]
    assert not changed, f"building the site wrote into ./runs: {changed[:10]}"


@needs_docs
def test_paper_pages_annotate_their_mechanism(site):
    out, manifest = site
    for page in manifest["papers"]:
        html = (out / page).read_text()
        assert 'class="sbs' in html, f"{page} has no side-by-side source"
        assert re.search(r'id="L\d+"', html), f"{page}: no line anchors"


# ------------------------------------------------------------------ in the browser

@needs_browser
def test_no_console_errors(visited):
    bad = {page: [e["message"][:200] for e in severe] for page, (_, severe) in visited.items()
           if severe}
    assert not bad, f"console errors on {len(bad)} page(s): {json.dumps(bad, indent=1)[:3000]}"


def _ids(path: Path, cache={}) -> set:
    if path not in cache:
        html = path.read_text(errors="replace")
        cache[path] = set(re.findall(r'\b(?:id|name)="([^"]+)"', html))
    return cache[path]


@needs_browser
def test_no_broken_links_or_images(site, server, visited):
    out, _ = site
    broken, checked, external, images = [], 0, 0, 0
    for page, (facts, _) in visited.items():
        page_url = urljoin(server, page)
        for ref in facts["hrefs"] + facts["srcs"] + facts["links"]:
            if not ref or ref.startswith(("mailto:", "javascript:", "data:")):
                continue
            url = urljoin(page_url, ref)
            if not url.startswith(server):
                external += 1
                continue
            checked += 1
            parts = urlsplit(url)
            target = out / unquote(parts.path[len(urlsplit(server).path):])
            if parts.path.endswith("/"):
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page}: {ref} (no such file)")
            elif parts.fragment and target.suffix == ".html" \
                    and unquote(parts.fragment) not in _ids(target):
                broken.append(f"{page}: {ref} (no such anchor)")
        for src, ok, _ in facts["images"]:
            images += 1
            if not ok:
                broken.append(f"{page}: image {src} did not load")
    print(f"{len(visited)} pages opened; {checked} local links and sources resolved, "
          f"{images} images loaded; {external} links to other sites not followed")
    assert not broken, f"{len(broken)} broken:\n" + "\n".join(broken[:40])


@needs_browser
def test_no_raw_tex_and_math_rendered(visited):
    raw, unrendered, formulas = [], [], 0
    for page, (facts, _) in visited.items():
        for m in RAW_TEX.finditer(facts["text"]):
            raw.append(f"{page}: ...{facts['text'][max(0, m.start() - 40):m.end() + 40]}...")
        formulas += len(facts["math"])
        raw += [f"{page}: a formula kept TeX it could not read: {s[:80]!r}"
                for s in facts["mathWithTeX"]]
        unrendered += [page for width in facts["math"] if width <= 0]
    assert not raw, "raw TeX on the page:\n" + "\n".join(raw[:20])
    assert not unrendered, f"MathML with no width on: {sorted(set(unrendered))}"
    assert formulas > 0, "no formula anywhere: the walkthroughs' math is missing"
    print(f"{formulas} formulas rendered as MathML")


@needs_browser
def test_every_walkthrough_shows_its_plots(site, visited):
    _, manifest = site
    short = {}
    for page, info in manifest["walkthroughs"].items():
        facts, _ = visited[page]
        shown = sum(1 for _, ok, in_output in facts["images"] if ok and in_output)
        if shown < info["figures"]:
            short[page] = f"{shown} of {info['figures']}"
    assert not short, f"walkthroughs missing plots (shown of produced): {short}"
    assert sum(info["figures"] for info in manifest["walkthroughs"].values()) > 0


@needs_docs
def test_every_plot_cell_draws(site):
    """A cell that calls plt.show() (or display(fig)) shows a figure when executed. One
    that shows none lost its plot: e.g. a library call switched matplotlib away from the
    notebook's inline backend before it."""
    _, manifest = site
    silent = {page: info["silent_plot_cells"] for page, info in manifest["walkthroughs"].items()
              if info.get("silent_plot_cells")}
    assert not silent, ("cells that call plt.show() but show no figure (page: cell "
                        f"indices): {silent}; is matplotlib still on the inline backend?")


@needs_browser
def test_side_by_side_rows_aligned(site, visited):
    _, manifest = site
    misaligned, rows, annotated = [], 0, 0
    for page, (facts, _) in visited.items():
        if facts["rows"]:
            annotated += 1
        for i, (doc_top, code_top, doc_right, code_left) in enumerate(facts["rows"]):
            rows += 1
            if abs(doc_top - code_top) > ALIGN_PX or doc_right > code_left + 1:
                misaligned.append(f"{page} row {i}: comment top {doc_top:.1f}, code top "
                                  f"{code_top:.1f}, comment right {doc_right:.1f}, code left "
                                  f"{code_left:.1f}")
    assert rows, "no side-by-side rows on any page"
    assert not misaligned, "\n".join(misaligned[:20])
    import annotate
    unmarked = []
    for page in manifest["papers"]:
        init = ROOT / "nanotie" / "papers" / Path(page).stem / "__init__.py"
        comments = annotate._comment_lines(init.read_text())
        if any(annotate.TIE.search(text) for text, _ in comments.values()) \
                and not visited[page][0]["ties"]:
            unmarked.append(page)
    assert not unmarked, f"a tie in the source is not highlighted on: {unmarked}"
    print(f"{rows} side-by-side rows aligned on {annotated} pages")


@needs_browser
def test_screenshots(site, server, browser, tmp_path_factory, capsys):
    _, manifest = site
    folder = Path(os.environ.get("NANOTIE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    walkthroughs = [p for p, info in manifest["walkthroughs"].items() if info["figures"]]
    paper = next((p for p in manifest["papers"] if "tied_lora" in p), manifest["papers"][0])
    shots = {"home.png": ("index.html", None),
             "walkthrough.png": (walkthroughs[0] if walkthroughs else
                                 next(iter(manifest["walkthroughs"])), ".cell_output img"),
             "paper.png": (paper, None),
             "paper-annotated.png": (paper, ".sbs-code .line.tie")}
    for name, (page, scroll_to) in shots.items():
        browser.get(urljoin(server, page))
        if scroll_to:
            browser.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "if (e) { window.scrollTo({top: e.getBoundingClientRect().top + window.scrollY"
                " - 120, behavior: 'instant'}); }", scroll_to)
        assert browser.save_screenshot(str(folder / name)), f"could not save {name}"
    with capsys.disabled():     # the reader of the run should know where to look
        print(f"\nsite screenshots ({', '.join(shots)}): {folder}")


# ------------------------------------------------------------------ the command

def test_site_command_refuses_a_folder_it_did_not_build(tmp_path, capsys):
    from nanotie.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    if missing:
        assert main(["site", "--out", str(tmp_path)]) == 2
        assert "pip install -e \".[docs]\"" in capsys.readouterr().err
        return
    assert main(["site", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nanotie: error: --out") and "not a site" in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------- plain-text formulas, typeset


@needs_docs
@pytest.mark.parametrize("line,parts", [
    ("ĥ_t = Re Σ_k R_k λ_k^(t-1)        (t >= 1)",
     [r"\hat{h}_{t}", r"\sum _{k}", r"\lambda _{k}^{t-1}", r"\geq"]),
    ("s_t = λ ⊙ s_{t-1} + u_t        (read the state, then update it)",
     [r"s_{t-1}", r"\odot", r"\text{(read the state, then update it)}"]),
    ("softmax(Q K^T / sqrt(hd)) V", [r"\mathrm{softmax}", r"K^{T}", r"\sqrt{\mathrm{hd}}"]),
])
def test_a_docstring_formula_becomes_tex_that_typesets(line, parts):
    from latex2mathml.converter import convert
    from plainmath import formula_line, to_tex
    tex = to_tex(line)
    assert formula_line(line) and all(p in tex for p in parts), tex
    mathml = convert(tex)
    assert "<math" in mathml and ("<msub" in mathml or "<msup" in mathml), mathml


@needs_docs
def test_only_blocks_of_formulas_are_typeset():
    from rstify import rstify
    doc = ["Its impulse response is", "", "    h_t = Re Σ_k R_k λ_k^(t-1)", "",
           "Shapes:", "", "    x       (B, T, d)   the input", "    mask    (T, T)", "",
           "A list:", "", "* item one", "  continued here"]
    out = rstify(doc)
    assert out.count(".. math::") == 1 and "::" in [l.strip() for l in out]
    assert "  continued here" in out             # a list's continuation is left alone


@needs_docs
def test_every_tie_the_readme_links_is_highlighted():
    """Each file:line README.md gives for a tie (the engine's "tying sum" too) carries a
    comment that the side-by-side view highlights as a tie."""
    import annotate
    links = re.findall(r"\]\((nanotie/[\w/]+\.py)#L(\d+)\)", (ROOT / "README.md").read_text())
    assert len(links) >= 8, links
    unmarked = []
    for rel, line in links:
        comments = annotate._comment_lines((ROOT / rel).read_text())
        if not annotate.TIE.search(comments.get(int(line), ("", False))[0]):
            unmarked.append(f"{rel}:{line}")
    assert not unmarked, f"README.md links these ties, the site does not highlight them: {unmarked}"


def test_paper_pages_follow_the_registry():
    """Each registered experiment's paper page says how to reproduce it, and the papers
    come in the registry's order (the order of the walkthroughs)."""
    from nanotie.papers import REGISTRY
    titles = sitebuild.registry_titles(ROOT)
    assert [name for name, _ in titles.values()] == list(REGISTRY), titles
    assert all(title == REGISTRY[name].title for name, title in titles.values())
    packages = [p.name for p in sitebuild.paper_packages(ROOT)]
    assert packages[:len(REGISTRY)] == list(titles), packages


def test_every_public_function_and_class_has_a_docstring():
    """autodoc's ``:members:`` leaves out what has no docstring, and shows a dataclass
    without one as a bare signature: each would be missing, or empty, in the API."""
    import ast
    bare = []
    for path in sitebuild.library_files(ROOT):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) \
                    and not node.name.startswith("_") and not ast.get_docstring(node):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not bare, "no docstring, so nothing in the API reference:\n" + "\n".join(bare)


def test_every_cross_reference_of_the_api_resolves():
    """A docstring's :func:`x` or :class:`X` links only if Sphinx finds ``x`` as written:
    in the docstring's class or module, as a full name, or (``.x``) as a suffix. A name
    of a sibling module written as if it were local is shown as plain text, and so is a
    :data:`CONSTANT` that autodoc leaves out (it shows one with a ``#:`` comment above)."""
    import ast
    import builtins
    found, refs = set(), []
    for path in sitebuild.library_files(ROOT):
        if path.name == "__main__.py" or re.match(r"_[^_]", path.name):
            continue
        mod = sitebuild.module_name(ROOT, path)
        tree = ast.parse(path.read_text())
        found.add(mod)
        refs.append((mod, None, tree))
        lines = path.read_text().splitlines()
        found |= {f"{mod}.{t.id}" for node in tree.body if isinstance(node, ast.Assign)
                  and lines[node.lineno - 2].startswith("#:")       # autodoc shows it
                  for t in node.targets if isinstance(t, ast.Name)}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name[0] != "_":
                cls = node.name if isinstance(node, ast.ClassDef) else None
                found.add(f"{mod}.{node.name}")
                refs.append((mod, cls, node))
                for m in node.body if cls else []:
                    if isinstance(m, ast.FunctionDef) and m.name[0] != "_" \
                            and ast.get_docstring(m):
                        found.add(f"{mod}.{cls}.{m.name}")
                        refs.append((mod, cls, m))
    broken = []
    for mod, cls, node in refs:
        for role, target in re.findall(r":(func|class|meth|mod|attr|exc|data):`([^`]+)`",
                                       ast.get_docstring(node) or ""):
            bare = target.lstrip("~.")
            if (bare.split(".")[-1][0] == "_" or bare in dir(builtins)
                    or {bare, f"{mod}.{bare}", f"{mod}.{cls}.{bare}"} & found
                    or target.lstrip("~")[0] == "."
                    and any(f.endswith("." + bare) for f in found)):
                continue
            broken.append(f"{mod}: :{role}:`{target}`")
    assert not broken, "links to nothing in the API reference:\n" + "\n".join(broken)


def test_each_paper_walkthrough_gives_its_equations_to_one_paper_page(tmp_path):
    """A paper page's equations come from the walkthrough about that paper: each
    walkthrough of README.md's paper table gives them to exactly one page (the GPT's
    page showed Tied-LoRA's, the distillery's showed Hyena's)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The six papers", 1)[1].split("\n## ", 1)[0]
    paper_notebooks = re.findall(r"\]\(notebooks/(\w+)\.py\)", table)
    stager = sitebuild.Stager(ROOT, tmp_path, None)
    stager.stage_papers(sitebuild.notebook_sources(ROOT))
    sources = {}
    for page in (tmp_path / "papers").glob("*.md"):
        m = re.search(r"## The equations\n\nFrom the walkthrough \[[^\]]*\]\(\.\./walkthroughs/"
                      r"(\w+)\.ipynb\)", page.read_text())
        if m:
            sources.setdefault(m.group(1), []).append(page.stem)
    assert paper_notebooks and all(len(sources.get(nb, [])) == 1 for nb in paper_notebooks), \
        f"walkthrough: the paper pages that take their equations from it: {sources}"


def test_each_paper_page_links_the_line_of_its_tie(tmp_path):
    """A paper page whose annotated ``__init__.py`` does not hold the tie still leads to
    it: every tie line README.md's paper table gives is linked from that paper's page."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The six papers", 1)[1].split("\n## ", 1)[0]
    ties = re.findall(r"\]\(nanotie/papers/(\w+)/([\w/]+\.py)#L(\d+)\)", table)
    stager = sitebuild.Stager(ROOT, tmp_path, None)
    notebooks = sitebuild.notebook_sources(ROOT)
    stager.plan_code_pages(notebooks)
    stager.stage_papers(notebooks)
    unlinked = [f"{pkg}/{file}:{line}" for pkg, file, line in ties
                if f"code/nanotie/papers/{pkg}/{file}.html#L{line}\""
                not in (tmp_path / "papers" / f"{pkg}.md").read_text()]
    assert ties and not unlinked, f"paper pages without a link to their tie: {unlinked}"


def test_the_api_reference_leaves_private_modules_out(tmp_path):
    stager = sitebuild.Stager(ROOT, tmp_path, None)
    stager.stage_api()
    documented = re.findall(r"automodule:: (\S+)", "".join(
        p.read_text() for p in (tmp_path / "api").glob("*.rst")))
    private = [m for m in documented if any(part.startswith("_") for part in m.split("."))]
    assert documented and not private, f"private modules in the API reference: {private}"
