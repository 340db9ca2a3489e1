"""Hyena and MultiHyena: long implicit convolutions, and filters tied into heads.

The mechanism is in ``operator.py`` (the tie: ``HyenaOperator.long_conv``, where one
filter per head is broadcast over the head's channels); the filters in ``filters.py``.

Hyena Hierarchy: Towards Larger Convolutional Language Models. Poli, Massaroli,
Nguyen, Fu, Dao, Baccus, Bengio, Ermon, Re (2023), arXiv:2302.10866.
MultiHyena: Laughing Hyena Distillery, Massaroli, Poli, Fu, et al. (NeurIPS 2023),
arXiv:2310.18780, Sec. 4, pretrained in Sec. 5 (its distillation half is
``nanotie.papers.distillery``).

The idea. Attention mixes tokens with an L x L matrix that depends on the data.
Hyena mixes them with two data-dependent GATES around a LONG causal convolution,
one filter as long as the sequence per channel, computed by FFT in O(L log L). The
filters are IMPLICIT: a small sine MLP of position times a decaying window, so
their parameter count does not grow with L and a model runs at any length up to
its maximum. MultiHyena splits the channels into M heads and TIES one filter
across all channels of a head, applied to the outer products k_t v_t^T as linear
attention does: M filters instead of D, fewer filters to learn and to distill.

The operator, y = out_proj(x0 . (h * (x1 . v) + Dskip . (x1 . v))) with x0, x1, v
from a projection and a short convolution, and MultiHyena's tie (one h^m and one
Dskip_m per head m) are spelled out in ``operator.py``. The filter is computed once
per head and broadcast over the head's N^2 channels, so, as for any tied weight, its
gradient is the sum of what they send back. A second, smaller tie sits inside every
implicit filter: one vector of sine frequencies omega serves all of its sine layers.
With the single-pole filter h_t = lam^t, MultiHyena is linear attention with decay
(``operator.linear_attention_with_decay``).

Where things are:
    operator.py    short_conv, ShortConv, HyenaOperator, MultiHyenaOperator
    filters.py     positional features, decay window, ImplicitFilter
    model.py       HyenaConfig, HyenaLM (GPT with the mixer swapped in)
    recall.py      the synthetic associative-recall task
    experiment.py  the miniature reproduction (``python -m nanotie reproduce hyena``),
                   whose distillation part is ``nanotie.papers.distillery.study``

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
- Like the reference, the implicit filters' MLP gets no weight decay
  (``HyenaLM.param_groups``); unlike it, the filters share the model's learning rate
  and their positional features are a fixed buffer (the reference trains them).
"""

from .filters import ImplicitFilter, decay_rates, positional_features
from .model import MIXERS, HyenaConfig, HyenaLM, make_mixer
from .operator import (HyenaOperator, MultiHyenaOperator, ShortConv,
                       linear_attention_with_decay, short_conv)

__all__ = ["ImplicitFilter", "decay_rates", "positional_features", "MIXERS", "HyenaConfig",
           "HyenaLM", "make_mixer", "HyenaOperator", "MultiHyenaOperator", "ShortConv",
           "linear_attention_with_decay", "short_conv"]
