"""The registry of miniature reproductions: experiment name -> entry point.

Experiment ``name``'s ``run(quick, out_dir, seed, device, runner)`` lives in
``nanotie.papers.<name, dashes as underscores>.experiment`` and reproduces one claim
(``runner``: a :class:`nanotie.protocol.Runner` that executes, caches and parallelises
its independent runs). ``python -m nanotie reproduce`` runs them in this order; a module
is imported only when its experiment runs, so ``python -m nanotie list`` stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    """A miniature reproduction: its CLI name and its one-line title."""
    name: str           # what the CLI calls it, e.g. "tied-lora"
    title: str          # one line for `python -m nanotie list`

    @property
    def module(self) -> str:
        """The dotted path of the module that defines run()."""
        return f"nanotie.papers.{self.name.replace('-', '_')}.experiment"

    def run(self, quick: bool, out_dir, seed: int = 0, device: str = "cpu",
            runner=None) -> dict:
        """Run the experiment; it writes report.md, results.json and plots to out_dir
        and returns its results (with a ``summary`` of headline figures)."""
        module = importlib.import_module(self.module)
        return module.run(quick=quick, out_dir=out_dir, seed=seed, device=device, runner=runner)


REGISTRY: dict[str, Experiment] = {e.name: e for e in [
    Experiment("gpt", "baseline byte-level GPT on English prose (tied embeddings)"),
    Experiment("tied-lora", "Tied-LoRA: one shared low-rank pair plus per-layer scales"),
    Experiment("headless", "headless LMs: contrastive weight tying vs a softmax head"),
    Experiment("hyena",
               "Transformer vs Hyena vs MultiHyena: prose, associative recall, distillation"),
    Experiment("stlm", "Super Tiny LMs: byte-level pooling, embedding tying, FFN sharing"),
    Experiment("trellis", "TrellisNet: one convolution tied across depth = a truncated LSTM"),
    Experiment("dynamic-tying", "a Q-learning agent ties layers during training (Hay & Wolf)"),
]}
