"""The registry of miniature reproductions: experiment name -> entry point.

Each entry names the module whose ``run(quick, out_dir, seed, device, runner)``
reproduces one claim (``runner``: a :class:`nanotie.protocol.Runner` that executes,
caches and parallelises its independent runs); ``python -m nanotie reproduce`` runs them in this order. The module is
imported only when the experiment runs, so ``python -m nanotie list`` stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str           # what the CLI calls it, e.g. "tied-lora"
    title: str          # one line for `python -m nanotie list`
    module: str         # dotted path of the module that defines run()

    def run(self, quick: bool, out_dir, seed: int = 0, device: str = "cpu",
            runner=None) -> dict:
        """Run the experiment; it writes report.md, results.json and plots to out_dir
        and returns its results (with a ``summary`` of headline figures)."""
        return importlib.import_module(self.module).run(quick=quick, out_dir=out_dir,
                                                       seed=seed, device=device,
                                                       runner=runner)


REGISTRY: dict[str, Experiment] = {}


def register(name: str, title: str, module: str) -> None:
    if name in REGISTRY:
        raise ValueError(f"experiment {name!r} is registered twice")
    REGISTRY[name] = Experiment(name, title, module)


register("gpt", "baseline byte-level GPT on English prose (tied embeddings)",
         "nanotie.papers.gpt.experiment")
register("tied-lora", "Tied-LoRA: one shared low-rank pair plus per-layer scales",
         "nanotie.papers.tied_lora.experiment")
register("headless", "headless LMs: contrastive weight tying vs a softmax head",
         "nanotie.papers.headless.experiment")
register("hyena", "Transformer vs Hyena vs MultiHyena: prose, associative recall, filters",
         "nanotie.papers.hyena.experiment")
register("stlm", "Super Tiny LMs: byte-level pooling, embedding tying, FFN sharing",
         "nanotie.papers.stlm.experiment")
register("trellis", "TrellisNet: one convolution tied across depth = a truncated LSTM",
         "nanotie.papers.trellis.experiment")
register("dynamic-tying", "a Q-learning agent ties layers during training (Hay & Wolf)",
         "nanotie.papers.dynamic_tying.experiment")
