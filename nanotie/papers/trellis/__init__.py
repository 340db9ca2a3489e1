"""Trellis Networks for Sequence Modeling.

Shaojie Bai, J. Zico Kolter, Vladlen Koltun, ICLR 2019, arXiv:1810.06682.
The mechanism is :class:`~.trellisnet.TrellisNet`'s ``forward``: the recurrence below, one
convolution tied across depth.

The idea. A TrellisNet is a temporal convolutional network whose weights are TIED
ACROSS DEPTH: every level applies the same kernel-2 causal convolution, and the input
sequence x is injected again at every level. Because a level reads the level below
at times t-1 and t exactly like one recurrent step reads h_{t-1} and x_t, an
M-truncated recurrent network is a TrellisNet of M levels with a particular sparse
weight matrix; a TrellisNet with a dense one generalises it, and trains like a
convolution (all time steps of a level at once). More levels cost no parameters.

The tie (one Parameter object serves every level i = 0..L-1):

    zhat^(i+1)_t = W1x x_{t-d} + W2x x_t + W1h z^(i)_{t-d} + W2h z^(i)_t + b  (one W, b for all i)
    (i, o, g, f) = (sigma, sigma, tanh, sigma)(zhat^(i+1)_t split into four H-blocks)
    c^(i+1)_t = f * c^(i)_{t-d} + i * g,      z^(i+1)_t = o * tanh(c^(i+1)_t)

so dL/dW = sum over levels i of dL/dW|_level i, the engine's tying sum. The input part
W1x x_{t-d} + W2x x_t + b is computed once and re-injected at every level.

Then :mod:`.lstm` (a stacked :class:`~.lstm.LSTM`, the brute-force :func:`~.lstm.truncated_lstm`),
:mod:`.convert` (:func:`~.convert.from_lstm`: the block-sparse weights that make a truncated LSTM
a TrellisNet), :mod:`.models` (a byte-level LM with a tied decoder and auxiliary loss,
the adding problem) and :mod:`.experiment` (``python -m nanotie reproduce trellis``).

Differences from the paper and its reference code: ``DIFFERENCES``, below (the
results page prints it).
"""

from .convert import from_lstm, trellis_blocks
from .lstm import LSTM, LSTMConfig, LSTMLayer, truncated_lstm
from .models import AddingRegressor, LMConfig, SequenceLM, adding_problem
from .trellisnet import (SeqOutput, TrellisConfig, TrellisConv, TrellisNet, UntiedTCN,
                         gated_activation, locked_dropout, shift_right, trellis_parameters)

# Differences from the paper and its reference code, as the results page prints them.
DIFFERENCES = """\
- Miniature models (tens of thousands of parameters), a few hundred steps on Python's
  own help text, not char-PTB; the adding problem stands in for the paper's sequential
  MNIST / CIFAR stress tests. None of the paper's benchmark numbers are reproduced.
- Kernel size 2 only. No DropConnect on the t-1 weights, no embedding dropout, no
  mixture of softmaxes; the experiments train without dropout, weight norm or
  auxiliary loss (all implemented and tested).
- The TCN baseline is the TrellisNet's gated architecture with one convolution per
  level (the tie removed), not the generic TCN of Bai et al. (2018).
- Multi-layer conversion with biases is not exact: upper layers start one step early
  on a zero input (see `convert.py`); with zero biases in layers 2..L it is exact.
- The language model trains on random windows from a zero state; history repackaging
  is implemented and tested (segments of a converted LSTM reproduce the full LSTM),
  not used in training.
- The embedding starts ~ N(0, 0.3^2) instead of U(-0.1, 0.1), and the experiments'
  convolutions ~ N(0, 0.3^2) instead of N(0, 0.01^2) (`TrellisConfig.init_std`'s
  default): with the reference inits the small byte models here stayed on the
  unigram plateau for hundreds of steps.
- The convolution bias starts at zero (the reference: N(0, 0.01^2)).
- The hidden locked dropout multiplies z inside the levels, not the history (h, c) that
  fills the left padding of every level.
- The language model's TrellisNet is dilated (1, 2, 4, ...) so that its receptive field
  covers the training window, as the LSTM's does; the reference's word- and char-level
  models use dilation 1 and rely on history repackaging across segments.
- Auxiliary outputs are collected every `aux_every` levels below the top (the top
  level is the main output); the loss averages their cross-entropies.
- The LSTM has one bias per layer (PyTorch has two, b_ih + b_hh, which only add) and
  orders its gates i, o, g, f like the TrellisNet (PyTorch: i, f, g, o)."""

__all__ = ["DIFFERENCES", "TrellisNet", "UntiedTCN", "TrellisConv", "TrellisConfig", "SeqOutput",
           "gated_activation", "locked_dropout", "shift_right", "trellis_parameters",
           "LSTMConfig", "LSTM", "LSTMLayer", "truncated_lstm", "from_lstm", "trellis_blocks",
           "LMConfig", "SequenceLM", "AddingRegressor", "adding_problem"]
