"""The registry of miniature reproductions: experiment name -> entry point.

Each paper package registers its ``experiment.run(quick, out_dir, ...)`` here, and
``python -m nanotie reproduce`` runs them in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Experiment:
    name: str           # what the CLI calls it, e.g. "tied-lora"
    title: str          # one line for `python -m nanotie list`
    run: Callable       # run(quick: bool, out_dir: pathlib.Path, seed: int, device: str)


REGISTRY: dict[str, Experiment] = {}


def register(name: str, title: str, run: Callable) -> None:
    if name in REGISTRY:
        raise ValueError(f"experiment {name!r} is registered twice")
    REGISTRY[name] = Experiment(name, title, run)
