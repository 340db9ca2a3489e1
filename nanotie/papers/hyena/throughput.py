"""Per-token generation time against context length, three ways.

Laughing Hyena's practical claim is about generation cost. With a context of L
tokens already seen, producing ONE more token costs:

* Hyena, recomputing (``HyenaLM.generate``): the whole forward pass over the last L
  tokens again (FFT convolutions included): O(L log L) per token;
* a Transformer with a KV cache (``GPT.generate``): the new token's projections,
  MLP and head, plus attention over L cached keys and values: O(L) per token;
* the distilled Hyena, run recurrently (``generate.py``): one position through the
  network and one modal step per layer: O(1) per token.

Each way is a *stepper*: ``prefill(prompt)`` brings it to a context of L tokens,
``step()`` makes one more greedy token. :func:`time_steps` times several steppers
side by side, :func:`per_token_seconds` one. The
timing does not depend on the weights, so :func:`generation_models` builds untrained
models of a given shape, long enough for the longest context (a trained miniature
model's filters are only as long as its training context).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import fields, replace

import numpy as np

from ... import backend
from ...autograd import no_grad
from ...nn.transformer import GPT, GPTConfig, KVCache
from .distilled import distill
from .generate import init_state
from .model import HyenaConfig, HyenaLM

__all__ = ["KINDS", "generation_models", "HyenaRecompute", "KVCacheStepper",
           "RecurrentStepper", "stepper_for", "time_steps", "per_token_seconds"]

# The contenders, in the order the tables show them.
KINDS = ("hyena_recompute", "transformer_kv", "distilled_hyena", "distilled_multihyena")
LABELS = {"hyena_recompute": "Hyena (recompute)", "transformer_kv": "Transformer (KV cache)",
          "distilled_hyena": "distilled Hyena (recurrent)",
          "distilled_multihyena": "distilled MultiHyena (recurrent)"}

_KV_SLACK = 2048   # the Transformer's context beyond the longest prompt: room for steps


def generation_models(base: HyenaConfig, max_context: int, order: int = 16,
                      fit_length: int = 256, seed: int = 0, kinds=KINDS) -> dict:
    """Untrained models of ``base``'s shape (d_model, n_layer, n_head, filters),
    able to see ``max_context`` tokens, one per kind in ``kinds``.

    The distilled ones are distilled at a fixed ``order`` by ERA alone (no refinement:
    the fit's quality does not change the time of a step), over the first
    ``fit_length`` taps of each filter, which keeps the Hankel SVDs small.
    """
    out = {}
    with no_grad():
        for kind in kinds:
            backend.manual_seed(seed)
            if kind == "transformer_kv":
                cfg = GPTConfig(**{f.name: getattr(base, f.name) for f in fields(GPTConfig)})
                out[kind] = GPT(replace(cfg, context=max_context + _KV_SLACK))
                continue
            mixer = "multihyena" if kind.endswith("multihyena") else "hyena"
            model = HyenaLM(replace(base, mixer=mixer, context=max_context))
            if kind.startswith("distilled"):
                model = distill(model, order=order, length=min(fit_length, max_context),
                                refine=False)
            out[kind] = model.eval()
    return out


class HyenaRecompute:
    """Hyena as ``HyenaLM.generate`` runs it: each token re-reads the whole context
    (up to the model's ``context`` tokens)."""

    def __init__(self, model: HyenaLM):
        self.model = model

    def prefill(self, prompt: np.ndarray) -> None:            # (B, L)
        self.window = prompt.copy()                           # nothing to precompute

    def step(self) -> None:
        logits, _ = self.model(self.window)                   # (B, L, V): all of it again
        nxt = backend.asnumpy(logits.data[:, -1]).argmax(-1)
        self.window = np.concatenate([self.window, nxt[:, None]],
                                     axis=1)[:, -self.model.config.context:]


class KVCacheStepper:
    """A GPT with a KV cache: keys and values of the L past tokens are kept."""

    def __init__(self, model: GPT, chunk: int = 512):
        self.model, self.chunk = model, chunk

    def prefill(self, prompt: np.ndarray) -> None:
        """Fill the cache chunk by chunk, so the attention scores of a long prompt
        never need an (L, L) matrix at once."""
        self.cache = KVCache(self.model.config.n_layer)
        for start in range(0, prompt.shape[1], self.chunk):
            logits, _ = self.model(prompt[:, start:start + self.chunk], cache=self.cache)
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)

    def step(self) -> None:
        logits, _ = self.model(self.last[:, None], cache=self.cache)   # one position
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)


class RecurrentStepper:
    """A distilled Hyena LM run as a recurrence: prefill once, then O(1) steps."""

    def __init__(self, model):
        self.model = model

    def prefill(self, prompt: np.ndarray) -> None:
        self.state = init_state(self.model, prompt.shape[0])
        logits, _ = self.model(prompt, cache=self.state)      # the whole prompt, one pass
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)

    def step(self) -> None:
        logits, _ = self.model(self.last[:, None], cache=self.state)
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)


def stepper_for(kind: str, model):
    if kind == "hyena_recompute":
        return HyenaRecompute(model)
    if kind == "transformer_kv":
        return KVCacheStepper(model)
    if kind.startswith("distilled"):
        return RecurrentStepper(model)
    raise ValueError(f"stepper_for: unknown kind {kind!r}; expected one of {KINDS}")


def time_steps(steppers: dict, steps: int, rounds: int, recompute_steps: int = 1) -> dict:
    """Per-token seconds of each (already prefilled) stepper, ``name -> stepper``.

    After one untimed step each, ``rounds`` rounds run with the steppers INTERLEAVED
    (a, b, c, a, b, c, ...), each timing ``steps`` single steps (``recompute_steps``
    for Hyena recompute, whose steps are slow), so that a burst of load from a
    neighbour slows every contender, not one. Returns per stepper the median over
    the rounds of each round's median step, the min, and the round medians."""
    per_round = {name: [] for name in steppers}
    with no_grad():
        for stepper in steppers.values():
            stepper.step()                                    # warm-up
        for _ in range(rounds):
            for name, stepper in steppers.items():
                n = recompute_steps if isinstance(stepper, HyenaRecompute) else steps
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    stepper.step()
                    times.append(time.perf_counter() - t0)
                per_round[name].append(statistics.median(times))
    return {name: {"median": statistics.median(r), "min": min(r), "rounds": r}
            for name, r in per_round.items()}


def per_token_seconds(stepper, prompt: np.ndarray, n_tokens: int = 16, warmup: int = 2
                      ) -> dict:
    """Prefill ``prompt`` (B, L), then time ``n_tokens`` single steps (after
    ``warmup`` untimed ones). Returns the median and min seconds per step and the
    prefill's seconds."""
    with no_grad():
        t0 = time.perf_counter()
        stepper.prefill(prompt)
        prefill = time.perf_counter() - t0
        for _ in range(warmup):
            stepper.step()
        times = []
        for _ in range(n_tokens):
            t0 = time.perf_counter()
            stepper.step()
            times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "n": n_tokens,
            "prefill_seconds": prefill}
