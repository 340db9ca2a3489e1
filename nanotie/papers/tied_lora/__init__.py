"""Tied-LoRA: Enhancing parameter efficiency of LoRA with weight tying.

Adithya Renduchintala, Tugrul Konuk, Oleksii Kuchaiev (NVIDIA), 2023 (NAACL 2024),
arXiv:2311.09578.

The idea. LoRA adapts a frozen weight W by adding a low-rank product B A, trained per
layer. Tied-LoRA TIES the low-rank pair across layers: ONE A and ONE B serve every
layer, and each layer l keeps only two cheap scaling vectors, u_l (length r) and
v_l (length 3d). Each of A, B, u, v can be trained or frozen, which gives a lattice
of configurations (:mod:`.lattice`), from LoRA itself (untied, A and B trained) to the
VeRA-style corner (tied random A and B, frozen; only u and v trained). The paper's
favourite, TL6, trains all four and matches LoRA with about 13% of its parameters at
L = 32 layers.

The adapter sits on the fused query/key/value projection (d -> 3d) of every attention
layer. For layer l and an input x of width d::

    qkv_l = W_qkv,l x + diag(v_l) B diag(u_l) A x                      (Eq. 1)

    A: (r, d)    B: (3d, r)    u_l: (r,)    v_l: (3d,)

Tied means aliasing: every layer's adapter holds the SAME A and B Parameter objects,
so the engine adds up their gradients (dL/dA = sum_l dL/dA_l) and the optimizer
steps them once. Frozen parts are Parameters with ``requires_grad=False``: they get
no gradient and, since the training loop hands the optimizer only trainable
Parameters, no optimizer state. Trainable parameters with L layers
(:func:`~.lattice.trainable_count`): LoRA 4 L d r, TL5 (tied, u and v frozen) 4 d r, TL6
4 d r + L (r + 3 d), VeRA-style L (r + 3 d).

Because the update is linear in x, it can be folded into the weight for inference
(:func:`merge`): W_qkv,l + diag(v_l) B diag(u_l) A gives the same outputs, and
:func:`unmerge` subtracts it again.

Initialisation. Neither the paper nor its authors' code settles it (NVIDIA NeMo's
tied LoRA, ``ParallelLinearAdapterWeightTying``, gives each layer a zero-initialised
position embedding instead of u and v; its LoRA draws A small with B = 0). nanotie
follows LoRA's fan-in scale, so that the optimizer can move the random parts::

    A ~ N(0, 1/d)    B ~ N(0, 1/r)    (A x and B h are O(1) per entry)

B = 0 instead when it is trained while v is frozen (LoRA, TL5); u = 1; v = 0 when
trained, 1 when frozen. The update is then zero at step 0 whenever v or B starts at
zero, and the adapted model starts as the base model (``attach(..., zero="B")`` starts
TL6 at B = 0, u = v = 1 instead: the experiment's sensitivity row). The scale matters
because Adam moves every entry by about the learning rate per step, whatever the
gradient: from N(0, 1), 60 steps at 1e-3 moved A by under 1% and TL6 behaved like the
VeRA-style corner; from N(0, 1/d) the experiment's 150 steps at its chosen 3e-2 move A
by about 80-120% of its norm (its report's movement table says why a zero v does not
slow them).

Differences from the paper:

* Scale (the experiment's report gives the figures): a byte-level GPT of L = 8 layers
  adapted from English prose to Python code, not GPT-2B or LLaMA-2 7B on five tasks, so
  tying saves a factor 8, not the paper's 32 (the tests check its counts at L = 32).
* Only TL5 and TL6 (and the LoRA and VeRA corners) are named: the paper's counts confirm
  their tuples, not those of TL1-TL4 (Table 1), which go by the parts they train (e.g.
  ``tied:Bu``). :func:`lattice` enumerates LoRA and the fifteen tied configurations.
* Three tied corners freeze both v and B (``tied:A``, ``tied:u``, ``tied:Au``), so they
  start away from the base model (:attr:`~.lattice.TiedLoRAConfig.zero_start` is False); they are
  trained like the others, and the report flags them.
* The VeRA-style corner starts u = 1 where peft's VeRA starts lambda_d (our u) at 0.1
  with Kaiming-uniform A, B; with v = 0 both start at the base model, and given the
  same arrays their forwards agree (tested).
* No dropout on the adapter path, alpha = r (no extra scaling), as in the paper. Each
  configuration gets its own learning rate, chosen on a validation split.
"""

from __future__ import annotations

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import functional as F
from ...nn.layers import Linear
from ...nn.module import Module, Parameter
from .lattice import PRESETS, TiedLoRAConfig, all_configurations, lattice, trainable_count

__all__ = ["TiedLoRALinear", "attach", "zero_part", "adapters", "merge", "unmerge",
           "TiedLoRAConfig", "PRESETS", "lattice", "all_configurations", "trainable_count"]


