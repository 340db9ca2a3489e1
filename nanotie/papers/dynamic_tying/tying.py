"""The mechanism: a GPT whose layers follow a tying state s (``set_tying`` below).

State. ``s`` is a tuple of L ints with s_0 = 0 and s_i <= i:

    s_i = i        layer i trains independently (its own weights, gradient, Adam moments)
    s_i = j < i    layer i is a copy of layer j

A copy of a copy computes with the weights of the layer at the end of the chain, its
ROOT: r(i) = i if s_i = i, else r(s_i). Since s_j < j for every copy, the chain ends,
and since s_0 = 0 it ends at an independent layer at the latest at layer 0.

Two ways to be a copy (``mode``):

* ``"official"`` (the authors' code): layer i's Parameters are NEW Parameter objects
  that hold the SAME arrays as layer r(i)'s and have ``requires_grad=False``. The
  engine gives them no gradient, the optimizer does not know them, and the root's
  in-place update moves them too, so W_i = W_r at every step. The root's gradient
  holds only ITS OWN use:

      dL/dW_r  (official) = the partial derivative through layer r alone.

* ``"shared"`` (plain tying, as everywhere else in nanotie): layer i holds the SAME
  Parameter objects as layer r(i); the engine adds the gradients of every use:

      dL/dW_r  (shared)   = sum over layers k with r(k) = r of the partial through k.

Untying (s_i: j -> i) gives layer i FRESH Parameters holding a copy of the values it
computed with, and no optimizer state (Adam starts its moments at zero). The
authors' code instead flips ``requires_grad`` back on the shared arrays, so the
"untied" layer keeps aliasing its former root and the array receives two updates per
step from two sets of moments; we do not reproduce that.
"""

from __future__ import annotations

import numpy as np

from ... import backend
from ...nn import GPT, GPTConfig, Parameter
from ...nn.optim import AdamW, Optimizer, param_groups

__all__ = ["MODES", "validate_state", "root_of", "independent_layers", "with_action",
           "DynamicTiedGPT", "trainable_formula", "sync_optimizer",
           "optimizer_state_bytes", "weight_bytes", "training_memory_bytes",
           "step_peak_bytes"]

MODES = ("official", "shared")


class DynamicTiedGPT(GPT):
    """nanotie's GPT, unchanged in its forward and hooks, whose blocks follow a tying
    state: :meth:`set_tying` re-wires the blocks' Parameters, in ``mode`` "official" or
    "shared" (see the module docstring). The default initial state is all zeros: every
    layer copies layer 0, a universal transformer."""

    def __init__(self, config: GPTConfig, mode: str = "official", state=None):
        if mode not in MODES:
            raise ValueError(f"DynamicTiedGPT: mode must be one of {MODES}, got {mode!r}")
        super().__init__(config)
        self.mode = mode
        # (submodule path, attribute) of every Parameter slot of a block; all blocks
        # have the same layout.
        self._slots = [(mpath, name)
                       for mpath, module in self.blocks[0].named_modules()
                       for name in module._parameters]
        self.tying_state = tuple(range(config.n_layer))      # built untied ...
        self.set_tying((0,) * config.n_layer if state is None else state)   # ... then tied

    def _slot(self, layer: int, mpath: str, name: str):
        module = self.blocks[layer].get_submodule(mpath)
        return module, module._parameters[name]

    def set_tying(self, state) -> tuple:
        """Re-wire the blocks to follow ``state``; return the (validated) state.

        Layers are visited in order, so a root (r(i) < i) is final before its copies
        point at it. A layer that turns independent gets fresh Parameters holding a
        copy of what it computed with; its old Parameter objects leave the model (call
        :func:`sync_optimizer` afterwards so the optimizer drops them too)."""
        new = validate_state(state, self.config.n_layer)
        old = self.tying_state
        for i in range(self.config.n_layer):
            root = root_of(new, i)
            for mpath, name in self._slots:
                module, p = self._slot(i, mpath, name)
                if root == i:
                    if old[i] != i:              # untie: clone, never keep the alias
                        setattr(module, name, Parameter(p.data.copy()))
                    continue
                _, src = self._slot(root, mpath, name)
                if self.mode == "shared":
                    if p is not src:
                        setattr(module, name, src)     # the tie: the root's Parameter itself
                elif p.data is not src.data or p.requires_grad:
                    # the tie (official): the root's array, in a Parameter the engine skips
                    setattr(module, name, Parameter(src.data, requires_grad=False))
        self.tying_state = new
        return new

    # Moving or loading rebinds every Parameter's array, which would cut the official
    # mode's shared arrays apart: re-point the copies at their roots afterwards.
    def to(self, *args, **kwargs) -> "DynamicTiedGPT":
        super().to(*args, **kwargs)
        self.set_tying(self.tying_state)
        return self

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Load values saved from a model with the SAME tying state (the state itself is
        not in the checkpoint: call :meth:`set_tying` with it first)."""
        super().load_state_dict(state_dict, strict)
        self.set_tying(self.tying_state)

    def block_parameter_count(self) -> int:
        """P_block: the scalars of one transformer block."""
        return sum(p.numel() for p in self.blocks[0].parameters())


def validate_state(state, n_layer: int) -> tuple:
    """``state`` as a tuple of ints, after checking s_0 = 0 and 0 <= s_i <= i."""
    given = np.asarray(state).reshape(-1).tolist()
    s = tuple(int(v) for v in given)
    if list(s) != given:                     # int() would turn 0.5 into layer 0, silently
        raise ValueError(f"tying state {tuple(given)}: entries must be layer indices (ints)")
    if len(s) != n_layer:
        raise ValueError(f"tying state {s} has {len(s)} entries, expected n_layer={n_layer}")
    if s[0] != 0:
        raise ValueError(f"tying state {s}: s_0 must be 0 (layer 0 has no earlier layer "
                         "to copy)")
    bad = [i for i, v in enumerate(s) if not 0 <= v <= i]
    if bad:
        raise ValueError(f"tying state {s}: need 0 <= s_i <= i, violated at layer(s) {bad}")
    return s


def root_of(state, i: int) -> int:
    """The independent layer whose weights layer i computes with: follow s_i -> s_{s_i}
    -> ... until s_k = k."""
    while state[i] != i:
        i = state[i]
    return i


def independent_layers(state) -> int:
    """#{i : s_i = i}, the layers that train."""
    return sum(int(v == i) for i, v in enumerate(state))


