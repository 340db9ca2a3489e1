"""A distilled Hyena LM: every long filter replaced by a small modal SSM.

``distill(model, order=None, tol=1e-2)`` distils each long filter of a trained
:class:`~nanotie.papers.hyena.model.HyenaLM` (Hyena or MultiHyena) with
:func:`~nanotie.papers.distillery.reduction.distill_filters` and returns a
:class:`DistilledHyenaLM` that SHARES every other Parameter with the original:

    original                         distilled
    wte (= lm_head), ln_f            the same objects
    blocks[i].ln1, ln2, mlp          the same objects
    blocks[i].attn.in_proj, short,   the same objects, inside a new operator
        out_proj, dskip
    blocks[i].attn.filter            gone: ĥ_t = Re Σ_k R_k λ_k^(t-1) (poles and
                                     residues, plain arrays, not trained)

Training the original moves the distilled model's shared weights too. It runs in
parallel, ``model(idx)`` (the operators' own code with ĥ in place of the implicit
filters), or recurrently, ``model(idx, cache=state)`` at O(1) per token
(``generate.py``). Distillation works on float64 copies of the filters; the result
runs on the model's device and dtype.
"""

from __future__ import annotations

import numpy as np

from ...autograd import Tensor
from ...backend import asnumpy, to_device
from ...nn.module import Module, ModuleList
from ...nn.transformer import Block, _sample, _start_generation
from .generate import init_state
from .reduction import DistillConfig, ModalFilterBank, distill_filters
from ..hyena.model import HyenaLM
from ..hyena.operator import HyenaOperator, MultiHyenaOperator

__all__ = ["distill", "DistilledHyenaLM", "DistilledHyena", "DistilledMultiHyena",
           "distilled_operator"]


class _ModalFilters:
    """What a distilled operator adds to its parent class: filters from a
    :class:`~.reduction.ModalFilterBank` instead of the implicit MLP, and a recurrent form.

    The parent's ``long_conv`` reads ``self.filters(L)`` and adds ``Dskip . w``, so
    the parallel form needs no other change; with a cache (``generate.MixerCache``),
    the parent's ``forward`` hands the chunk to it: the recurrent form."""

    bank: ModalFilterBank

    def __init__(self, op: HyenaOperator, bank: ModalFilterBank):
        """Take every part of ``op`` but its implicit filter (the same objects)."""
        Module.__init__(self)
        self.d_model, self.max_len = op.d_model, op.max_len
        self.in_proj, self.short, self.out_proj = op.in_proj, op.short, op.out_proj  # the tie
        self.dskip = op.dskip                         # Step 4's skip: shared, not folded
        self.bank = bank                              # poles, residues, ĥ_0 (NumPy)
        if isinstance(op, MultiHyenaOperator):
            self.n_head = op.n_head                   # MultiHyena's heads
        self._filter_cache = {}
        self.train(op.training)

    def filters(self, length: int) -> Tensor:
        """ĥ (n_filters, L) on the operator's device, in its dtype (a constant)."""
        weight = self.in_proj.weight
        key = (length, weight.dtype, weight.device)
        if key not in self._filter_cache:
            h = self.bank.impulse_response(length).astype(weight.dtype)   # (C, L)
            self._filter_cache[key] = Tensor(to_device(h, weight.device))
        return self._filter_cache[key]

    def recurrence(self):
        """The bank as a :class:`~nanotie.papers.distillery.recurrence.ModalRecurrence`
        with Dskip folded into the direct term (D = ĥ_0 + Dskip), on the operator's
        device and in its precision (float32 -> complex64 state)."""
        weight = self.in_proj.weight
        trailing = 2 if isinstance(self, MultiHyenaOperator) else 0   # a head's (N, N) axes
        return self.bank.recurrence(skip=self.dskip_array(), trailing_dims=trailing,
                                    dtype=weight.dtype, device=weight.device)


class DistilledHyena(_ModalFilters, HyenaOperator):
    """A :class:`~.hyena.operator.HyenaOperator` whose D long filters are modal SSMs."""


class DistilledMultiHyena(_ModalFilters, MultiHyenaOperator):
    """A :class:`~.hyena.operator.MultiHyenaOperator` whose M long filters (one per head) are modal
    SSMs; a head's poles and residues serve its N² channels, each with its own state."""


