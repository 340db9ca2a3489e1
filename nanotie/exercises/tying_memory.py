"""Exercise 13: what a tying state costs in training memory (Dynamic Layer Tying).

The check builds the real ``DynamicTiedGPT``, takes one AdamW step, and measures. This
is the parameter side of training memory, the paper's accounting; a copy still runs,
so its activations remain (``dynamic_tying.step_peak_bytes`` measures the whole step).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..nn import GPTConfig, count_parameters
from ..nn.optim import AdamW, param_groups
from ..papers.dynamic_tying.tying import (DynamicTiedGPT, independent_layers,
                                          training_memory_bytes)
from . import Planted
from .checking import Checker, CheckResult

TITLE = "Dynamic tying: memory accounting"
GOAL = ("Count what a tying state really costs: copies of a layer train nothing and store "
        "nothing of their own, the tied head is the embedding, and Adam keeps two float32 "
        "moments per trainable parameter: 16 bytes of training memory each.")
FUNCTION = "tying_memory"

STUB = '''
def tying_memory(config, state, mode):
    """The trainable parameters and training memory of a DynamicTiedGPT.

    config: a nanotie GPTConfig (vocab_size V, context T, d_model d, n_layer L,
            bias, tie_embeddings; GELU MLP and LayerNorm)
    state:  a tuple of L ints, s_0 = 0, s_i <= i. s_i = i: layer i trains on its own;
            s_i = j < i: layer i is a COPY of layer j (it computes with the same
            array, has no gradient and no optimizer state). Layer j may itself be
            a copy: layer i then computes with the layer at the end of the chain.
    mode:   "official" (a copy holds new Parameter objects, requires_grad=False,
            around the root's arrays) or "shared" (a copy holds the root's Parameter
            objects). Does it change the counts?

    Return (trainable, adam_bytes, training_bytes), all ints:

    trainable       the scalars the optimizer updates
    adam_bytes      AdamW's moments m and v (leave out its 8-byte step counters)
    training_bytes  weights + gradients + adam_bytes, with every array float32 (4
                    bytes) and stored ONCE however many layers compute with it

    The parts of the model (scalars):
        token embedding wte   V * d        position embedding wpe   T * d
        final LayerNorm       2 * d (just d when config.bias is False)
        output head           V * d, but with config.tie_embeddings it IS wte
        one block             12 d^2 + 13 d with bias, 12 d^2 + 2 d without:
                              2 LayerNorms, qkv (3 d^2 + 3 d), out (d^2 + d),
                              MLP (4 d^2 + 4 d and 4 d^2 + d)
    """
    trainable = ...       # your code
    adam_bytes = ...      # your code
    training_bytes = ...  # your code
    return trainable, adam_bytes, training_bytes
'''


def reference(config, state, mode):
    """The solution (mode does not change what is stored)."""
    d, V, T = config.d_model, config.vocab_size, config.context
    block = 12 * d * d + (13 * d if config.bias else 2 * d)
    outside = V * d + T * d + (2 * d if config.bias else d)     # wte, wpe, ln_f
    if not config.tie_embeddings:
        outside += V * d                                        # an untied head
    independent = sum(1 for i, s in enumerate(state) if s == i)
    trainable = outside + independent * block                   # copies: nothing
    adam_bytes = 2 * 4 * trainable                              # m and v
    training_bytes = 4 * trainable + 4 * trainable + adam_bytes  # weights, grads, Adam
    return trainable, adam_bytes, training_bytes


# Two small configs (bias and tied head on / off) and a few states for each.
CONFIGS = {
    "A": dict(vocab_size=11, context=8, d_model=8, n_layer=4, n_head=2),
    "B": dict(vocab_size=13, context=6, d_model=12, n_layer=3, n_head=3, bias=False,
              tie_embeddings=False),
}
# (0, 0, 1, 2) and (0, 0, 1) hold copies of copies: the distinct values of a state
# are not the layers that train.
CASES = [("A", (0, 0, 0, 0)), ("A", (0, 1, 1, 0)), ("A", (0, 1, 2, 3)), ("A", (0, 0, 1, 2)),
         ("B", (0, 1, 0)), ("B", (0, 0, 2)), ("B", (0, 0, 1))]
MODES = ("official", "shared")


@lru_cache(maxsize=None)
def measured(config_name: str, state: tuple, mode: str) -> tuple:
    """(trainable, adam_bytes, training_bytes) of the real model after one AdamW step."""
    config = GPTConfig(**CONFIGS[config_name])
    model = DynamicTiedGPT(config, mode=mode, state=state)
    opt = AdamW(param_groups(model, 0.1), lr=1e-3)
    idx = np.arange(2 * config.context).reshape(2, config.context) % config.vocab_size
    model(idx, idx)[1].backward()
    opt.step()
    trainable = count_parameters(model)
    adam = sum(int(st["m"].nbytes + st["v"].nbytes) for st in opt.state.values())
    counters = sum(int(st["step"].nbytes) for st in opt.state.values())
    training = training_memory_bytes(model, opt)["total"] - counters
    return trainable, adam, training


def _copies(config: GPTConfig, state) -> tuple:
    """(how many layers are copies, the scalars of one block)."""
    d = config.d_model
    return (config.n_layer - independent_layers(state),
            12 * d * d + (13 * d if config.bias else 2 * d))


def _wrong_trainable(config, state, want):
    copies, block = _copies(config, state)
    known = []
    if copies:
        known.append((want + copies * block,
                      f"it counts the {copies} copied layer(s) too. A copy (s_i != i) "
                      f"trains nothing: in mode 'official' its Parameters have "
                      f"requires_grad=False, in mode 'shared' they ARE its root's, "
                      f"counted once. Count #{{i : s_i = i}} blocks."))
    named = len(set(state))                 # the layers the state names
    if named != config.n_layer - copies:
        known.append((want + (named - (config.n_layer - copies)) * block,
                      f"it counts the {named} distinct layers named in the state, but a "
                      f"layer named there can itself be a copy (s_j != j): a copy of a "
                      f"copy computes with the root at the end of the chain. Count "
                      f"#{{i : s_i = i}} blocks."))
    if config.tie_embeddings:
        known.append((want + config.vocab_size * config.d_model,
                      "it counts the output head separately, but with tie_embeddings "
                      "the head IS the token embedding wte: one array, counted once."))
    return known


def _wrong_adam(trainable):
    return [(4 * trainable, "Adam keeps TWO moments per parameter, m (the mean of the "
                            "gradients) and v (the mean of their squares): 2 * 4 bytes "
                            "per trainable scalar."),
            (2 * 8 * trainable, "the moments are float32 here, 4 bytes each, not 8.")]


def _wrong_training(config, state, trainable, want):
    copies, block = _copies(config, state)
    copied = copies * block
    return [(want - 4 * trainable, "one of weights, gradients or Adam's moments is "
                                   "missing: training holds all three (4 + 4 + 8 bytes "
                                   "per trainable float32 scalar)."),
            (want + 4 * copied, "it counts the copies' weights, but a copy computes with "
                                "its root's array: the same memory, stored once."),
            (want + 8 * copied, "it counts the copies' weights and gradients; a copy "
                                "shares its root's array and has no gradient of its own.")]


def check(fn) -> CheckResult:
    runs = [(name, state, mode) for name, state in CASES for mode in MODES]
    what = "tying_memory(config, state, mode)"
    with Checker(f"Exercise 13: {TITLE}") as c:
        answers = {}
        with c.step(f"trainable equals count_parameters of the real DynamicTiedGPT "
                    f"({len(runs)} state/mode cases)"):
            for run in runs:
                config, state, mode = _case(c, *run)
                answers[run] = c.returns(fn, config, state, mode, what=what,
                                         names="trainable, adam_bytes, training_bytes")
                want = measured(*run)[0]
                c.expect_array(answers[run][0], want, "trainable", what="count",
                               known=_wrong_trainable(config, state, want))
        with c.step("adam_bytes equals the bytes of AdamW's m and v after a step"):
            for run in runs:
                _case(c, *run)
                trainable, want, _ = measured(*run)
                c.expect_array(answers[run][1], want, "adam_bytes", what="count",
                               known=_wrong_adam(trainable))
        with c.step("training_bytes equals training_memory_bytes' total (weights + "
                    "gradients + m and v)"):
            for run in runs:
                config, state, _ = _case(c, *run)
                trainable, _, want = measured(*run)
                c.expect_array(answers[run][2], want, "training_bytes", what="count",
                               known=_wrong_training(config, state, trainable, want))
    return c.result


def _case(c: Checker, name: str, state: tuple, mode: str) -> tuple:
    """(config, state, mode) of one run, described in ``c.case`` for a failure."""
    config = GPTConfig(**CONFIGS[name])
    c.case = (f"V={config.vocab_size}, T={config.context}, d={config.d_model}, "
              f"L={config.n_layer}, bias={config.bias}, tie_embeddings={config.tie_embeddings}"
              f", state {state}, mode {mode!r}")
    return config, state, mode


# ------------------------------------------------ wrong answers, for the tests

def _copies_trainable_when_official(config, state, mode):
    if mode == "official":                  # "the copies are Parameters, so they count":
        state = tuple(range(len(state)))    # counted as the untied model
    trainable, _, _ = reference(config, state, mode)
    return trainable, 8 * trainable, 16 * trainable


def _head_counted_separately(config, state, mode):
    trainable, _, _ = reference(config, state, mode)
    trainable += config.vocab_size * config.d_model      # even when tied
    return trainable, 8 * trainable, 16 * trainable


def _distinct_layers_train(config, state, mode):
    copies, block = _copies(config, state)
    trainable, _, _ = reference(config, state, mode)
    trainable += (len(set(state)) - (config.n_layer - copies)) * block    # len(set(state))
    return trainable, 8 * trainable, 16 * trainable


def _one_moment(config, state, mode):
    trainable, _, _ = reference(config, state, mode)
    return trainable, 4 * trainable, 12 * trainable      # m only


MISTAKES = [
    Planted("copies counted as trainable (official mode)", _copies_trainable_when_official,
            ("copied layer", "requires_grad=False")),
    Planted("the tied lm_head counted separately", _head_counted_separately,
            ("head IS the token embedding",)),
    Planted("the distinct values of the state counted as the layers that train",
            _distinct_layers_train, ("distinct layers named in the state", "copy of a copy")),
    Planted("Adam with one moment per parameter", _one_moment, ("TWO moments",)),
]
