"""Per-token generation time (and per-sequence memory) against context length.

Laughing Hyena's practical claim is about generation cost. With L tokens already
seen, ONE more token costs:

* Hyena recomputing (``HyenaLM.generate``): the whole forward pass over the last L
  tokens again, O(L log L): the naive way;
* Hyena with a cache (``generate.ConvCache``): one dot product per channel with the
  kept gated inputs, O(L) time and O(L D) memory, like a KV cache: the fair baseline;
* a Transformer with a KV cache (``nn.transformer.KVCache``, buffers written in
  place): attention over L cached keys and values, O(L);
* the distilled Hyena (``generate.py``): one modal step per layer, O(1) time and
  O(d D) memory.

Each way is a *stepper*: ``prefill(prompt)`` brings it to a context of L tokens,
``step()`` makes one more greedy token, ``state_bytes()`` is what it keeps per
sequence; :func:`time_steps` times steppers side by side. The timing does not depend
on the weights, so :func:`generation_models` builds untrained models of a given shape,
long enough for the longest context.
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
from .generate import init_conv_state, init_state
from ..hyena.model import HyenaConfig, HyenaLM

__all__ = ["KINDS", "generation_models", "HyenaRecompute", "CacheStepper", "stepper_for",
           "time_steps"]

# The contenders, in the order the tables show them.
LABELS = {"hyena_recompute": "Hyena (recompute)", "hyena_cached": "Hyena (cached)",
          "transformer_kv": "Transformer (KV cache)",
          "distilled_hyena": "distilled Hyena (recurrent)",
          "distilled_multihyena": "distilled MultiHyena (recurrent)"}
#: The contenders' names, in the order the tables show them.
KINDS = tuple(LABELS)


def generation_models(base: HyenaConfig, max_context: int, order: int = 16,
                      fit_length: int = 256, seed: int = 0, kinds=KINDS) -> dict:
    """Untrained models of ``base``'s shape (d_model, n_layer, n_head, filters),
    able to see ``max_context`` tokens, one per kind in ``kinds``.

    The distilled ones are distilled at a fixed ``order`` by ERA alone (no refinement:
    the fit's quality does not change the time of a step), over the first
    ``fit_length`` taps of each filter, which keeps the Hankel SVDs small.
    """
    out = {}
    for kind in kinds:
        backend.manual_seed(seed)
        # each context leaves room for the timed steps past the longest prompt (the KV
        # cache, the cached Hyena's buffer and the filters end at the context)
        if kind == "transformer_kv":
            cfg = GPTConfig(**{f.name: getattr(base, f.name) for f in fields(GPTConfig)})
            out[kind] = GPT(replace(cfg, context=max_context + 2048))
            continue
        mixer = "multihyena" if kind.endswith("multihyena") else "hyena"
        model = HyenaLM(replace(base, mixer=mixer, context=max_context + 256))
        if kind.startswith("distilled"):
            model = distill(model, order=order, length=min(fit_length, max_context), refine=False)
        out[kind] = model.eval()
    return out


class HyenaRecompute:
    """Hyena as ``HyenaLM.generate`` runs it: each token re-reads the whole context
    (up to the model's ``context`` tokens). The naive way, for scale."""

    def __init__(self, model: HyenaLM):
        self.model = model

    def prefill(self, prompt: np.ndarray) -> None:            # (B, L)
        self.window = prompt.copy()                           # nothing to precompute

    def step(self) -> None:
        logits, _ = self.model(self.window)                   # (B, L, V): all of it again
        nxt = backend.asnumpy(logits.data[:, -1]).argmax(-1)
        self.window = np.concatenate([self.window, nxt[:, None]],
                                     axis=1)[:, -self.model.config.context:]

    def state_bytes(self) -> int:
        return int(self.window.nbytes)                        # the tokens, re-read


class CacheStepper:
    """An LM run position by position through a per-layer cache (``init_conv_state``
    for the cached Hyena, ``init_state`` for a distilled one, a KVCache for a GPT; the
    parallel forward's logits either way), fed back its greedy token; the prompt goes
    in chunks of ``chunk`` tokens (None: one pass)."""

    def __init__(self, model, init_cache_state, chunk: int | None = None):
        self.model, self.init_cache_state, self.chunk = model, init_cache_state, chunk

    def _take(self, logits) -> None:
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)

    def prefill(self, prompt: np.ndarray) -> None:
        self.state = self.init_cache_state(self.model, prompt.shape[0])
        chunk = self.chunk or prompt.shape[1]
        for start in range(0, prompt.shape[1], chunk):
            logits, _ = self.model(prompt[:, start:start + chunk], cache=self.state)
        self._take(logits)

    def step(self) -> None:
        self._take(self.model(self.last[:, None], cache=self.state)[0])   # one position

    def state_bytes(self) -> int:
        return self.state.nbytes()


def stepper_for(kind: str, model):
    """The stepper of one of :data:`KINDS` around its model."""
    if kind == "hyena_recompute":
        return HyenaRecompute(model)
    if kind == "transformer_kv":
        # the prompt in chunks: a long one's attention scores never need (L, L) at once
        return CacheStepper(model, KVCache, chunk=512)
    if kind in KINDS:
        return CacheStepper(model, init_conv_state if kind == "hyena_cached" else init_state)
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
