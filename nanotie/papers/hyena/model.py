"""Hyena and MultiHyena language models: nanotie's GPT with the mixer swapped.

:class:`HyenaLM` is a :class:`~nanotie.nn.transformer.GPT` whose blocks hold a
Hyena operator where attention was (``block.attn``; the Block calls it the same
way). Everything else is the GPT's: the pre-LN blocks, the MLPs, the tied
embedding and head, ``forward(idx, targets) -> (logits, loss)``, ``train()``. Two
hooks change: there is no learned position embedding (the filters are functions
of position already, as in the reference LM), and generation re-reads the context
at each step, since a long convolution has no KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...autograd import Tensor
from ...nn.optim import param_groups
from ...nn.transformer import GPT, GPTConfig
from .operator import HyenaOperator, MultiHyenaOperator

__all__ = ["HyenaConfig", "HyenaLM", "MIXERS", "make_mixer"]

MIXERS = ("hyena", "multihyena")


@dataclass
class HyenaConfig(GPTConfig):
    """GPTConfig plus the mixer's settings. ``context`` is the filters' max length
    L_max; ``n_head`` is MultiHyena's M (Hyena has no heads and ignores it)."""

    mixer: str = "hyena"          # "hyena": D filters; "multihyena": n_head filters, tied
    filter_width: int = 64        # hidden width W of the filter's sine MLP
    filter_emb_dim: int = 33      # positional features E: t and (E-1)/2 cos/sin bands
    filter_inner: int = 2         # hidden sine layers after the first
    filter_omega: float = 14.0    # initial sine frequency (1 in the reference code, 14 for LMs)
    short_kernel: int = 3         # taps of the short depthwise causal conv

    def __post_init__(self):
        super().__post_init__()
        if self.mixer not in MIXERS:
            raise ValueError(f"HyenaConfig: mixer must be one of {MIXERS}, got {self.mixer!r}")


def make_mixer(config: HyenaConfig) -> HyenaOperator:
    """The operator that takes attention's place in one block."""
    kwargs = dict(filter_width=config.filter_width, filter_emb_dim=config.filter_emb_dim,
                  filter_inner=config.filter_inner, filter_omega=config.filter_omega,
                  short_kernel=config.short_kernel, bias=config.bias)
    if config.mixer == "multihyena":
        return MultiHyenaOperator(config.d_model, config.context, config.n_head, **kwargs)
    return HyenaOperator(config.d_model, config.context, **kwargs)


class HyenaLM(GPT):
    """A GPT whose attention is a (Multi)Hyena operator. ``mixers()`` lists them."""

    def __init__(self, config: HyenaConfig):
        if not isinstance(config, HyenaConfig):
            raise TypeError(f"HyenaLM needs a HyenaConfig, got {type(config).__name__}")
        super().__init__(config)                 # the GPT, with attention in its blocks
        for block in self.blocks:
            block.attn = make_mixer(config)      # the swap: same call, another mixer
        del self.wpe                             # positions live in the filters
        self.init_weights()                      # the GPT's init, now over the mixers too

    def init_weights(self) -> None:
        """GPT-2's N(0, 0.02) for every matrix (the filter MLP's too, as in the
        reference LM), zero biases, out_proj scaled by 1/sqrt(2 n_layer); the short
        convs keep PyTorch's Conv1d init; omega and Dskip keep theirs."""
        super().init_weights()
        for op in self.mixers():
            op.out_proj.weight.data *= op.out_proj.weight.dtype.type(
                1.0 / math.sqrt(2 * self.config.n_layer))
            op.short.reset_parameters()

    def param_groups(self, weight_decay: float) -> list:
        """AdamW groups as the reference Hyena trains them: matrices decay by
        ``weight_decay``, except the implicit filters' (their sine MLP), which, like
        every vector, get none: decay would pull the filters towards zero, i.e.
        towards forgetting. (A distilled model's mixers have no implicit filter.)"""
        filters = [p for op in self.mixers() if hasattr(op, "filter")
                   for p in op.filter.parameters()]
        return param_groups(self, weight_decay, no_decay=filters)

    def mixers(self) -> list:
        """The operators, one per layer (empty while the GPT constructor runs)."""
        return [b.attn for b in self.blocks if isinstance(b.attn, HyenaOperator)]

    def embed(self, idx, pos_offset: int = 0) -> Tensor:
        """Token embeddings only: (B, T) ids -> (B, T, d)."""
        T = idx.shape[-1]
        if pos_offset + T > self.config.context:
            raise ValueError(f"HyenaLM: sequence of {pos_offset + T} tokens is longer than "
                             f"the filters' length {self.config.context}")
        return self.drop(self.wte(idx))

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, use_cache: bool = False):
        """GPT.generate without a cache: each new token re-runs the FFT convolution
        over the last ``context`` tokens (O(L log L) per token)."""
        if use_cache:
            raise ValueError("HyenaLM.generate: a long convolution has no KV cache")
        return super().generate(idx, max_new_tokens, temperature, top_k, seed,
                                use_cache=False)
