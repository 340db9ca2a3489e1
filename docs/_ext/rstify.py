"""Docstrings as reST. nanotie's docstrings are written to be read as plain text, with
reST's roles and ``::`` blocks where they help; a few plain-text habits are not reST
(``|x|`` for a norm, ``a*b``, an indented formula right under a sentence). ``rstify``
makes those read as the author meant, for autodoc and for the annotated source: an
indented block of plain-text formulas is typeset (:mod:`plainmath`), and another
indented block with formulas or aligned columns keeps its lines as a literal block."""

from __future__ import annotations

import re

from plainmath import MATHY, formula_lines, to_tex

LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)]|[a-z][.)]|:\w[^:]*:)\s")
EMPHASIS = re.compile(r"(\*\*[^\s*][^*]*?\*\*|\*[^\s*][^*]*?\*)(?=[\s.,;:!?)'\"\]-]|$)")
INLINE_LITERAL = re.compile(r"``.+?``|`[^`]+`_?|:\w+:`[^`]+`")


def _escape_text(line: str) -> str:
    """Escape ``|`` and stray ``*`` outside inline literals and roles."""
    pieces, last = [], 0
    for m in INLINE_LITERAL.finditer(line):
        pieces.append(_escape_plain(line[last:m.start()]))
        pieces.append(m.group(0))
        last = m.end()
    pieces.append(_escape_plain(line[last:]))
    return "".join(pieces)


def _escape_plain(text: str) -> str:
    text = text.replace("|", r"\|")
    kept, last = [], 0
    for m in EMPHASIS.finditer(text):
        if m.start() and not re.match(r"[\s(\"'\[-]", text[m.start() - 1]):
            continue               # a*b*c is arithmetic, not emphasis
        kept.append(text[last:m.start()].replace("*", r"\*"))
        kept.append(m.group(0))
        last = m.end()
    kept.append(text[last:].replace("*", r"\*"))
    return "".join(kept)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_blocks(lines: list[str]) -> list[str]:
    """Typeset each indented block of formulas under a sentence (a ``math`` directive per
    line); keep another indented block with formulas or aligned columns as a literal
    block. Other lines are left as they are."""
    out, i, literal = [], 0, None
    while i < len(lines):
        line = lines[i]
        if literal is not None and (not line.strip() or _indent(line) > literal):
            out.append(line)
            i += 1
            continue
        literal = None
        prev = next((l for l in reversed(out) if l.strip()), None)
        if (line.strip() and prev is not None and _indent(line) >= _indent(prev) + 2
                and not LIST_ITEM.match(prev) and not prev.rstrip().endswith("::")
                and not prev.lstrip().startswith((".. ", ">>>"))):
            j = i
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) >= _indent(line)):
                j += 1
            while j > i and not lines[j - 1].strip():
                j -= 1
            block, pad = lines[i:j], " " * _indent(prev)
            if formula_lines(block):
                for formula in (b for b in block if b.strip()):
                    out += ["", f"{pad}.. math::", "", f"{pad}   {to_tex(formula)}"]
                out.append("")
                i = j
                continue
            if any(MATHY.search(b) or re.search(r"\S\s{2,}\S", b.strip()) for b in block):
                out += ["", f"{pad}::", ""] + block + [""]
                i = j
                continue
        if line.rstrip().endswith("::") or line.lstrip().startswith(".. "):
            literal = _indent(line)
        out.append(line)
        i += 1
    return out


def rstify(lines: list[str]) -> list[str]:
    lines = _indented_blocks(lines)
    out: list[str] = []
    literal_indent = None            # inside a literal block opened by '::'
    para_lines = 0                   # lines in the current paragraph so far
    for line in lines:
        if not line.strip():
            out.append(line)
            para_lines = 0
            continue
        indent = _indent(line)
        if literal_indent is not None:
            if indent > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        prev = next((l for l in reversed(out) if l.strip()), None)
        prev_blank = bool(out) and not out[-1].strip()
        if prev is not None and not prev_blank:
            if LIST_ITEM.match(line) and not LIST_ITEM.match(prev) and indent >= _indent(prev):
                out.append("")       # a list right under its sentence: a blank line
                para_lines = 0
            elif indent < _indent(prev):
                out.append("")       # a block quote or definition ends: a blank line
                para_lines = 0
            elif indent > _indent(prev) and not LIST_ITEM.match(prev) \
                    and not prev.rstrip().endswith("::") and (para_lines > 1
                                                             or LIST_ITEM.match(line)):
                out.append("")       # an indented formula under a sentence: a quote
                para_lines = 0
        if line.rstrip().endswith("::"):
            literal_indent = indent
            out.append(_escape_text(line[:-2]) + "::")
        elif line.lstrip().startswith(".. ") or line.lstrip().startswith(">>>"):
            out.append(line)
        else:
            out.append(_escape_text(line))
        para_lines += 1
    return out
