"""What every experiment writes: ``results.json``, ``report.md`` and PNG plots.

Experiments call these helpers so their outputs look alike; the CLI prints each
experiment's ``summary`` (a few headline figures) as one table at the end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .files import atomic_write

__all__ = ["write_results", "write_report", "plot_losses", "summary_table", "smooth"]


def _plain(value):
    """JSON-friendly copies of NumPy scalars and arrays (NaN becomes null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_results(out_dir, results: dict) -> Path:
    """``out_dir/results.json``: every measured figure of the run."""
    path = Path(out_dir) / "results.json"
    _write_text(path, json.dumps(_plain(results), indent=2) + "\n")
    return path


def write_report(out_dir, title: str, body: str) -> Path:
    """``out_dir/report.md``: a title and a Markdown body."""
    path = Path(out_dir) / "report.md"
    _write_text(path, f"# {title}\n\n{body.strip()}\n")
    return path


def smooth(values, window: int = 20) -> np.ndarray:
    """Moving average over up to ``window`` past values (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])            # c[i] = v[0] + ... + v[i-1]
    end = np.arange(1, len(v) + 1)
    start = np.maximum(0, end - window)
    return (c[end] - c[start]) / (end - start)


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures go to files, never to a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG (making the folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_losses(runs: dict, path, title: str, metric: str = "val_bpb",
                ylabel: str = "bits per byte") -> Path:
    """Training curves of one or more runs: ``{label: History}``.

    Left: the training loss (smoothed) against the step. Right: the validation
    ``metric`` at each evaluation."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, h in runs.items():
        line, = ax1.plot(h.step, smooth(h.train_loss), label=label)
        ax2.plot(h.eval_step, getattr(h, metric), "o-", color=line.get_color(), label=label)
    ax1.set(xlabel="step", ylabel="train loss (nats/token, smoothed)", title="training")
    ax2.set(xlabel="step", ylabel=ylabel, title="validation")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def summary_table(rows: list) -> str:
    """A plain-text table of ``(experiment, {figure: value})`` rows."""
    lines = []
    for name, summary in rows:
        figures = "  ".join(f"{k} {v}" for k, v in summary.items())
        lines.append(f"  {name:14s} {figures}")
    return "\n".join(lines)
