"""Source, annotated side by side: docstrings and comments on the left, the code they
explain on the right, one row per explanation, every line anchored (``#L42``).

``split_rows(text)`` cuts a Python file into rows: a row starts at each block of
full-line comments, at each ``def`` or ``class`` (with its docstring beside it), and at
the module docstring; the code that follows belongs to that row until the next one
starts. Docstrings are reST (roles such as :func: resolve against the API reference,
``:math:`` is typeset); comments are plain text in which `backticks` mark code and
``$...$`` is typeset. A tie is highlighted: every code line whose own comment speaks
of a tie (``tie``, ``tied``, ``ties``, ``tying``), and the first line under a comment
block that does.

The ``annotated-source`` directive renders one file this way; with ``:plain:`` it
shows a highlighted listing with the same anchors (notebook sources, markdown).
"""

from __future__ import annotations

import ast
import html
import inspect
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.parsers.rst import Parser as RSTParser
from docutils.utils import new_document
from pygments import lex
from pygments.lexers import get_lexer_for_filename, PythonLexer, TextLexer
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound
from sphinx.util.docutils import LoggingReporter, SphinxDirective

from rstify import rstify

TIE = re.compile(r"\b(?:un)?t(?:ie|ies|ied|ying)\b", re.IGNORECASE)
BANNER = re.compile(r"^[-=*~#]{4,}\s*|\s*[-=*~#]{4,}$", re.M)   # "# ---- the tie report"
SECTION_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


@dataclass
class Row:
    doc: str = ""                 # the explanation's text
    kind: str = "none"            # "docstring", "comment" or "none"
    doc_lines: list = field(default_factory=list)    # line numbers shown on the left
    code: list = field(default_factory=list)         # line numbers shown on the right
    tie_doc: bool = False
    blank: list = field(default_factory=list)        # blank lines left out, still anchored


def _docstring_spans(tree) -> dict:
    """{first line of the owner (decorators included): (doc, doc_start, doc_end)}."""
    spans = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
            continue
        body = node.body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            continue
        first = 1 if isinstance(node, ast.Module) else min(
            [node.lineno] + [d.lineno for d in node.decorator_list])
        spans[first] = (inspect.cleandoc(body[0].value.value), body[0].lineno,
                        body[0].end_lineno)
    return spans


def _def_starts(tree) -> set:
    starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            starts.add(min([node.lineno] + [d.lineno for d in node.decorator_list]))
    return starts


def _comment_lines(text: str) -> dict:
    """{line: comment text} for every comment token; full-line ones are marked."""
    found = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                full = tok.line[:tok.start[1]].strip() == ""
                found[tok.start[0]] = (tok.string, full)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return found


def split_rows(text: str) -> list[Row]:
    lines = text.splitlines()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [Row(code=list(range(1, len(lines) + 1)))]
    docstrings = _docstring_spans(tree)
    defs = _def_starts(tree)
    comments = _comment_lines(text)
    skip = set()                       # docstring lines, shown on the left instead
    rows: list[Row] = []
    n = 1
    while n <= len(lines):
        if n in skip:
            n += 1
            continue
        comment = comments.get(n)
        if comment and comment[1] and not lines[n - 1].lstrip().startswith("#!"):
            block = []
            while n <= len(lines) and comments.get(n, (None, False))[1]:
                block.append(n)
                n += 1
            body = "\n".join(re.sub(r"^#+ ?", "", comments[i][0]) for i in block)
            body = BANNER.sub("", body).strip()
            rows.append(Row(doc=body, kind="comment", doc_lines=block,
                            tie_doc=bool(TIE.search(body))))
            continue
        if n in docstrings or n in defs:
            row = Row()
            if n in docstrings:
                doc, start, end = docstrings[n]
                row.doc, row.kind = doc, "docstring"
                row.doc_lines = list(range(start, end + 1))
                skip.update(row.doc_lines)
                row.tie_doc = False    # a docstring explains; ties in it are prose
            rows.append(row)
            if n in skip:              # the module docstring opens the file
                continue
            row.code.append(n)
            n += 1
            continue
        if not rows:
            rows.append(Row())
        rows[-1].code.append(n)
        n += 1
    for row in rows:                   # blank lines at a row's ends: anchors only
        while row.code and not lines[row.code[-1] - 1].strip():
            row.blank.append(row.code.pop())
        while row.code and not lines[row.code[0] - 1].strip():
            row.blank.append(row.code.pop(0))
    return rows


def _token_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def highlight_lines(text: str, lexer) -> list[str]:
    """The file's lines as HTML, highlighted as a whole (a string spanning lines keeps
    its colour) and then cut at the newlines."""
    out, current = [], []
    for ttype, value in lex(text, lexer):
        cls = _token_class(ttype)
        for i, piece in enumerate(value.split("\n")):
            if i:
                out.append("".join(current))
                current = []
            if piece:
                escaped = html.escape(piece)
                current.append(f'<span class="{cls}">{escaped}</span>' if cls else escaped)
    if current:
        out.append("".join(current))
    lines = text.splitlines()
    out += [""] * (len(lines) - len(out))
    return out[:len(lines)]


