"""Plain-text formulas as TeX, so the site can typeset them.

nanotie's docstrings write their equations the way they read in a terminal, on an
indented line of their own:

    ĥ_t = Re Σ_k R_k λ_k^(t-1)        (t >= 1)
    s_t = λ ⊙ s_{t-1} + u_t           (read the state, then update it)

``to_tex`` turns one such line into TeX: ``_x``, ``_{..}``, ``_(..)`` and the same
with ``^`` become sub- and superscripts, Greek and operator symbols their TeX names,
``sqrt(..)`` a root, Greek names (eps, tau, pi) and sum their symbols, another word of
two or more letters upright text (Re, diag, softmax),
runs of two or more spaces a space (\\quad), and a parenthesised phrase of prose a
``\\text{..}`` note. ``formula_lines`` says whether an indented block is made of such
lines; a block that is not (a shape table, an example) stays a literal block.
"""

from __future__ import annotations

import re
import unicodedata

SYMBOLS = {
    "Σ": r"\sum", "∑": r"\sum", "Π": r"\prod", "∏": r"\prod", "⊙": r"\odot",
    "·": r"\cdot", "×": r"\times", "≈": r"\approx", "≤": r"\leq", "≥": r"\geq",
    "≠": r"\neq", "∈": r"\in", "→": r"\to", "←": r"\leftarrow", "↦": r"\mapsto",
    "∞": r"\infty", "∂": r"\partial", "∇": r"\nabla", "‖": r"\|", "⊤": r"\top",
    "∘": r"\circ", "⊗": r"\otimes", "≪": r"\ll", "≫": r"\gg", "∀": r"\forall",
    "∃": r"\exists", "−": "-", "…": r"\ldots", "⌈": r"\lceil", "⌉": r"\rceil",
    "⌊": r"\lfloor", "⌋": r"\rfloor", "√": r"\sqrt", "∝": r"\propto", "≡": r"\equiv",
}
ASCII = [("~=", r"\approx "), (">=", r"\geq "), ("<=", r"\leq "), ("!=", r"\neq "), ("->", r"\to "),
         ("||", r"\| "), ("...", r"\ldots ")]
ESCAPE = {"{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$",
          "*": r"\ast ", "~": r"\sim ", "\\": r"\backslash "}
ACCENTS = {"\u0302": r"\hat", "\u0304": r"\bar", "\u0303": r"\tilde", "\u0307": r"\dot"}
GREEK_NAMES = {"LAMDA": "lambda", "EPSILON": "epsilon"}
GREEK_WORDS = {w: "\\" + w for w in (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "mu",
    "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega", "Gamma",
    "Delta", "Theta", "Lambda", "Pi", "Sigma", "Phi", "Psi", "Omega")}
GREEK_WORDS.update({"eps": r"\epsilon", "lam": r"\lambda", "sum": r"\sum", "prod": r"\prod",
                    "in": r"\in", "inf": r"\infty"})
MATHY = re.compile(r"[=≈≤≥∈→⊙Σ∑^]|[A-Za-zα-ωΑ-Ω)\]]_|\w\(")
PROSE_WORD = re.compile(r"[A-Za-z]{3,}")
MATH_WORDS = ("Re", "Im", "diag", "sqrt", "exp", "log", "softmax", "tanh")  # not prose


