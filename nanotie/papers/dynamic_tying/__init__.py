"""Dynamic Layer Tying for Parameter-Efficient Transformers.

Tamir David Hay and Lior Wolf, ICLR 2024, arXiv:2401.12819.
The mechanism is :meth:`.tying.DynamicTiedGPT.set_tying`: it re-wires the layers to a
tying state, copies as the root's array (no gradient) or as its very Parameter.

The idea. While a transformer trains, a reinforcement-learning agent keeps deciding,
for every layer i, whether that layer trains on its own or becomes a copy of an
earlier layer j < i. A copy has no gradient and no optimizer state, so the number of
trainable parameters, and the memory training needs, falls with every copy; the
agent is rewarded for a low perplexity, so it keeps independent only the layers that
pay for themselves. The paper reports a perplexity slightly better than the vanilla
model's with far fewer trainable parameters, and up to 10x less training memory.

The tie. A state s in Z^L with s_0 = 0 and s_i <= i (``tying.py``):

    s_i = i      layer i trains:          W_i its own,  dL/dW_i from its own use
    s_i = j < i  layer i copies layer j:  W_i := W_j (the same array), no gradient

so with r(i) the end of the chain i -> s_i -> s_{s_i} -> ..., the network computes
with W_{r(i)} at layer i, and the trainable count is

    P_train = P_embed + P_final_norm + #{i : s_i = i} * P_block.

This is NOT plain tying: the root's gradient is its own use only (mode "official").
Plain aliasing, where the gradients of all uses add, is mode "shared". Episodes, the
agent and the TD update are in ``agent.py``; the training loop that interleaves
decisions with language-model steps is in ``loop.py``::

    for each episode:                        eps <- max(0.95 eps, 0.01) afterwards
        for i = 1 .. L-1:
            a = eps-greedy argmax Q(s)[i(i+1)/2 : i(i+1)/2 + i + 1]
            s' = s with s_i = a; re-wire the layers; sync the optimizer's state
            k language-model steps
            r = -exp(CE on one batch), clipped to [-10, 10] (optionally standardised)
            one TD step on (Q(s)[.., a] - (r + 0.99 max Q(s')[slice_i]))^2
            s = s'

Differences from the paper: ``DIFFERENCES``, below (the results page prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

from .agent import (REWARD_NORMS, QNetwork, TyingAgent, action_offset, decay_to_floor,
                    n_actions, q_output_size)
from .controls import (FixedSchedule, RandomSchedule, SyntheticReward, chance_train_share,
                       greedy_train_share)
from .loop import DynamicRun, episode_count, held_out_batch, train_dynamic
from .tying import (MODES, DynamicTiedGPT, independent_layers, optimizer_state_bytes,
                    root_of, step_peak_bytes, sync_optimizer, trainable_formula,
                    training_memory_bytes, validate_state, weight_bytes, with_action)

# Differences from the paper, as the results page prints them.
DIFFERENCES = """\
- Untying clones: an untied layer gets fresh Parameters holding a copy of its values
  and fresh Adam moments (the authors' layer keeps aliasing its former source).
- A copy of a copy follows the root of its chain (the layer that trains), also when
  an intermediate layer changes later; the state still records the agent's choice j.
- Decisions as in the authors' code (one TD step per decision, the reward in eval
  mode, the Q-values of layer i's slice at s' in the target), with
  `lm_steps_per_decision` language-model steps per decision (their code uses 10 in
  the version we read; the spec says 4): a parameter here.
- The reward batch: the authors draw a fresh random training batch for every reward;
  `train_dynamic(..., reward_data=...)` uses one fixed batch held out from training
  instead (the experiment does), so that rewards differ by what the actions did.
- The reward's scale: `reward_norm="ema"` (the experiment's; "none" is the authors')
  standardises the clipped reward (see `agent.py`); the experiment's synthetic check
  compares the two on a reward whose best policy is known.
- The reward clip: the authors' [-10, 10] is the default; the experiment uses
  [-100, 100], since a tiny byte-level model's perplexity stays above 10 for long.
- Exploration: the authors' eps decays by 0.95 per episode and needs 90 episodes to
  reach its floor; the experiment picks the decay (`decay_to_floor`) so that it
  reaches the floor two thirds into its few dozen episodes.
- Adam state: the authors' LM optimizer keeps the Adam state of a layer that trained
  and was later tied; `sync_optimizer` frees it, so nanotie saves more memory.
- Scale: a 6- or 8-layer byte-level GPT on Python's own help text for a few hundred
  steps (warmup + cosine, AdamW, clipping), not GPT-2-size models on WikiText/LM1B at
  a constant 1e-4, so the agent sees a few dozen episodes, not hundreds.
- Controls the paper does not run: a random schedule and a fixed pattern
  (`controls.py`), which tie as much as the agent without learning.
- All runs use the same number of language-model steps and the same batches; the
  tying runs additionally spend one forward pass per decision on the reward."""

__all__ = ["DIFFERENCES", "DynamicTyingConfig", "DynamicTiedGPT", "TyingAgent", "QNetwork",
           "MODES", "RandomSchedule", "FixedSchedule", "SyntheticReward", "greedy_train_share",
           "chance_train_share", "held_out_batch", "decay_to_floor", "step_peak_bytes",
           "q_output_size", "action_offset", "n_actions", "validate_state", "root_of",
           "independent_layers", "with_action", "trainable_formula", "sync_optimizer",
           "optimizer_state_bytes", "weight_bytes", "training_memory_bytes", "train_dynamic",
           "episode_count", "DynamicRun"]


@dataclass
class DynamicTyingConfig:
    """How the agent ties layers and how long it trains between decisions."""
    mode: str = "official"            # "official" (copies take no gradient) or "shared"
    initial_state: str = "zeros"      # "zeros": all copy layer 0 (the paper); "independent"
    lm_steps_per_decision: int = 4    # language-model steps after each layer's action
    q_hidden: int = 128               # hidden width of the Q-network
    q_lr: float = 1e-3                # AdamW learning rate of the Q-network
    q_weight_decay: float = 0.01      # its AdamW weight decay
    gamma: float = 0.99               # TD discount
    epsilon_start: float = 1.0        # exploration rate in the first episode
    epsilon_decay: float = 0.95       # eps <- eps * decay after every episode
    epsilon_min: float = 0.01         # floor of eps
    reward_clip: float = 10.0         # r = -perplexity, clipped to [-c, c]
    reward_norm: str = "none"         # "none" (the authors'); "ema": standardised by a
    #                                   running mean and std (see TyingAgent.shape)
    reward_ema: float = 0.9           # how slowly that running mean and std forget

    def __post_init__(self):
        for name, allowed in (("mode", MODES), ("initial_state", ("zeros", "independent")),
                              ("reward_norm", REWARD_NORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DynamicTyingConfig: {name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if not (0 <= self.gamma <= 1 and 0 < self.epsilon_decay <= 1):
            raise ValueError(f"DynamicTyingConfig: need 0 <= gamma <= 1 and 0 < "
                             f"epsilon_decay <= 1, got {self.gamma} and {self.epsilon_decay}")

    def initial(self, n_layer: int) -> tuple:
        """The tying state training starts from."""
        return (0,) * n_layer if self.initial_state == "zeros" else tuple(range(n_layer))
