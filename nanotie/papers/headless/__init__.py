"""Headless Language Models: Learning without Predicting with Contrastive Weight Tying.

Nathan Godey, Eric de la Clergerie, Benoit Sagot (ICLR 2024), arXiv:2309.08351.

The idea. A language model usually ends in a softmax over the whole vocabulary: at
each of the K target positions of a batch it scores all V tokens, a K x V matrix.
A headless model drops that head. It is trained so that its final hidden state o_k
at a target position lands close to the INPUT embedding e(x_k) of the token it
should predict, and far from the input embeddings of the other targets of the same
batch. The scores form a K x K matrix instead of K x V, so the cost of the output
layer no longer grows with the vocabulary: O(K^2 D) instead of O(K D V).

The tie (Contrastive Weight Tying, Eq. 3 of the paper). E (V x D) is the input
embedding, S the target positions of the batch, K = |S|, tau a temperature:

    L_CWT = -(1/K) sum_{k in S} log [ exp(o_k . e(x_k) / tau)
                                      / sum_{m in S} exp(o_k . e(x_m) / tau) ]

The input embedding is the ONLY output layer: E appears on the input side (the
lookup that feeds the network) and on the target side (the vectors e(x_m) the
outputs are scored against). Both uses are ordinary reads of the same Parameter,
so the engine adds their gradients, as for any tied weight; the targets are NOT
detached. Unlike Press & Wolf's tie, E is never multiplied by every output: a row
of E gets target-side gradient only if its token is a target in this batch.

Compared with the tied softmax head (logits = o E^T): when S holds every vocabulary
id exactly once, the two losses are identical (tests/papers/test_headless.py checks
it); in general the CWT denominator runs over the batch's targets, duplicates
included, so a token that is the target m times in S adds m terms, and the loss at
such a position is at least log m.

Getting a language model back (Sec. 3.2, Table 3): the zero-shot head o E^T / tau
(:func:`lm_from_headless` with ``head="tied"``), or an UNTIED head initialised as a
clone of E and fine-tuned with cross-entropy (``head="clone"``), with the whole
model or the head alone (:func:`freeze_all_but_head`, the "probe").

Elsewhere: the masked-LM variant in :mod:`.mlm`, the linear probe in :mod:`.probe`,
the throughput measurement in :mod:`.throughput`.

Differences from the paper:

* Causal targets: nanotie's batches are ``(x, y)`` with ``y[:, t] = x[:, t+1]``, so
  the K = B T targets are all of ``y`` (the paper: ``outputs[:, :-1]`` vs
  ``inputs[:, 1:]``); negatives come from one optimizer step's whole batch.
* The experiment's scale (a 4-layer GPT on about 100k tokens of Python's help text), its
  stand-in for GLUE and LAMBADA (a topic probe), its fine-tuning (a tenth of the
  pretraining steps; theirs: 20k after 143k) and its CPU timing: its report lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...autograd import Tensor
from ...nn import GPT, GPTConfig
from ...nn.module import TIES_KEY
from ...ops import logsumexp

__all__ = ["cwt_loss", "HeadlessGPT", "HeadlessConfig", "lm_from_headless",
           "freeze_all_but_head"]


def cwt_loss(outputs: Tensor, targets: Tensor, temperature: float = 1.0,
             reduction: str = "mean") -> Tensor:
    """Contrastive Weight Tying (Eq. 3): the mean over k of

        logsumexp_m (o_k . e(x_m) / tau)  -  o_k . e(x_k) / tau

    i.e. softmax cross-entropy over the K x K matrix O T^T / tau with the labels on
    its diagonal. Every target of the batch is a negative for every other position,
    duplicates included, and the positive itself is in the denominator.

    ``outputs`` (K, D): the final hidden states o_k at the target positions.
    ``targets`` (K, D): the input embeddings e(x_k) of their targets, gathered from
    E WITHOUT detaching, so E gets gradient from this side too.

    Gradient, with p_km = softmax_m(o_k . e(x_m) / tau):
        dL/do_k    = (sum_m p_km e(x_m) - e(x_k)) / (K tau)
        dL/de(x_m) = (sum_k p_km o_k - o_m) / (K tau)
    and the gradient of a row of E sums over every position whose target it is.
    ``reduction="none"`` returns the K per-position losses instead of their mean.
    """
    if outputs.ndim != 2 or outputs.shape != targets.shape:
        raise ValueError(f"cwt_loss: outputs {outputs.shape} and targets {targets.shape} "
                         "must both be (K, D), row k of targets the positive of row k")
    if not temperature > 0 or reduction not in ("mean", "none"):
        raise ValueError(f"cwt_loss: need temperature > 0 and reduction 'mean' or 'none', "
                         f"got {temperature} and {reduction!r}")
    scores = outputs @ targets.T / temperature                    # (K, K): o_k . e(x_m) / tau
    positive = (outputs * targets).sum(dim=-1) / temperature      # (K,) the diagonal
    losses = logsumexp(scores, dim=-1) - positive                 # (K,) Eq. 3, per k
    return losses.mean() if reduction == "mean" else losses


class HeadlessGPT(GPT):
    """nanotie's GPT without an output head, trained with :func:`cwt_loss`.

    Only the ``head`` hook changes: it returns the normalised final hidden states
    ``ln_f(x)`` (B, T, d) instead of logits. ``forward(idx, targets)`` returns
    ``(outputs, loss)``, the loss being CWT between the outputs and the input
    embeddings of ``targets`` (every position of ``targets`` is in S).

    The parameters are exactly those of a tied GPT (``lm_head.weight`` IS
    ``wte.weight``), so :func:`lm_from_headless` turns the weights into a GPT."""

    def __init__(self, config: HeadlessConfig):
        if not isinstance(config, HeadlessConfig):
            raise TypeError(f"HeadlessGPT needs a HeadlessConfig, got {type(config).__name__}")
        super().__init__(config)

    def head(self, x: Tensor) -> Tensor:
        """No vocabulary projection: (B, T, d) -> (B, T, d) final outputs o."""
        return self.ln_f(x)

    def forward(self, idx, targets=None, cache=None):
        outputs, _ = super().forward(idx, cache=cache)           # (B, T, d)
        if targets is None:
            return outputs, None
        d = self.config.d_model
        target_vectors = self.wte(targets)      # (B, T, d) the tie: E again, NOT detached
        return outputs, cwt_loss(outputs.reshape(-1, d), target_vectors.reshape(-1, d),
                                 self.config.temperature)

    def generate(self, idx, max_new_tokens: int, **kwargs):
        """Sample through the zero-shot head, logits = o E^T / tau (Sec. 3.2): GPT's own
        ``generate`` would read the d numbers of a hidden state as scores of d tokens.
        Keyword arguments are GPT.generate's; for a fine-tuned head, generate with the
        cloned LM instead."""
        return lm_from_headless(self, "tied").generate(idx, max_new_tokens, **kwargs)


@dataclass
class HeadlessConfig(GPTConfig):
    """A GPT configuration plus the temperature of the contrastive loss
    (``tie_embeddings`` stays True: see :class:`HeadlessGPT`)."""

    temperature: float = 1.0      # tau in Eq. 3; the paper uses 1 (raw dot products)

    def __post_init__(self):
        super().__post_init__()
        if not self.tie_embeddings:
            raise ValueError("HeadlessConfig: tie_embeddings must be True: the input "
                             "embedding is the only output layer of a headless model")
        if not self.temperature > 0:
            raise ValueError(f"HeadlessConfig: temperature must be > 0, got "
                             f"{self.temperature}")


# ------------------------------------------------------- getting an LM back (Sec. 3.2)


def lm_from_headless(model: GPT, head: str = "tied") -> GPT:
    """A GPT language model with the headless model's weights (copied).

    ``model`` is a HeadlessGPT, or any GPT with a tied head (then tau = 1).

    ``head="tied"``: the zero-shot head, logits = o E^T / tau, a tied GPT.
    ``head="clone"``: an UNTIED head initialised as a copy of E (then fine-tuned with
    cross-entropy). Its values start equal to E's, but it is a separate Parameter:
    fine-tuning it leaves the input embedding alone.

    A temperature tau != 1 is folded into the final norm: ln_f feeds only the head,
    and scaling its gain and bias by 1/tau scales the logits by 1/tau exactly.
    """
    if head not in ("tied", "clone"):
        raise ValueError(f"lm_from_headless: head must be 'tied' or 'clone', got {head!r}")
    cfg = model.config
    if model.lm_head.weight is not model.wte.weight:
        raise ValueError("lm_from_headless: the model's head is not tied to its input "
                         "embedding")
    temperature = getattr(cfg, "temperature", 1.0)
    fields = {k: getattr(cfg, k) for k in GPTConfig.__dataclass_fields__}
    lm = GPT(GPTConfig(**{**fields, "tie_embeddings": head == "tied"}))
    lm.to(model.wte.weight.dtype)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    if head == "clone":
        state["lm_head.weight"] = state["wte.weight"].copy()    # same values, own array
        state[TIES_KEY] = state[TIES_KEY][:0]                   # no tie to restore
    for name in ("ln_f.weight", "ln_f.bias"):
        if name in state:
            state[name] = state[name] / temperature
    lm.load_state_dict(state)
    return lm.to(model.wte.weight.device)


def freeze_all_but_head(lm: GPT) -> GPT:
    """Train the output head alone (the paper's "probe"): every other Parameter stops
    requiring gradients, so the optimizer leaves it as it is."""
    if lm.lm_head.weight is lm.wte.weight:
        raise ValueError("freeze_all_but_head: the head is tied to the input embedding; "
                         "use lm_from_headless(model, head='clone') first")
    lm.requires_grad_(False)
    lm.lm_head.weight.requires_grad_(True)
    return lm