def distilled_operator(op: HyenaOperator, bank: ModalFilterBank) -> HyenaOperator:
    """The distilled twin of ``op`` (sharing its projections, short conv and Dskip)."""
    if isinstance(op, MultiHyenaOperator):
        return DistilledMultiHyena(op, bank)
    return DistilledHyena(op, bank)


class DistilledHyenaLM(HyenaLM):
    """A :class:`~.hyena.model.HyenaLM` built from another one's modules, with distilled mixers.

    ``forward(idx, targets, cache=None)`` is the GPT's. With a cache from
    :func:`~nanotie.papers.distillery.generate.init_state` it runs recurrently, and
    :meth:`generate` uses that to spend O(1) work per new token.
    """

    def __init__(self, model: HyenaLM, banks: list):
        """``banks``: one :class:`ModalFilterBank` per layer, for ``model.mixers()``."""
        Module.__init__(self)                       # nothing new is initialised
        self.config = model.config
        self.wte, self.drop = model.wte, model.drop
        self.blocks = ModuleList(_distilled_block(b, bank)
                                 for b, bank in zip(model.blocks, banks))
        self.ln_f, self.lm_head = model.ln_f, model.lm_head   # the tie comes along
        self.train(model.training)

    @property
    def banks(self) -> list:
        """The per-layer :class:`~.reduction.ModalFilterBank` (orders, errors, bounds per
        filter)."""
        return [op.bank for op in self.mixers()]

    def embed(self, idx, pos_offset: int = 0) -> Tensor:
        """Token embeddings. No length check here: a modal filter is defined for every
        t, so the recurrent form may run past the context (the parallel form still
        stops there, in the operators)."""
        return self.drop(self.wte(idx))

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, use_cache: bool = True):
        """GPT.generate's options, and with the same logits the same tokens.
        ``use_cache=True``: prefill the prompt in one pass, then one O(1) recurrent step
        of the whole network per token; the state never grows, so unlike a KV cache it
        is not limited to the context (past it the filters keep decaying). False:
        re-run the parallel form over the context at every token, as Hyena does."""
        if not use_cache:
            return super().generate(idx, max_new_tokens, temperature, top_k, seed)
        out, rng = _start_generation(idx, temperature, seed)
        with self.evaluating():
            state, feed = init_state(self, out.shape[0]), out
            for _ in range(max_new_tokens):
                logits, _ = self(feed, cache=state)           # the prefill, then O(1) steps
                feed = _sample(asnumpy(logits.data[:, -1]), temperature, top_k, rng)[:, None]
                out = np.concatenate([out, feed], axis=1)
        return out


def _distilled_block(block: Block, bank: ModalFilterBank) -> Block:
    """A Block holding the same norms and MLP, and the distilled twin of its mixer."""
    new = Block.__new__(Block)
    Module.__init__(new)
    new.ln1, new.ln2, new.mlp = block.ln1, block.ln2, block.mlp
    new.attn = distilled_operator(block.attn, bank)
    new.train(block.training)
    return new


def distill(model: HyenaLM, order: int | None = None, tol: float = 1e-2, *,
            max_order: int = 16, length: int | None = None, refine: bool = True,
            config: DistillConfig | None = None, progress: bool = False
            ) -> DistilledHyenaLM:
    """Distil every long filter of ``model`` and return the distilled model.

    order: one real state size for every filter; None selects, per filter, the
        smallest order <= max_order whose relative l2 error meets ``tol``.
    length: how many taps of each filter to fit (default: all, the context). A
        shorter fit is faster; the modal filter still runs at every length.
    refine: modal least-squares refinement after ERA (slower, better).
    config: a full :class:`~.reduction.DistillConfig` instead (then order, tol, max_order and
        refine are ignored).
    """
    if not isinstance(model, HyenaLM) or isinstance(model, DistilledHyenaLM):
        raise TypeError(f"distill: expected a (not yet distilled) HyenaLM, got "
                        f"{type(model).__name__}")
    cfg = config or DistillConfig(order=order, tol=tol, max_order=max_order, refine=refine)
    if length is not None and not 4 <= length <= model.config.context:
        raise ValueError(f"distill: length must be in [4, {model.config.context}], got {length}")
    banks = [distill_filters(op.filter_array(length), cfg, progress=progress,  # (C, L) NumPy
                             desc=f"distil layer {i + 1}")
             for i, op in enumerate(model.mixers())]
    return DistilledHyenaLM(model, banks)