def _greek(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    m = re.match(r"GREEK (SMALL|CAPITAL) LETTER (\w+)$", name)
    if not m:
        return None
    word = GREEK_NAMES.get(m.group(2), m.group(2)).lower()
    if m.group(1) == "CAPITAL":
        if word in ("gamma", "delta", "theta", "lambda", "xi", "pi", "sigma", "upsilon",
                    "phi", "psi", "omega"):
            return "\\" + word.capitalize()
        return ch                          # A, B, ... look like Latin capitals
    return "\\" + word


def _group(text: str, i: int, open_: str, close: str) -> int:
    """The index just past the bracket that closes ``text[i]`` (an ``open_``)."""
    depth = 0
    for j in range(i, len(text)):
        depth += text[j] == open_
        depth -= text[j] == close
        if depth == 0:
            return j + 1
    raise ValueError(f"unbalanced {open_!r} in {text!r}")


def _math(text: str) -> str:
    """TeX for a piece of formula."""
    text = unicodedata.normalize("NFD", text)
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in "_^":
            nxt = text[i + 1:i + 2]
            if nxt in ("{", "("):
                end = _group(text, i + 1, nxt, "}" if nxt == "{" else ")")
                out.append(f"{ch}{{{_math(text[i + 2:end - 1])}}}")
                i = end
                continue
            m = re.match(r"-?[\w']+|[^\s]", text[i + 1:])
            if not m:
                raise ValueError(f"nothing after {ch!r} in {text!r}")
            out.append(f"{ch}{{{_math(m.group(0))}}}")
            i += 1 + m.end()
            continue
        if text.startswith("sqrt(", i):
            end = _group(text, i + 4, "(", ")")
            out.append(rf"\sqrt{{{_math(text[i + 5:end - 1])}}}")
            i = end
            continue
        ascii_op = next(((a, t) for a, t in ASCII if text.startswith(a, i)), None)
        if ascii_op:
            out.append(ascii_op[1])
            i += len(ascii_op[0])
            continue
        m = re.match(r"[A-Za-z]+", text[i:])
        if m:
            word = m.group(0)
            end = i + len(word)
            accent = ACCENTS.get(text[end:end + 1])
            if accent and len(word) == 1:
                out.append(f"{accent}{{{word}}}")
                i = end + 1
                continue
            if word in GREEK_WORDS:
                out.append(GREEK_WORDS[word] + " ")
            else:
                out.append(word if len(word) == 1 else rf"\mathrm{{{word}}}")
            i = end
            continue
        if ch in SYMBOLS:
            out.append(SYMBOLS[ch] + " ")
        elif greek := _greek(ch):
            out.append(greek + " ")
        elif ch in ESCAPE:
            out.append(ESCAPE[ch])
        elif unicodedata.combining(ch):
            if not out:
                raise ValueError(f"a lone accent in {text!r}")
            out[-1] = f"{ACCENTS.get(ch, '')}{{{out[-1].strip()}}}" if ch in ACCENTS else out[-1]
        elif ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(ch)
        i += 1
    return "".join(out).strip()


def _text(text: str) -> str:
    """A phrase of prose inside a formula."""
    for ch, esc in (("\\", r"\backslash "), ("{", r"\{"), ("}", r"\}"), ("_", r"\_"),
                    ("^", r"\^{}"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(ch, esc)
    return rf"\text{{{text}}}"


def _is_note(piece: str) -> bool:
    """A parenthesised phrase of prose, such as ``(read the state, then update it)``,
    or a ``# comment``."""
    if piece.startswith("# "):
        return True
    if not (piece.startswith("(") and piece.endswith(")")):
        return False
    try:
        if _group(piece, 0, "(", ")") != len(piece):      # (a) / (b): not one group
            return False
    except ValueError:
        return False
    words = [w for w in PROSE_WORD.findall(piece)
             if w not in GREEK_WORDS and w not in MATH_WORDS]
    return " " in piece.strip() and bool(words)


def to_tex(line: str) -> str:
    """One plain-text formula line as TeX (``ValueError`` when it cannot be read)."""
    pieces = [p for p in re.split(r"\s{2,}", line.strip()) if p]
    return r" \quad ".join(_text(p.lstrip("# ")) if _is_note(p) else _math(p)
                             for p in pieces)


def formula_line(line: str) -> bool:
    """Whether a line reads as a formula: a relation or sub/superscript, and no run of
    prose outside its parenthesised notes."""
    pieces = [p for p in re.split(r"\s{2,}", line.strip()) if p and not _is_note(p)]
    body = " ".join(pieces)
    if not body or not MATHY.search(body) or ":" in body or "``" in body:
        return False
    words = re.findall(r"[A-Za-z]+", body)
    run = longest = 0
    for w in words:
        run = run + 1 if len(w) >= 3 and w not in MATH_WORDS else 0
        longest = max(longest, run)
    return longest < 3


def formula_lines(lines: list[str]) -> bool:
    """Whether every non-blank line of an indented block is a formula that converts."""
    body = [line for line in lines if line.strip()]
    if not body or not all(formula_line(line) for line in body):
        return False
    try:
        for line in body:
            to_tex(line)
    except ValueError:
        return False
    return True
