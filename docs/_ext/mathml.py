"""Math typeset at build time: every math node becomes MathML, which browsers render
natively, so a page needs no script and no network to show an equation.

A Sphinx math renderer (like ``sphinx.ext.imgmath``), registered as ``mathml`` and
chosen by ``html_math_renderer = "mathml"`` in conf.py. It serves the ``:math:`` role,
the ``math`` directive and MyST's ``$...$`` / ``$$...$$`` in markdown and notebooks.
The TeX is converted by ``latex2mathml`` (pure Python); a formula it cannot convert
stops the build with the formula and the page, rather than showing raw TeX.
"""

from __future__ import annotations

import re

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.errors import ExtensionError

# TeX that latex2mathml reads differently or not at all, rewritten to what it reads.
_REWRITES = [
    (re.compile(r"\\begin\{(aligned|align\*?|split)\}"), r"\\begin{array}{rl}"),
    (re.compile(r"\\end\{(aligned|align\*?|split)\}"), r"\\end{array}"),
    (re.compile(r"\\(?:bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])"), ""),
    (re.compile(r"\\(?:displaystyle|textstyle)(?![a-zA-Z])"), ""),
    (re.compile(r"\\label\{[^}]*\}"), ""),
    (re.compile(r"(?<!\\)\\(?=\s)"), r"\\;"),   # a control space (\ ): a medium space
]


def to_mathml(tex: str, display: bool) -> str:
    for pattern, replacement in _REWRITES:
        tex = pattern.sub(replacement, tex)
    return convert(tex.strip(), display="block" if display else "inline")


def _convert(self, node, tex: str, display: bool) -> str:
    try:
        return to_mathml(tex, display)
    except Exception as exc:                      # noqa: BLE001  (say which formula)
        where = f"{node.source}:{node.line}" if node.source else self.builder.current_docname
        raise ExtensionError(f"cannot typeset {tex!r} ({where}): "
                             f"{type(exc).__name__}: {exc}") from exc


def visit_inline(self, node):
    self.body.append(f'<span class="math">{_convert(self, node, node.astext(), False)}</span>')
    raise nodes.SkipNode


def visit_block(self, node):
    mathml = _convert(self, node, node.astext(), True)
    number = ""
    if node.get("number"):
        number = f'<span class="eqno">({node["number"]})</span>'
    ids = " ".join(node.get("ids", []))
    anchor = f' id="{ids.split()[0]}"' if ids else ""
    self.body.append(f'<div class="math-block"{anchor}>{number}{mathml}</div>\n')
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("mathml", (visit_inline, None), (visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
