"""What every experiment writes: ``results.json``, ``report.md`` and PNG plots.

Experiments call these helpers so their outputs look alike; the CLI prints each
experiment's ``summary`` (a few headline figures) as one table at the end.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from .files import atomic_write, write_text

__all__ = ["write_results", "publish", "headline", "progress_bar", "smooth", "spread_table",
           "finish_figure", "plot_spread", "plot_bands", "seed_bars", "minmax_yerr",
           "claim_section", "tuning_table", "tuning_record", "pyplot", "save_figure"]


def _plain(value, nan_as_null: bool = True):
    """JSON-friendly copies of NumPy scalars and arrays, and of anything with an
    ``as_dict()`` (a :class:`~nanotie.protocol.Spread` or ``Verdict``). NaN becomes null
    unless ``nan_as_null`` is False: the run cache keeps NaN, so figures read back the same."""
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict(), nan_as_null)
    if isinstance(value, dict):
        return {str(k): _plain(v, nan_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, nan_as_null) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), nan_as_null)
    if isinstance(value, np.generic):
        value = value.item()
    if nan_as_null and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(out_dir, results: dict) -> Path:
    """``out_dir/results.json``: every measured figure of the run."""
    path = Path(out_dir) / "results.json"
    write_text(path, json.dumps(_plain(results), indent=2) + "\n")
    return path


def publish(out_dir, title: str, results: dict, body: str) -> dict:
    """Write an experiment's ``results.json`` and ``report.md`` (its title over the
    Markdown ``body``); return ``results`` as the JSON holds them (NaN kept)."""
    write_results(out_dir, results)
    write_text(Path(out_dir) / "report.md", f"# {title}\n\n{body.strip()}\n")
    return _plain(results, nan_as_null=False)


def headline(claim: str, where: str, verdict, figure: str) -> dict:
    """The top README's row for an experiment: the paper's claim, where the paper makes
    it, the verdict here (a :class:`~nanotie.protocol.Verdict` or its outcome) and the
    figure that decides it."""
    return {"claim": claim, "where": where,
            "verdict": getattr(verdict, "outcome", verdict), "figure": figure}


def smooth(values, window: int = 20) -> np.ndarray:
    """Moving average over up to ``window`` past values (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])            # c[i] = v[0] + ... + v[i-1]
    end = np.arange(1, len(v) + 1)
    start = np.maximum(0, end - window)
    return (c[end] - c[start]) / (end - start)


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures go to files, never to a window.
    In a notebook the inline backend stays, so the notebook's own plots still show."""
    import matplotlib

    if "ipykernel" not in sys.modules:    # asking for the backend would pick a GUI one
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG (making the folder, atomically:
    never half a PNG) and close it."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        pyplot().close(fig)
    return path


def finish_figure(fig, axes, path, title: str | None = None, legend_size=None) -> Path:
    """A light grid and the legend on each of ``axes``, ``title`` over them all, then
    :func:`save_figure`."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def progress_bar(total: int, desc: str, progress: bool | None = None, initial: int = 0,
                 unit: str = "it"):
    """A tqdm bar over ``total`` steps, shown when ``progress`` is True (None: only when
    stderr is a terminal); a bar that is not shown counts nothing and prints nothing."""
    show = sys.stderr.isatty() if progress is None else progress
    if show:    # tqdm.auto warns on import in a Jupyter kernel without ipywidgets
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not show,
                dynamic_ncols=True, leave=False)


# ----------------------------------------------------------- figures over seeds


def spread_table(rows, columns, digits: int = 3, seeds_of: str | None = None) -> str:
    """A Markdown table of per-seed figures: ``rows`` is ``[(label, {column: Spread or
    text})]``; each Spread prints as ``mean ± std``. ``seeds_of`` names the column whose
    every seed value is listed in a last column (so no figure hides behind a mean)."""
    head = ["configuration"] + list(columns) + ([f"{seeds_of}, each seed"] if seeds_of else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells in rows:
        values = [cells.get(c, "") for c in columns]
        out = [label] + [v.format(digits) if hasattr(v, "seeds") else str(v)   # a Spread
                         for v in values]
        if seeds_of:
            v = cells.get(seeds_of)
            out.append(v.seeds(digits) if hasattr(v, "seeds") else "")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n\n*mean ± sample standard deviation over seeds*"


def tuning_table(choice: dict, setting: str = "learning rate", metric: str = "val",
                 digits: int = 3) -> str:
    """The tuning grid of :func:`nanotie.protocol.choose`: every point's mean validation
    figure, the chosen one in bold, and two warnings: a choice at an end of its grid (a
    setting outside the grid might do better still), and a choice within the seeds'
    noise of another point (|mean gap| <= the larger seed range, the rule of
    :func:`~nanotie.protocol.verdict`): other seeds might choose that one instead."""
    from .protocol import WITHIN_NOISE, verdict     # here: protocol imports this module

    def name(s):
        return format(s, "g") if isinstance(s, float) else str(s)

    lines = [f"| method | {setting}: validation {metric} (mean over seeds) |", "|---|---|"]
    edge, ties = [], []
    for method, c in choice.items():
        cells = []
        for s, sp in c["grid"].items():
            text = f"{name(s)}: {sp.mean:.{digits}f}"
            cells.append(f"**{text}**" if s == c["best"] else text)
        lines.append(f"| {method} | " + ", ".join(cells) + " |")
        numeric = all(isinstance(s, (int, float)) for s in c["grid"])
        if numeric and len(c["grid"]) > 1 and c["best"] in (min(c["grid"]), max(c["grid"])):
            edge.append(str(method))
        best = c["grid"][c["best"]].values
        near = [name(s) for s, sp in c["grid"].items() if s != c["best"]
                and verdict(best, sp.values).outcome == WITHIN_NOISE]
        if near:
            ties.append(f"{method} ({', '.join(near)})")
    if edge:
        lines.append(f"\nChosen at an end of the grid: {', '.join(edge)}. A {setting} "
                     "outside the grid might do better still, and move the verdicts.")
    if ties:
        lines.append(f"\nWithin the seeds' noise of the choice: {'; '.join(ties)}. Other "
                     "seeds might choose that instead, and move the verdicts.")
    return "\n".join(lines)


def tuning_record(choice: dict) -> dict:
    """``results.json``'s copy of :func:`nanotie.protocol.choose`'s output: per method,
    the chosen setting and every grid point's spread."""
    return {m: {"best": c["best"], "grid": c["grid"]} for m, c in choice.items()}


