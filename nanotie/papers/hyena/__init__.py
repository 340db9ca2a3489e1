"""Hyena and MultiHyena: long implicit convolutions, and filters tied into heads.

Hyena Hierarchy: Towards Larger Convolutional Language Models. Poli, Massaroli,
Nguyen, Fu, Dao, Baccus, Bengio, Ermon, Re (2023), arXiv:2302.10866.
Laughing Hyena Distillery: Extracting Compact Recurrences From Convolutions.
Massaroli, Poli, Fu, Kumbong, Parnichkun, Timalsina, Romero, McIntyre, Chen, Rudra,
Zhang, Re, Ermon, Bengio (NeurIPS 2023), arXiv:2310.18780 (MultiHyena, Sec. 5).

The idea. Attention mixes tokens with an L x L matrix that depends on the data.
Hyena mixes them with two data-dependent GATES around a LONG causal convolution,
one filter as long as the sequence per channel, computed by FFT in O(L log L). The
filters are IMPLICIT: a small sine MLP of position times a decaying window, so
their parameter count does not grow with L and a model runs at any length up to
its maximum. MultiHyena splits the channels into M heads and TIES one filter
across all channels of a head, applied to the outer products k_t v_t^T as linear
attention does: M filters instead of D, fewer filters to learn and (in the
distillation half of the paper) fewer to distill.

The operator (order 2), u (L, D) -> y (L, D); ``.`` is the elementwise product and
``*`` causal convolution along time:

    x0, x1, v = split(ShortConv_3(u W_in + b_in))         # Steps 1-2: each (L, D)
    w         = x1 . v                                    # Step 3: inner gate
    y_lc      = h * w + Dskip . w                         # Step 4: long conv (FFT) + skip
    y         = (x0 . y_lc) W_out + b_out                 # Step 5: outer gate, out_proj

The tie (MultiHyena, heads m = 1..M of width N = D/M, q, k, v = x0, x1, v):

    z_t^m    = k_t^m (v_t^m)^T                            # (N, N)
    y_t^m[j] = sum_i q_t^m[i] ((h^m * z^m)_t[i, j] + Dskip_m z_t^m[i, j])

one h^m and one Dskip_m for all N^2 channels of head m. The filter is computed once
per head and broadcast over the head's channels, so, as for any tied weight, its
gradient is the sum of what the N^2 channels send back. A second, smaller tie sits
inside every implicit filter: one vector of sine frequencies omega serves all of
its sine layers.

Filters: Hyena D per layer, MultiHyena M per layer. With the single-pole filter
h_t = lam^t, MultiHyena is linear attention with decay (``operator.py``).

Where things are:
    filters.py     positional features, decay window, ImplicitFilter
    operator.py    short_conv, HyenaOperator, MultiHyenaOperator, the recurrent form
    model.py       HyenaConfig, HyenaLM (GPT with the mixer swapped in)
    recall.py      the synthetic associative-recall task
    experiment.py  the miniature reproduction (``python -m nanotie reproduce hyena``)

Distillation (Laughing Hyena), one idea per file:
    distill.py             a filter -> a modal SSM: Hankel SVD, two lower bounds, ERA,
                           balanced truncation, modal refinement
    recurrence.py          the modal recurrence: parallel, prefill, one step
    distilled.py           ``distilled.distill(model, order or tol)``: the LM with modal
                           filters, sharing every other Parameter with the original
                           (``hyena.distill`` is the module of step one, not this function)
    generate.py            O(1)-per-token generation: short-conv cache + modal state;
                           and the cached (undistilled) Hyena, O(L) per token
    throughput.py          per-token time and state against context length: Hyena
                           recomputing, cached, a KV-cache Transformer, distilled
    distill_experiment.py  the experiment's distillation study and its plots

For distillation: ``model.mixers()`` lists each layer's operator; ``op.filter_array(L)`` is h as a
float64 array (n_filters, L), ``op.dskip_array()`` is Dskip (n_filters,);
``op.long_conv(w)`` is the one step to override with a recurrence.

Differences from the paper:
- Order 2 only (the LM setting of both papers); no dropout inside the operator.
- The decay rates are fixed buffers and the window has no shift, as in the reference
  code's defaults; the filters are not normalised.
- Byte-level models a few hundred thousand parameters large, trained for seconds;
  the comparison shows the mechanisms, not the papers' perplexity rankings.
- The Hyena LMs keep the GPT's pre-LN blocks and GELU MLPs and drop its position
  embedding (the filters encode position), as the reference LM does.
- The filter MLP's matrices get GPT-2's N(0, 0.02) init with the rest of the model,
  as the reference LM's initialiser does; the standalone operators use PyTorch's
  default Linear init.
- Distillation is ERA + modal least squares (``scipy.optimize.least_squares``) per
  filter (balanced truncation beside them for comparison), with the order chosen per
  filter by a relative-error tolerance; the bounds are finite-Hankel Eckart-Young
  ones (sigma_{d+1}/sqrt(n) and the tighter max over block heights), not the AAK
  theory.
- Like the reference, the implicit filters' MLP gets no weight decay
  (``HyenaLM.param_groups``, which ``train()`` uses); unlike it, the filters share
  the model's learning rate (the reference gives them their own).
- The positional features are a fixed buffer; the reference trains them at a tiny
  learning rate.
- The distilled models are scored at the training context (64 bytes in the quick
  profile). The recurrent form may run past it (the modal filters are defined for
  every t); the parallel form stops there.
- Throughput is measured on a CPU, batch 1, with untrained models of the miniature
  LM shape (the time of a step does not depend on the weights; trained filters are
  only as long as the training context). The fair Hyena baseline keeps the gated
  inputs of the past (``generate.ConvCache``, O(L) per token); the naive one re-runs
  its whole forward pass per token, as ``HyenaLM.generate`` does.
"""

from .distill import DistillConfig, ModalFilterBank, distill_filter, distill_filters
from .distilled import DistilledHyenaLM
from .filters import ImplicitFilter, decay_rates, positional_features
from .model import MIXERS, HyenaConfig, HyenaLM, make_mixer
from .operator import (HyenaOperator, MultiHyenaOperator, ShortConv,
                       linear_attention_with_decay, short_conv)
from .recurrence import ModalRecurrence

__all__ = ["ImplicitFilter", "decay_rates", "positional_features", "MIXERS", "HyenaConfig",
           "HyenaLM", "make_mixer", "HyenaOperator", "MultiHyenaOperator", "ShortConv",
           "linear_attention_with_decay", "short_conv", "DistillConfig", "ModalFilterBank",
           "distill_filter", "distill_filters", "ModalRecurrence", "DistilledHyenaLM"]
