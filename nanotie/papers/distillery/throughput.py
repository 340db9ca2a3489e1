"""Per-token generation time (and per-sequence memory) against context length.

Laughing Hyena's practical claim is about generation cost. With L tokens already
seen, ONE more token costs:

* Hyena recomputing (``HyenaLM.generate``): the whole forward pass over the last L
  tokens again, O(L log L): the naive way;
* Hyena with a cache (``generate.ConvCache``): one dot product per channel with the
  kept gated inputs, O(L) time and O(L D) memory, like a KV cache: the fair baseline;
* a Transformer with a KV cache (:class:`PreallocatedKVCache`, buffers written in
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

import math
import statistics
import time
from dataclasses import fields, replace

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import functional as F
from ...nn.transformer import GPT, GPTConfig
from .distilled import distill
from .generate import init_conv_state, init_state
from ..hyena.model import HyenaConfig, HyenaLM

__all__ = ["KINDS", "generation_models", "HyenaRecompute", "CacheStepper", "PreallocatedKVCache",
           "kv_forward", "KVCacheStepper", "stepper_for", "time_steps"]

# The contenders, in the order the tables show them.
KINDS = ("hyena_recompute", "hyena_cached", "transformer_kv", "distilled_hyena",
         "distilled_multihyena")
LABELS = {"hyena_recompute": "Hyena (recompute)", "hyena_cached": "Hyena (cached)",
          "transformer_kv": "Transformer (KV cache)",
          "distilled_hyena": "distilled Hyena (recurrent)",
          "distilled_multihyena": "distilled MultiHyena (recurrent)"}

_KV_SLACK = 2048   # the Transformer's context beyond the longest prompt: room for steps
_STEP_SLACK = 256  # the same for the Hyena models (their filters are this much longer)


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
            if kind == "hyena_cached" and "hyena_recompute" in out:
                out[kind] = out["hyena_recompute"]         # the same model, cached
                continue
            # room for the timed steps past the longest prompt (the cached Hyena's
            # buffer and the filters end at the context)
            model = HyenaLM(replace(base, mixer=mixer, context=max_context + _STEP_SLACK))
            if kind.startswith("distilled"):
                model = distill(model, order=order, length=min(fit_length, max_context),
                                refine=False)
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
    for the cached Hyena, ``init_state`` for a distilled one; the parallel forward's
    logits either way), fed back its greedy token; the prompt goes in chunks of
    ``chunk`` tokens (None: one pass)."""

    def __init__(self, model, init_cache_state, chunk: int | None = None):
        self.model, self.init_cache_state, self.chunk = model, init_cache_state, chunk

    def forward(self, idx):
        return self.model(idx, cache=self.state)[0]

    def _take(self, logits) -> None:
        self.last = backend.asnumpy(logits.data[:, -1]).argmax(-1)

    def prefill(self, prompt: np.ndarray) -> None:
        self.state = self.init_cache_state(self.model, prompt.shape[0])
        chunk = self.chunk or prompt.shape[1]
        for start in range(0, prompt.shape[1], chunk):
            logits = self.forward(prompt[:, start:start + chunk])
        self._take(logits)

    def step(self) -> None:
        self._take(self.forward(self.last[:, None]))          # one position

    def state_bytes(self) -> int:
        return self.state.nbytes()


class PreallocatedKVCache:
    """Keys and values of every layer in buffers (B, H, context, hd) allocated once
    and written in place: a step appends one column, instead of concatenating the
    whole cache into a new array (what ``nn.transformer.KVCache`` does)."""

    def __init__(self, model: GPT, batch: int):
        cfg = model.config
        weight = model.wte.weight.data
        xp = backend.xp_of(weight)
        shape = (batch, cfg.n_head, cfg.context, cfg.d_model // cfg.n_head)
        self.k = [xp.zeros(shape, weight.dtype) for _ in range(cfg.n_layer)]
        self.v = [xp.zeros(shape, weight.dtype) for _ in range(cfg.n_layer)]
        self.length = 0                                       # positions filled

    def nbytes(self) -> int:
        """Bytes in use: the filled positions of every layer's keys and values."""
        return int(sum(a[:, :, :self.length].nbytes for a in self.k + self.v))


def kv_forward(model: GPT, idx, cache: PreallocatedKVCache) -> Tensor:
    """``model``'s forward pass on idx (B, T), continuing from ``cache`` and writing the
    new keys and values into it: the GPT's own blocks, with attention reading the
    buffers' filled part. Returns the logits (B, T, V). No gradients."""
    xp = backend.xp_of(model.wte.weight.data)
    idx = Tensor(xp.asarray(idx))
    B, T = idx.shape
    start, n = cache.length, cache.length + T
    if n > cache.k[0].shape[2]:
        raise ValueError(f"kv_forward: {n} positions exceed the cache's {cache.k[0].shape[2]}")
    with no_grad():
        x = model.embed(idx, start)                                        # (B, T, C)
        C = x.shape[-1]
        # query i (position start+i) sees keys j <= start+i; one query sees them all
        mask = None if T == 1 else xp.triu(xp.full((T, n), -np.inf, x.dtype), k=1 + start)
        for i, block in enumerate(model.blocks):
            attn = block.attn
            H, hd = attn.n_head, attn.d_head
            qkv = attn.qkv(block.ln1(x)).data.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)
            cache.k[i][:, :, start:n] = qkv[1]                             # in place
            cache.v[i][:, :, start:n] = qkv[2]
            y = F.scaled_dot_product_attention(
                Tensor(qkv[0]), Tensor(cache.k[i][:, :, :n]), Tensor(cache.v[i][:, :, :n]),
                attn_mask=mask, scale=1.0 / math.sqrt(hd))                 # (B, H, T, hd)
            x = x + attn.proj(y.permute(0, 2, 1, 3).reshape(B, T, C))
            x = x + block.mlp(block.ln2(x))
        cache.length = n
        return model.head(x)


class KVCacheStepper(CacheStepper):
    """A GPT with a preallocated KV cache: keys and values of the L past tokens. The
    prompt goes in chunks, so the attention scores of a long prompt never need an
    (L, L) matrix at once."""

    def __init__(self, model: GPT, chunk: int = 512):
        super().__init__(model, PreallocatedKVCache, chunk)

    def forward(self, idx):
        return kv_forward(self.model, idx, self.state)


def stepper_for(kind: str, model):
    """The stepper of one of :data:`KINDS` around its model."""
    if kind == "hyena_recompute":
        return HyenaRecompute(model)
    if kind == "transformer_kv":
        return KVCacheStepper(model)
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