def claim_section(claim: str, where: str, verdicts, note: str = "",
                  label: str = "The paper's claim") -> str:
    """The paper's claim (with where it is in the paper) and the verdict(s) on it.

    ``verdicts``: ``[(what was compared, Verdict)]``; ``label`` names what is judged
    (a baseline's sanity check is not a paper's claim)."""
    lines = [f"**{label}** ({where}): {claim}", ""] + [f"- {what}: {v}" for what, v in verdicts]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def minmax_yerr(mean, lo, hi) -> np.ndarray:
    """``errorbar``'s ``yerr`` from ``mean`` down to ``lo`` and up to ``hi``: (2, N), N = 1
    for scalars. Clipped at 0: the mean of equal values can round a hair past them."""
    return np.maximum([np.atleast_1d(np.subtract(mean, lo)),
                       np.atleast_1d(np.subtract(hi, mean))], 0.0)


def seed_bars(ax, x, values, fmt="o-", **kw):
    """On ``ax``: the mean over seeds (axis 0 of ``values``) with error bars down to the
    min and up to the max."""
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean(0)
    ax.errorbar(x, mean, yerr=minmax_yerr(mean, v.min(0), v.max(0)), fmt=fmt, capsize=3, **kw)


def plot_bands(curves: dict, path, xlabel: str, ylabel: str, title: str,
               figsize=(6.4, 3.8), legend_size=None) -> Path:
    """Curves over seeds: the mean as a line, min to max as a band around it.

    ``curves``: ``{label: (x, ys)}``, ``ys`` of shape (seeds, len(x))."""
    fig, ax = pyplot().subplots(figsize=figsize)
    for label, (x, ys) in curves.items():
        ys = np.asarray(ys)
        line, = ax.plot(x, ys.mean(0), "o-", ms=3, label=label)
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return finish_figure(fig, [ax], path, legend_size=legend_size)


def plot_spread(groups: dict, path, title: str, ylabel: str) -> Path:
    """Bars of the mean over seeds with error bars (min to max), every seed as a dot.

    ``groups``: ``{label: Spread}``."""
    plt = pyplot()
    labels = list(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.6))
    for i, label in enumerate(labels):
        sp = groups[label]
        ax.bar(i, sp.mean, color=f"C{i % 10}", alpha=0.6)
        ax.errorbar(i, sp.mean, yerr=minmax_yerr(sp.mean, sp.min, sp.max), color="k",
                    capsize=5)
        ax.plot([i] * sp.n, sp.values, "k.", ms=6)
    lo = min(sp.min for sp in groups.values())
    hi = max(sp.max for sp in groups.values())
    pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
    ax.set_ylim(lo - 3 * pad, hi + pad)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.text(0.99, 0.98, "bar: mean; whiskers: min-max; dots: seeds", transform=ax.transAxes,
            ha="right", va="top", fontsize=7)
    return save_figure(fig, path)