def _code_html(numbers, hl, ties, raw) -> str:
    """Each line a block with its anchor and number; ``--ind`` (its indentation) lets a
    long line wrap four columns deeper than it starts."""
    parts = []
    for n in numbers:
        cls = "line tie" if n in ties else "line"
        ind = len(raw[n - 1]) - len(raw[n - 1].lstrip(" ")) if n <= len(raw) else 0
        parts.append(f'<span class="{cls}" id="L{n}" style="--ind:{ind}ch">'
                     f'<a class="lineno" href="#L{n}">{n}</a>'
                     f'{hl[n - 1]}</span>')
    return '<div class="sbs-code highlight"><pre>' + "".join(parts) + "</pre></div>"


def comment_html(text: str, to_mathml) -> str:
    """A comment block as HTML: paragraphs, `code`, $math$, lists kept as lines."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    out = []
    for para in paragraphs:
        pieces = []
        for line in para.splitlines():
            line = html.escape(line.strip(), quote=False)
            line = re.sub(r"`([^`]+)`", r"<code>\1</code>", line)
            line = re.sub(r"(?<![\w$])\$([^$\s][^$]*?)\$(?![\w$])",
                          lambda m: to_mathml(html.unescape(m.group(1)), False), line)
            pieces.append(line)
        joined = ""
        for i, piece in enumerate(pieces):
            if i and re.match(r"^([-*•]|\d+[.)]) ", piece):
                joined += "<br/>"
            elif i:
                joined += " "
            joined += piece
        out.append(f"<p>{joined}</p>")
    return "".join(out)


def _doc_rst(doc: str) -> list[str]:
    """A docstring as reST that can sit inside a cell: section titles become rubrics."""
    lines = doc.splitlines()
    out, i = [], 0
    while i < len(lines):
        if (i + 1 < len(lines) and lines[i].strip() and SECTION_UNDERLINE.match(lines[i + 1])
                and len(lines[i + 1].strip()) >= len(lines[i].strip())):
            out += [f".. rubric:: {lines[i].strip()}", ""]
            i += 2
            continue
        out.append(lines[i])
        i += 1
    return rstify(out)


class AnnotatedSource(SphinxDirective):
    """``.. annotated-source:: path/from/the/repository/root.py``"""

    required_arguments = 1
    option_spec = {"plain": directives.flag, "module": directives.unchanged}

    def parse_rst(self, text: str, source: str) -> list:
        """Docstrings are reST even on a MyST page: parse them with docutils' own parser
        (roles such as :func: and :math: come from Sphinx, as in autodoc)."""
        document = new_document(source, self.state.document.settings)
        document.reporter = LoggingReporter(source)
        RSTParser().parse(text, document)
        return list(document.children)

    def run(self):
        from mathml import to_mathml

        root = Path(self.config.nanotie_root)
        rel = self.arguments[0]
        path = root / rel
        self.env.note_dependency(str(path))
        text = path.read_text()
        try:
            lexer = get_lexer_for_filename(path.name, stripnl=False, ensurenl=False)
        except ClassNotFound:
            lexer = TextLexer(stripnl=False, ensurenl=False)
        if "plain" in self.options or not path.suffix == ".py":
            hl = highlight_lines(text, lexer)
            listing = _code_html(range(1, len(hl) + 1), hl, set(), text.splitlines())
            return [nodes.raw("", f'<div class="listing">{listing}</div>', format="html")]
        hl = highlight_lines(text, PythonLexer(stripnl=False, ensurenl=False))
        raw = text.splitlines()
        comments = _comment_lines(text)
        rows = split_rows(text)
        table = nodes.container(classes=["sbs"])
        saved = self.env.ref_context.get("py:module")
        if self.options.get("module"):
            self.env.ref_context["py:module"] = self.options["module"]
        try:
            for row in rows:
                ties = {n for n in row.code if n in comments and not comments[n][1]
                        and TIE.search(comments[n][0])}
                if row.tie_doc:
                    first = next((n for n in row.code if hl[n - 1].strip()), None)
                    if first:
                        ties.add(first)
                classes = ["sbs-row"] + (["tie"] if row.tie_doc or ties else [])
                box = nodes.container(classes=classes)
                doc = nodes.container(classes=["sbs-doc", f"sbs-{row.kind}"]
                                      + (["tie"] if row.tie_doc else []))
                anchors = "".join(f'<span id="L{n}"></span>'
                                  for n in sorted(row.doc_lines + row.blank))
                if anchors:
                    doc += nodes.raw("", f'<span class="anchors">{anchors}</span>',
                                     format="html")
                if row.kind == "docstring":
                    doc += self.parse_rst("\n".join(_doc_rst(row.doc)), f"{path}:{row.doc_lines[0]}")
                elif row.kind == "comment":
                    doc += nodes.raw("", comment_html(row.doc, to_mathml), format="html")
                box += doc
                box += nodes.raw("", _code_html(row.code, hl, ties, raw), format="html")
                table += box
        finally:
            if saved is None:
                self.env.ref_context.pop("py:module", None)
            else:
                self.env.ref_context["py:module"] = saved
        return [table]


def setup(app):
    app.add_config_value("nanotie_root", "", "env")
    app.add_directive("annotated-source", AnnotatedSource)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
