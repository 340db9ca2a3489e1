"""What every page of the site gets: a line linking its source files (to their
annotated copy in the site, and to the public repository when one is configured), and
for the API reference a link from each object to its line.

The stager (:mod:`sitebuild`) writes ``_site.json`` into the source folder: the
repository root and, for each page, the repository files it was made from.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from docutils import nodes

from rstify import rstify
from sitebuild import href


def _site(app) -> dict:
    if not hasattr(app, "_nanotie_site"):
        path = Path(app.srcdir) / "_site.json"
        app._nanotie_site = json.loads(path.read_text()) if path.exists() else {
            "root": app.config.nanotie_root, "sources": {}, "repo_url": None}
    return app._nanotie_site


def add_source_line(app, pagename, templatename, context, doctree):
    site = _site(app)
    sources = site["sources"].get(pagename)
    if not sources or "body" not in context:
        return
    links = []
    for rel, line in sources:
        link = f'<a href="{href(pagename, "code/" + rel, f"L{line}")}"><code>{rel}</code></a>'
        if site.get("repo_url"):
            link += (f' (<a class="repo" href="{site["repo_url"].rstrip("/")}/{rel}#L{line}">'
                     f'on the repository</a>)')
        links.append(link)
    context["body"] = (f'<p class="source-line">Source: {", ".join(links)}</p>\n'
                       + context["body"])


def object_line(modname: str, fullname: str):
    """(file relative to the repository, first line) of a documented object, or None."""
    try:
        obj = importlib.import_module(modname)
        for part in fullname.split("."):
            obj = getattr(obj, part)
        obj = inspect.unwrap(obj)
        if isinstance(obj, property):
            obj = obj.fget
        path = inspect.getsourcefile(obj)
        _, line = inspect.getsourcelines(obj)
    except Exception:                      # noqa: BLE001  (no source: no link)
        return None
    return path, max(line, 1)


def add_object_links(app, doctree, docname):
    """After each API entry's signature, a [source] link to its annotated line."""
    site = _site(app)
    root = Path(site["root"]).resolve()
    for sig in doctree.findall(lambda n: isinstance(n, nodes.Element)
                               and n.tagname == "desc_signature"):
        modname, fullname = sig.get("module"), sig.get("fullname")
        if not modname or not fullname:
            continue
        found = object_line(modname, fullname)
        if not found:
            continue
        try:
            rel = Path(found[0]).resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        if f"code/{rel}" not in site["sources"]:          # no page for that file
            continue
        url = href(docname, "code/" + rel, f"L{found[1]}")
        sig += nodes.raw("", f' <a class="viewcode-link" href="{url}">[source]</a>',
                         format="html")


def docstring_as_rst(app, what, name, obj, options, lines):
    lines[:] = rstify(lines)


def drop_problematic(app, doctree, docname):
    """Markup docutils could not read shows as its text, not as a link to a message
    the page leaves out."""
    for node in list(doctree.findall(nodes.problematic)):
        node.replace_self(nodes.Text(node.astext()))


def setup(app):
    app.connect("autodoc-process-docstring", docstring_as_rst)
    app.connect("doctree-resolved", drop_problematic)
    app.connect("html-page-context", add_source_line)
    app.connect("doctree-resolved", add_object_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