def with_action(state, layer: int, action: int) -> tuple:
    """The state after the agent's action for ``layer``: s_layer <- action (an action
    a < layer means "copy layer a", a = layer means "train")."""
    if not 1 <= layer < len(state) or not 0 <= action <= layer:
        raise ValueError(f"with_action: layer {layer} allows actions 0..{layer}, got "
                         f"{action} (layers 1..{len(state) - 1} choose)")
    s = list(state)
    s[layer] = action
    return tuple(s)


def trainable_formula(model: DynamicTiedGPT) -> int:
    """The trainable-parameter count the state predicts:

        embeddings + final norm + #{i : s_i = i} * P_block

    (the output head is tied to the token embedding, so it adds nothing)."""
    outside = [model.wte, model.wpe, model.ln_f]
    if not model.config.tie_embeddings:
        outside.append(model.lm_head)
    fixed = sum(p.numel() for m in outside for p in m.parameters())
    return fixed + independent_layers(model.tying_state) * model.block_parameter_count()


def sync_optimizer(optimizer: Optimizer, model) -> None:
    """After :meth:`DynamicTiedGPT.set_tying`: the optimizer's groups become exactly the
    model's trainable Parameters, and its state is kept only for those that stay.

    The optimizer must have been built from ``param_groups(model, wd)`` (two groups:
    matrices with decay, vectors without); each group keeps its hyper-parameters.
    New Parameters start with no state; dropped ones lose theirs, so a tied layer holds
    no Adam moments. State is keyed by ``id(param)``: the old Parameters are still held
    by the old group lists while we compute the new ones, so no new Parameter can reuse
    a dropped one's id and inherit its moments by accident."""
    fresh = param_groups(model, 0.0)              # only the split matters here
    for group, new in zip(optimizer.param_groups, fresh):
        group["params"] = new["params"]
    keep = {id(p) for p in optimizer.parameters()}
    optimizer.state = {k: v for k, v in optimizer.state.items() if k in keep}


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes of every array the optimizer keeps (Adam: m, v and a step counter)."""
    return sum(int(v.nbytes) for st in optimizer.state.values() for v in st.values())


def weight_bytes(model) -> int:
    """Bytes of the model's unique weight arrays (copies that share an array count once)."""
    return sum({id(p.data): p.data.nbytes for p in model.parameters()}.values())


def training_memory_bytes(model, optimizer: Optimizer) -> dict:
    """Weights (:func:`weight_bytes`), gradients (one per trainable Parameter) and
    optimizer state, in bytes."""
    weights = weight_bytes(model)
    grads = sum(p.data.nbytes for p in model.parameters() if p.requires_grad)
    adam = optimizer_state_bytes(optimizer)
    return {"weights": weights, "gradients": grads, "optimizer": adam,
            "total": weights + grads + adam}


def step_peak_bytes(model, x, y, weight_decay: float = 0.1) -> dict:
    """The whole training step's peak memory on the CPU, measured with ``tracemalloc``
    (which sees every NumPy array): weights + the peak, during one forward, backward
    and AdamW step, of everything else alive (Adam's moments, the activations kept
    for backward, the gradients).

    :func:`training_memory_bytes` counts the parameter side only: the paper's accounting.
    A copy does not save its layer's activations (the layer still runs), so the whole
    step shrinks less. The step uses a fresh optimizer at lr 0, so the weights do not
    change; after an uncounted warm-up pass, the first step creates Adam's state, the
    second is measured. Returns ``{"weights", "step", "total"}`` in bytes."""
    import tracemalloc

    if backend.xp_of(next(iter(model.parameters())).data) is not np:
        raise ValueError("step_peak_bytes: tracemalloc sees host memory only; measure a "
                         "model on the CPU")
    weights = weight_bytes(model)
    opt = AdamW(param_groups(model, weight_decay), lr=0.0, weight_decay=0.0)
    tracing = tracemalloc.is_tracing()      # the caller's own trace is left running
    tracemalloc.start()
    try:
        # A first forward and backward, not counted: the process's first step makes
        # lasting buffers of its own (caches that outlive the step, not the model's).
        model(x, y)[1].backward()
        opt.zero_grad()
        before = tracemalloc.get_traced_memory()[0]
        for step in range(2):
            if step == 1:
                tracemalloc.reset_peak()
            loss = model(x, y)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            del loss
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        opt.zero_grad()
        if not tracing:
            tracemalloc.stop()
    return {"weights": weights, "step": peak, "total": weights + peak}