class TiedLoRALinear(Module):
    """A frozen Linear (d -> 3d) plus the low-rank update of Eq. 1.

    ``A`` and ``B`` may be the same Parameter objects in every layer (tied); ``u`` and
    ``v`` are this layer's own. Frozen ones have ``requires_grad=False``."""

    def __init__(self, base: Linear, A: Parameter, B: Parameter, u: Parameter,
                 v: Parameter):
        super().__init__()
        (d_out, d_in), r = base.weight.shape, A.shape[0]
        for name, t, want in (("A", A, (r, d_in)), ("B", B, (d_out, r)), ("u", u, (r,)),
                              ("v", v, (d_out,))):
            if t.shape != want:                  # u (1,), say, would broadcast silently
                raise ValueError(f"TiedLoRALinear: {name} has shape {t.shape}, expected "
                                 f"{want} for a base Linear of weight {base.weight.shape}")
        self.base = base       # W_qkv,l and its bias: frozen
        self.A, self.B = A, B  # (r, d), (3d, r): tied = the same objects in every layer
        self.u, self.v = u, v  # (r,), (3d,): per layer
        self.merged = False    # True while the update is folded into base.weight

    def forward(self, x: Tensor) -> Tensor:                # (B, T, d) -> (B, T, 3d)
        y = self.base(x)                                   # W x + b          (B, T, 3d)
        if self.merged:
            return y
        h = F.linear(x, self.A) * self.u                   # diag(u) A x      (B, T, r)
        return y + F.linear(h, self.B) * self.v            # + diag(v) B h    (Eq. 1)

    def delta_weight(self) -> Tensor:
        """diag(v) B diag(u) A, the (3d, d) update that :func:`merge` folds into W."""
        scaled_B = self.v.reshape(-1, 1) * self.B * self.u     # diag(v) B diag(u) (3d, r)
        return scaled_B @ self.A                               # (3d, d)

    def __repr__(self):
        out, d = self.base.weight.shape
        return f"TiedLoRALinear(d={d}, out={out}, r={self.A.shape[0]}, merged={self.merged})"


def attach(model, config: TiedLoRAConfig, zero: str | None = None):
    """Freeze ``model`` (a nanotie GPT) and wrap every block's ``attn.qkv`` in a
    :class:`TiedLoRALinear`. Returns the model (changed in place).

    Tied: ONE A and ONE B Parameter object, assigned to every layer's adapter.
    ``zero``: the part that starts at zero ("v" or "B"; None: the default of
    :func:`zero_part`); the other scale vectors start at 1."""
    if any(isinstance(b.attn.qkv, TiedLoRALinear) for b in model.blocks):
        raise ValueError("attach: this model already has adapters")
    zero = zero_part(config, zero)
    model.requires_grad_(False)                      # the base model is frozen
    weight = model.blocks[0].attn.qkv.weight
    d_out, d_in = weight.shape
    xp, r = backend.xp_of(weight.data), config.rank

    def fresh_A_B():
        """A (r, d) ~ N(0, 1/d), B (3d, r) ~ N(0, 1/r), or B = 0 when ``zero`` is "B"."""
        A = Parameter(backend.randn((r, d_in), weight.dtype, weight.device) / d_in ** 0.5,
                      requires_grad=config.train_A)
        if zero == "B":                     # LoRA, TL5 (or TL6 with zero="B"): B = 0
            return A, Parameter(xp.zeros((d_out, r), dtype=weight.dtype))
        B = Parameter(backend.randn((d_out, r), weight.dtype, weight.device) / r ** 0.5,
                      requires_grad=config.train_B)
        return A, B

    shared = fresh_A_B() if config.tie_AB else None
    for block in model.blocks:
        A, B = shared or fresh_A_B()        # tie: every layer reuses the SAME A and B
        u = Parameter(xp.ones((r,), dtype=weight.dtype), requires_grad=config.train_u)
        v = Parameter(xp.full((d_out,), 0.0 if zero == "v" else 1.0, dtype=weight.dtype),
                      requires_grad=config.train_v)
        block.attn.qkv = TiedLoRALinear(block.attn.qkv, A, B, u, v)
    return model


def zero_part(config: TiedLoRAConfig, zero: str | None = None) -> str | None:
    """Which part starts at zero, so that the update starts at zero: ``"v"`` (v = 0,
    B random), ``"B"`` (B = 0, v = 1), or None (a corner with v and B frozen).

    ``zero=None`` picks the default: v when it is trained, else B when it is trained."""
    if zero is None:
        return "v" if config.train_v else ("B" if config.train_B else None)
    if zero not in ("v", "B"):
        raise ValueError(f"zero must be 'v', 'B' or None, got {zero!r}")
    if not getattr(config, f"train_{zero}"):
        raise ValueError(f"zero={zero!r}: {config.name} does not train {zero}, so starting "
                         "it at zero would leave it there")
    return zero


def adapters(model) -> list:
    """The model's :class:`TiedLoRALinear` modules, layer by layer."""
    found = [b.attn.qkv for b in model.blocks if isinstance(b.attn.qkv, TiedLoRALinear)]
    if not found:
        raise ValueError("this model has no Tied-LoRA adapters; call attach() first")
    return found


def merge(model):
    """Fold every layer's update into its weight: W <- W + diag(v) B diag(u) A, and
    skip the adapter path from then on. The outputs do not change (up to rounding).

    The merged flag is not part of ``state_dict``: save an unmerged model, or a
    checkpoint loaded into freshly attached adapters would add the update twice."""
    return _fold(model, merged=True)


def unmerge(model):
    """The inverse of :func:`merge`: W <- W - diag(v) B diag(u) A, adapter path back on.

    Defined as long as the adapters' arrays did not change since the merge (they are
    the record of what was added)."""
    return _fold(model, merged=False)


def _fold(model, merged: bool):
    with no_grad():
        for ad in adapters(model):
            if ad.merged != merged:
                delta = ad.delta_weight().data
                ad.base.weight.data = ad.base.weight.data + (delta if merged else -delta)
                ad.merged = merged
    return model
