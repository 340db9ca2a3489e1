"""Dynamic Layer Tying: the spec's five properties, the untying rule, the optimizer's
state, the training loop, and the experiment's outputs.

1. action space: sizes, slice offsets, s_0 = 0, s_i <= i, greedy actions in range;
2. trainable parameters = embeddings + final norm + #{s_i = i} P_block = the arrays
   that require grad, and the optimizer holds state for exactly those;
3. after N optimizer steps a copy still equals its source bit for bit; gradients follow
   the official mode (own use only) and the shared mode (sum of uses), checked by
   finite differences;
4. s = 0 everywhere is one block applied L times;
5. the epsilon schedule and one TD update against a hand computation on 3 layers.

Then the controls that tell a learned policy from chance (a random schedule, a fixed
pattern), the agent against the random schedule on a synthetic reward whose best
policy is known, the standardised and held-out reward, the whole step's memory next to
the parameter side, and the experiment (its run cache included).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie import backend
from nanotie.data import prose_corpus, train_val_split
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import GPT, GPTConfig, count_parameters
from nanotie.nn.optim import AdamW, param_groups
from nanotie.papers import REGISTRY
from nanotie.papers.dynamic_tying import (DynamicTiedGPT, DynamicTyingConfig,
                                          FixedSchedule, QNetwork, RandomSchedule,
                                          SyntheticReward, TyingAgent, action_offset,
                                          chance_train_share, decay_to_floor,
                                          episode_count, experiment,
                                          greedy_train_share, held_out_batch,
                                          independent_layers, n_actions,
                                          optimizer_state_bytes, q_output_size, root_of,
                                          step_peak_bytes, sync_optimizer, train_dynamic,
                                          trainable_formula, training_memory_bytes,
                                          validate_state, with_action)
from nanotie.train import TrainConfig, train

CFG = GPTConfig(vocab_size=11, context=8, d_model=8, n_layer=3, n_head=2)
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]


def make(mode="official", state=(0, 1, 1), config=CFG, device="cpu", seed=0):
    """A float64 model with random weights (away from GPT-2's tiny init), built untied,
    perturbed, then tied to ``state``: copies start equal to their roots."""
    nt.manual_seed(seed)
    model = DynamicTiedGPT(config, mode=mode, state=tuple(range(config.n_layer))).double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data += rng.normal(0.0, 0.3, p.shape)          # in place
    model.set_tying(state)
    return model.to(device)


def batch(seed=1, B=2, T=8, V=11):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def loss_of(model, device="cpu"):
    x, y = batch()
    return model(backend.to_device(x, device), backend.to_device(y, device))[1]


def block_params(model, layer):
    return dict(model.blocks[layer].named_parameters())


# ------------------------------------------------------------ 1. action space


@pytest.mark.parametrize("L", [1, 2, 3, 6, 8])
def test_q_output_holds_every_layers_actions_in_consecutive_slices(L):
    assert q_output_size(L) == L * (L + 1) // 2
    covered = []
    for i in range(L):
        assert action_offset(i) == i * (i + 1) // 2 and n_actions(i) == i + 1
        covered += range(action_offset(i), action_offset(i) + n_actions(i))
    assert covered == list(range(q_output_size(L)))      # the slices tile the output
    nt.manual_seed(0)
    q = QNetwork(L)
    assert q(np.zeros(L)).shape == (q_output_size(L),)
    assert q.fc1.weight.shape == (128, L) and q.fc2.weight.shape == (q_output_size(L), 128)


def test_states_keep_their_invariants_under_any_action_sequence():
    L = 6
    agent = TyingAgent(L, DynamicTyingConfig(), seed=3)
    state, rng = (0,) * L, np.random.default_rng(0)
    for t in range(300):
        agent.epsilon = 1.0 if t % 2 else 0.0           # random and greedy in turn
        layer = int(rng.integers(1, L))
        action = agent.act(state, layer)
        assert 0 <= action <= layer                     # greedy never targets j > i
        state = with_action(state, layer, action)
        assert validate_state(state, L) == state and state[0] == 0
        assert all(0 <= s <= i for i, s in enumerate(state))
        assert all(state[root_of(state, i)] == root_of(state, i) for i in range(L))


@pytest.mark.parametrize("bad, words", [((1, 1, 2), "s_0 must be 0"),
                                        ((0, 2, 2), "0 <= s_i <= i"),
                                        ((0, -1, 2), "0 <= s_i <= i"),
                                        ((0, 1), "expected n_layer=3"),
                                        ((0, 1, 0.5), "must be layer indices")])
def test_invalid_states_are_refused_clearly(bad, words):
    with pytest.raises(ValueError, match=words):
        validate_state(bad, 3)
    with pytest.raises(ValueError, match=words):
        DynamicTiedGPT(CFG, state=bad)
    with pytest.raises(ValueError, match="actions 0..2"):
        with_action((0, 1, 2), 2, 3)


def test_an_unknown_tying_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="mode must be one of.*'copy'"):
        DynamicTiedGPT(CFG, mode="copy")


@pytest.mark.parametrize("field, value", [("mode", "copy"), ("initial_state", "ones"),
                                          ("reward_norm", "zscore"), ("gamma", 1.5),
                                          ("epsilon_decay", 0.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DynamicTyingConfig(**{field: value})


# --------------------------------------------------- 2. the parameter count


STATES = [(0, 0, 0, 0), (0, 1, 2, 3), (0, 1, 1, 3), (0, 0, 2, 2), (0, 1, 2, 1)]


@pytest.mark.parametrize("mode", ["official", "shared"])
@pytest.mark.parametrize("state", STATES)
def test_trainable_count_follows_the_formula_and_the_optimizer_holds_only_those(mode,
                                                                                state):
    config = GPTConfig(vocab_size=11, context=8, d_model=8, n_layer=4, n_head=2)
    model = make(mode, (0, 1, 2, 3), config)
    opt = AdamW(param_groups(model, 0.1), lr=1e-3)
    loss_of(model).backward()
    opt.step()                                   # every layer has moments now
    model.set_tying(state)
    sync_optimizer(opt, model)
    model.zero_grad()
    loss_of(model).backward()
    opt.step()
    p_block = sum(p.numel() for p in model.blocks[0].parameters())
    outside = sum(p.numel() for m in (model.wte, model.wpe, model.ln_f)
                  for p in m.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected = outside + independent_layers(state) * p_block
    assert trainable_formula(model) == expected == count_parameters(model)
    assert sum(p.numel() for p in trainable) == expected
    assert set(opt.state) == {id(p) for p in trainable}
    # a copy has no gradient (official) or IS its root (shared), never its own moments
    for i, s in enumerate(state):
        for p in model.blocks[i].parameters():
            if s != i and mode == "official":
                assert not p.requires_grad and p.grad is None and id(p) not in opt.state
    # AdamW keeps m and v (8 bytes a float64) plus an 8-byte step count per array
    assert optimizer_state_bytes(opt) == sum(2 * p.data.nbytes + 8 for p in trainable)


def test_tying_drops_the_moments_and_untying_starts_fresh_ones():
    model = make("official", (0, 1, 2))
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    old2 = list(model.blocks[2].parameters())
    kept = {id(p): opt.state[id(p)]["m"] for p in model.blocks[1].parameters()}
    model.set_tying((0, 1, 1))
    sync_optimizer(opt, model)
    assert not any(id(p) in opt.state for p in old2)            # tied: no moments
    for p in model.blocks[1].parameters():                     # the source keeps its own
        assert opt.state[id(p)]["m"] is kept[id(p)] and int(opt.state[id(p)]["step"]) == 2

    model.set_tying((0, 1, 2))                                 # untie layer 2
    sync_optimizer(opt, model)
    new2 = list(model.blocks[2].parameters())
    assert all(p.requires_grad and id(p) not in opt.state for p in new2)
    opt.zero_grad()
    loss_of(model).backward()
    opt.step()
    assert all(int(opt.state[id(p)]["step"]) == 1 for p in new2)   # fresh moments
    assert all(int(opt.state[id(p)]["step"]) == 3 for p in model.blocks[1].parameters())


@pytest.mark.parametrize("state", [(0, 0, 0), (0, 1, 1), (0, 1, 2)])
def test_the_formula_counts_an_untied_head_once(state):
    """With tie_embeddings=False the head is one more (V, d) matrix outside the blocks."""
    model = make("official", state, replace(CFG, tie_embeddings=False))
    head = CFG.vocab_size * CFG.d_model
    assert trainable_formula(model) == count_parameters(model)
    assert trainable_formula(model) == trainable_formula(make("official", state)) + head


# ------------------------------------------------------ 3. alias semantics


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["official", "shared"])
def test_a_copy_equals_its_source_bitwise_after_optimizer_steps(mode, device):
    model = make(mode, (0, 1, 2), device=device)
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    model.set_tying((0, 1, 1))                                 # layer 2 copies layer 1
    sync_optimizer(opt, model)
    before = {k: backend.asnumpy(p.data).copy() for k, p in block_params(model, 1).items()}
    for _ in range(3):
        opt.zero_grad()
        loss_of(model, device).backward()
        opt.step()
    src, copy = block_params(model, 1), block_params(model, 2)
    for name in src:
        np.testing.assert_array_equal(backend.asnumpy(copy[name].data),
                                      backend.asnumpy(src[name].data), err_msg=name)
        assert copy[name].data is src[name].data             # one array, not a copy
        assert (copy[name] is src[name]) == (mode == "shared")
        assert not np.array_equal(backend.asnumpy(src[name].data), before[name]), name


@pytest.mark.parametrize("mode", ["official", "shared"])
def test_loading_a_checkpoint_keeps_the_copies_on_their_roots_arrays(mode):
    """Loading gives every Parameter a new array, which would cut an official copy
    from its root; the model re-points the copies, so they still move with the root."""
    saved = make(mode, (0, 1, 1), seed=0)
    model = make(mode, (0, 1, 1), seed=3)
    model.load_state_dict(saved.state_dict())
    np.testing.assert_array_equal(model(batch()[0])[0].numpy(), saved(batch()[0])[0].numpy())
    src, copy = block_params(model, 1), block_params(model, 2)
    for name in src:
        assert copy[name].data is src[name].data, name
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    opt.zero_grad()
    loss_of(model).backward()
    opt.step()
    for name in src:
        np.testing.assert_array_equal(copy[name].data, src[name].data, err_msg=name)


def test_untying_clones_the_values_and_then_the_layers_drift_apart():
    """nanotie's choice: an untied layer gets its OWN copy of what it computed with."""
    model = make("official", (0, 1, 1))
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    logits_tied = model(batch()[0])[0].numpy()
    model.set_tying((0, 1, 2))
    sync_optimizer(opt, model)
    np.testing.assert_array_equal(model(batch()[0])[0].numpy(), logits_tied)  # same function
    src, own = block_params(model, 1), block_params(model, 2)
    for name in src:
        assert own[name] is not src[name] and own[name].requires_grad
        assert not np.shares_memory(own[name].data, src[name].data)
        np.testing.assert_array_equal(own[name].data, src[name].data)
    opt.zero_grad()
    loss_of(model).backward()
    opt.step()
    assert not np.array_equal(own["attn.qkv.weight"].data, src["attn.qkv.weight"].data)


FD = dict(max_elements=8, n_directions=3)      # vectors element by element, matrices
#                                               along random directions: fast enough


def _untied_reference(model):
    """The same values, every layer independent: its layer-k gradients are the partial
    derivatives through layer k alone."""
    ref = make(model.mode, tuple(range(model.config.n_layer)), model.config,
               device=model.wte.weight.device)
    values = dict(model.named_parameters(remove_duplicate=False))
    for path, p in ref.named_parameters(remove_duplicate=False):
        p.data[...] = values[path].data
    return ref


@pytest.mark.parametrize("device", DEVICES)
def test_official_mode_gives_the_source_only_its_own_gradient(device):
    model = make("official", (0, 1, 1), device=device)
    ref = _untied_reference(model)
    # The reference's per-use gradients, verified by finite differences ...
    assert gradcheck_module(ref, lambda: loss_of(ref, device), **FD)
    model.zero_grad()
    loss_of(model, device).backward()
    for name, p in block_params(model, 1).items():
        np.testing.assert_allclose(backend.asnumpy(p.grad),
                                   backend.asnumpy(block_params(ref, 1)[name].grad),
                                   rtol=1e-10, atol=1e-13, err_msg=name)
        assert block_params(model, 2)[name].grad is None
    # ... and NOT the total derivative: moving the shared array moves both uses.
    assert not gradcheck_module(model, lambda: loss_of(model, device), **FD,
                                raise_exception=False)


@pytest.mark.parametrize("device", DEVICES)
def test_shared_mode_sums_the_gradients_of_both_uses(device):
    model = make("shared", (0, 1, 1), device=device)
    ref = _untied_reference(model)
    assert gradcheck_module(model, lambda: loss_of(model, device), **FD)   # total
    assert gradcheck_module(ref, lambda: loss_of(ref, device), **FD)
    for name, p in block_params(model, 1).items():
        own = backend.asnumpy(block_params(ref, 1)[name].grad)
        other = backend.asnumpy(block_params(ref, 2)[name].grad)
        np.testing.assert_allclose(backend.asnumpy(p.grad), own + other, rtol=1e-10,
                                   atol=1e-13, err_msg=name)
        assert np.abs(other).max() > 1e-8, name                # the copy's use counts


def test_moving_the_model_keeps_the_copies_on_their_sources_arrays():
    model = DynamicTiedGPT(CFG, mode="official", state=(0, 0, 1))
    model.double()
    for i in (1, 2):
        for name, p in block_params(model, i).items():
            assert p.dtype == np.float64 and p.data is block_params(model, 0)[name].data


# ------------------------------------------------- 4. s = 0: a universal transformer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["official", "shared"])
def test_all_zero_state_is_one_block_applied_L_times(mode, device):
    model = make(mode, (0, 0, 0), device=device)
    idx = backend.to_device(batch()[0], device)
    x = model.embed(nt.tensor(idx))
    for _ in range(CFG.n_layer):
        x = model.blocks[0](x)
    expected = backend.asnumpy(model.head(x).data)
    np.testing.assert_allclose(backend.asnumpy(model(idx)[0].data), expected, rtol=1e-12,
                               atol=1e-12)
    assert count_parameters(model) == count_parameters(model, trainable_only=True) == (
        trainable_formula(model))
    other = make(mode, (0, 1, 2), device=device)        # a real 3-block stack differs
    assert not np.allclose(backend.asnumpy(other(idx)[0].data), expected)


# --------------------------------------------------------- 5. agent arithmetic


def test_epsilon_decays_by_0_95_per_episode_down_to_0_01():
    agent = TyingAgent(3, DynamicTyingConfig(), seed=0)
    assert agent.epsilon == 1.0
    seen = [agent.end_episode() for _ in range(120)]
    assert seen[0] == pytest.approx(0.95) and seen[1] == pytest.approx(0.9025)
    # 0.95^89 = 0.0104 is still above the floor, 0.95^90 = 0.0099 is not
    assert seen[88] == pytest.approx(0.0104, abs=1e-4) and seen[89] == 0.01
    assert seen[-1] == 0.01


def test_one_td_update_matches_a_hand_computation_on_three_layers():
    """s = (0, 1, 0); layer 2 picks a = 1 (copy layer 1), so s' = (0, 1, 1); the
    reward -12.5 is clipped to -10. Q-network 3 -> 4 -> 6 in float64."""
    cfg = DynamicTyingConfig(q_hidden=4)
    agent = TyingAgent(3, cfg, seed=0)
    agent.q.double()
    rng = np.random.default_rng(5)
    W1, b1 = rng.normal(size=(4, 3)), rng.normal(size=4)
    W2, b2 = rng.normal(size=(6, 4)), rng.normal(size=6)
    for p, v in zip((agent.q.fc1.weight, agent.q.fc1.bias, agent.q.fc2.weight,
                     agent.q.fc2.bias), (W1, b1, W2, b2)):
        p.data[...] = v
    s, s_next, layer, a, r = np.array([0., 1., 0.]), np.array([0., 1., 1.]), 2, 1, -12.5

    def q(state):
        pre = W1 @ state + b1
        return W2 @ np.maximum(pre, 0) + b2, pre

    q_s, pre = q(s)
    y = -10.0 + 0.99 * q(s_next)[0][3:6].max()           # layer 2's slice is [3, 6)
    row = 3 + a
    dq = 2 * (q_s[row] - y)                               # d(q - y)^2 / dq
    h = np.maximum(pre, 0)
    g = {"W2": np.zeros_like(W2), "b2": np.zeros_like(b2)}
    g["W2"][row], g["b2"][row] = dq * h, dq
    dpre = dq * W2[row] * (pre > 0)
    g["W1"], g["b1"] = np.outer(dpre, s), dpre

    # greedy choice, then the update
    agent.epsilon = 0.0
    assert agent.act(s, layer) == int(np.argmax(q_s[3:6]))
    td = agent.update(s, layer, a, r, s_next)
    assert td == pytest.approx((q_s[row] - y) ** 2, rel=1e-12)
    # AdamW's first step: p <- p (1 - lr wd) - lr g / (|g| + eps)
    lr, wd, eps = cfg.q_lr, cfg.q_weight_decay, 1e-8
    for p, v, key in zip((agent.q.fc1.weight, agent.q.fc1.bias, agent.q.fc2.weight,
                          agent.q.fc2.bias), (W1, b1, W2, b2), ("W1", "b1", "W2", "b2")):
        expected = v * (1 - lr * wd) - lr * g[key] / (np.abs(g[key]) + eps)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-15, err_msg=key)


def test_exploration_picks_every_action_of_a_layer_uniformly():
    agent = TyingAgent(4, DynamicTyingConfig(), seed=1)
    picks = np.bincount([agent.act((0, 0, 0, 0), 3) for _ in range(2000)], minlength=4)
    assert len(picks) == 4 and picks.min() > 400               # 500 expected each


# ------------------------------------------------------------- the training loop


def _tiny_run_configs():
    config = GPTConfig(vocab_size=256, context=16, d_model=16, n_layer=3, n_head=2)
    tc = TrainConfig(steps=8, batch_size=4, warmup_steps=2, eval_interval=4,
                     eval_batches=2)
    return config, tc, DynamicTyingConfig(lm_steps_per_decision=2)


def test_without_an_agent_the_loop_is_the_house_training_loop_bit_for_bit():
    config, tc, tying = _tiny_run_configs()
    tr, va = train_val_split(prose_corpus(200_000))
    nt.manual_seed(0)
    vanilla = GPT(config)
    h = train(vanilla, tr, va, tc, progress=False)
    nt.manual_seed(0)
    model = DynamicTiedGPT(config, state=(0, 1, 2))
    run = train_dynamic(model, tr, va, tc, tying, progress=False)
    assert run.history.train_loss == h.train_loss and run.history.val_loss == h.val_loss
    for (name, p), q in zip(model.named_parameters(), vanilla.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_with_an_agent_every_decision_is_applied_and_recorded():
    config, tc, tying = _tiny_run_configs()
    tr, va = train_val_split(prose_corpus(200_000))
    nt.manual_seed(0)
    model = DynamicTiedGPT(config)
    agent = TyingAgent(3, tying, seed=0)
    run = train_dynamic(model, tr, va, tc, tying, agent=agent, progress=False)
    assert len(run.history.step) == tc.steps == len(run.trainable)
    assert len(run.decisions) == 2 * (config.n_layer - 1)        # 2 episodes
    assert run.episode_epsilon == [1.0, 0.95] and agent.epsilon == pytest.approx(0.9025)
    assert run.episode_state[-1] == list(model.tying_state)
    assert run.trainable[-1] == trainable_formula(model)
    for d in run.decisions:
        assert d["state"][d["layer"]] == d["action"] and d["reward"] < 0
        assert math.isfinite(d["td_loss"])
    with pytest.raises(ValueError, match="multiple"):
        train_dynamic(model, tr, va, TrainConfig(steps=6, batch_size=4), tying, agent=agent)


@pytest.mark.parametrize("n_layer, k", [(2, 3), (3, 2), (6, 4)])
def test_episode_count_takes_whole_episodes_of_n_layer_minus_1_decisions(n_layer, k):
    per_episode = (n_layer - 1) * k
    assert episode_count(3 * per_episode, n_layer, k) == 3
    with pytest.raises(ValueError, match="multiple"):
        episode_count(3 * per_episode + 1, n_layer, k)
    with pytest.raises(ValueError, match="n_layer >= 2"):
        episode_count(4, 1, k)


# ------------------------------------------------ controls, reward, the synthetic check


def test_decay_to_floor_reaches_the_floor_after_exactly_that_many_episodes():
    agent = TyingAgent(3, DynamicTyingConfig(epsilon_decay=decay_to_floor(7)), seed=0)
    seen = [agent.end_episode() for _ in range(9)]
    assert seen[5] > 0.01 and seen[6] == pytest.approx(0.01) and seen[-1] == 0.01
    assert 0.5 * decay_to_floor(10, start=0.5, floor=0.02) ** 10 == pytest.approx(0.02)
    with pytest.raises(ValueError, match="episodes"):
        decay_to_floor(0)


def test_standardised_reward_is_the_running_z_score_of_the_earlier_rewards():
    """While n <= 1 / (1 - reward_ema) the running mean and variance are exact, so
    the shaped reward is (r_n - mean(r_<n)) / std(r_<n) (population std)."""
    for scale in (5.0, 0.05):                       # any scale, below 1 too
        agent = TyingAgent(3, DynamicTyingConfig(reward_norm="ema", reward_ema=0.9,
                                                 reward_clip=100), seed=0)
        rewards = np.random.default_rng(3).normal(-40, scale, 8)
        shaped = [agent.shape(r) for r in rewards]
        assert shaped[:2] == [0.0, 0.0]                 # no scale yet
        for n in range(2, 8):
            earlier = rewards[:n]
            assert shaped[n] == pytest.approx((rewards[n] - earlier.mean()) / earlier.std(),
                                              rel=1e-9)
    raw = TyingAgent(3, DynamicTyingConfig(reward_clip=10), seed=0)
    assert raw.shape(-12.5) == -10.0 and raw.shape(-3.0) == -3.0      # the authors'
    with pytest.raises(ValueError, match="reward_norm"):
        DynamicTyingConfig(reward_norm="zscore")


def test_random_schedule_is_uniform_and_never_learns():
    policy = RandomSchedule(seed=2)
    picks = np.bincount([policy.act((0, 0, 0, 0), 3) for _ in range(2000)], minlength=4)
    assert len(picks) == 4 and picks.min() > 400                  # 500 expected each
    assert math.isnan(policy.update((0, 0, 0, 0), 3, 1, -5.0, (0, 0, 0, 1)))
    assert policy.end_episode() == 1.0 and policy.epsilon == 1.0


def _tiny_loop_run(policy, state, steps=12, reward_data=None):
    config, _, tying = _tiny_run_configs()
    tc = TrainConfig(steps=steps, batch_size=4, warmup_steps=2, eval_interval=4,
                     eval_batches=2)
    tr, va = train_val_split(prose_corpus(200_000))
    nt.manual_seed(0)
    model = DynamicTiedGPT(config, state=state)
    run = train_dynamic(model, tr, va, tc, tying, agent=policy, progress=False,
                        reward_data=reward_data)
    return model, run, config, tc


def test_fixed_pattern_trains_every_layer_then_ties_all_to_layer_0():
    policy = FixedSchedule((0, 1, 2), (0, 0, 0), switch=2)
    start = time.perf_counter()
    model, run, _, _ = _tiny_loop_run(policy, (0, 1, 2), steps=16)     # 4 episodes
    assert 0 < run.history.seconds < time.perf_counter() - start
    assert run.episode_state == [[0, 1, 2], [0, 1, 2], [0, 0, 0], [0, 0, 0]]
    assert run.episode_epsilon == [0.0] * 4          # a fixed schedule never explores
    assert run.trainable[0] > run.trainable[-1] == trainable_formula(model)
    # The tied layers' Adam moments go with them: at every step the optimizer keeps
    # two float32 moments per trained weight (8 bytes, plus a counter per tensor).
    per_weight = np.array(run.optimizer_bytes) / np.array(run.trainable)
    assert np.allclose(per_weight, 8.0, rtol=0.01), per_weight
    with pytest.raises(ValueError, match="s_0"):
        FixedSchedule((1, 1, 2), (0, 0, 0), switch=1)


def test_the_reward_comes_from_one_fixed_held_out_batch():
    """With reward_data, the last decision's reward is the model's final perplexity on
    the first windows of that data (the model does not change after it)."""
    held = np.frombuffer(prose_corpus(200_000)[-4_000:], dtype=np.uint8).astype(np.int64)
    model, run, config, tc = _tiny_loop_run(RandomSchedule(seed=1), (0, 0, 0),
                                            reward_data=held)
    x, y = held_out_batch(held, config.context, tc.batch_size)
    assert x.shape == (tc.batch_size, config.context)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])             # y is x shifted
    from nanotie.papers.dynamic_tying.loop import reward_of
    assert run.decisions[-1]["reward"] == reward_of(model, x, y)
    # Two windows are not a batch of four: the reward's batch is always a full one.
    with pytest.raises(ValueError, match="need"):
        held_out_batch(held[:2 * config.context + 1], config.context, tc.batch_size)


def test_agent_beats_the_random_schedule_on_a_reward_with_a_known_best_policy():
    """Every trained layer lowers the synthetic perplexity by 1 (noise 1): "train" is
    always the right action. After 40 episodes the agent (standardised reward) must
    choose "train" at the all-train state for more layers than chance does, and its
    greedy schedule from s = 0 must train more layers than a random one."""
    L, episodes = 6, 40
    shares, trained = [], []
    for seed in range(4):
        nt.manual_seed(seed)
        cfg = DynamicTyingConfig(reward_norm="ema", reward_clip=100,
                                 epsilon_decay=decay_to_floor(25))
        agent = TyingAgent(L, cfg, seed=seed)
        SyntheticReward(L, seed=seed + 1).train(agent, episodes)
        shares.append(greedy_train_share(agent, L))
        state = (0,) * L
        for layer in range(1, L):
            state = with_action(state, layer, int(np.argmax(agent.q_values(state, layer))))
        trained.append(independent_layers(state))
    chance = chance_train_share(L)
    random_trained = 1 + sum(1 / (i + 1) for i in range(1, L))     # E[#trained], uniform
    assert np.mean(shares) > chance + 0.1, (shares, chance)
    assert np.mean(trained) > random_trained + 0.5, (trained, random_trained)


def test_the_train_share_reads_the_greedy_action_and_chance_is_one_in_i_plus_1():
    class Prefers:                                   # Q-values that pick action a(i)
        def __init__(self, pick):
            self.pick = pick

        def q_values(self, state, layer):
            assert state == (0, 1, 2, 3)              # asked at the all-train state
            return np.eye(layer + 1)[self.pick(layer)]
    assert greedy_train_share(Prefers(lambda i: i), 4) == 1.0         # "train" everywhere
    assert greedy_train_share(Prefers(lambda i: 0), 4) == 0.0         # tie all to layer 0
    assert greedy_train_share(Prefers(lambda i: i if i < 3 else 0), 4) == pytest.approx(2 / 3)
    assert chance_train_share(4) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_synthetic_reward_rewards_each_trained_layer_by_its_gain():
    env = SyntheticReward(4, base=20.0, gain=2.0, noise=0.0)
    assert env((0, 1, 2, 3)) - env((0, 0, 0, 0)) == pytest.approx(2.0 * 3)
    means = SyntheticReward(4, noise=0.0).train(FixedSchedule((0, 1, 2, 3), (0, 1, 2, 3),
                                                             switch=0), 2)
    assert means == [pytest.approx(-(20 - 3)), pytest.approx(-(20 - 3))]    # 2, 3, 4 trained
    agent = TyingAgent(4, DynamicTyingConfig(epsilon_decay=0.5), seed=0)
    SyntheticReward(4).train(agent, 3)
    assert agent.epsilon == pytest.approx(0.5 ** 3)      # each episode ended once


# ------------------------------------------------------------------ memory, whole


def test_whole_step_memory_counts_activations_that_the_parameter_side_leaves_out():
    config = GPTConfig(vocab_size=64, context=16, d_model=16, n_layer=4, n_head=2)
    rng = np.random.default_rng(0)

    def measure(state, batch):
        nt.manual_seed(0)
        model = DynamicTiedGPT(config, state=state)
        before = [p.data.copy() for p in model.parameters()]
        x = rng.integers(0, 64, (batch, 16))
        whole = step_peak_bytes(model, x, np.roll(x, -1, axis=1))
        for b, p in zip(before, model.parameters()):
            np.testing.assert_array_equal(b, p.data)            # lr 0: nothing moved
        opt = AdamW(param_groups(model, 0.1), lr=0.0)
        for p in opt.parameters():
            p.grad = np.zeros_like(p.data)
        opt.step()
        return whole, training_memory_bytes(model, opt), trainable_formula(model)

    every, copies = (0, 1, 2, 3), (0, 0, 0, 0)
    (w_every, p_every, n_every), (w_copies, p_copies, n_copies) = (
        measure(every, 4), measure(copies, 4))
    assert w_every["weights"] == 4 * n_every and w_copies["weights"] == 4 * n_copies
    assert w_every["total"] > p_every["total"] and w_copies["total"] > p_copies["total"]
    assert w_copies["total"] < w_every["total"]                    # copies still save
    # a bigger batch: more activations in the whole step, the same parameter side
    w_big, p_big, _ = measure(every, 16)
    assert w_big["step"] > w_every["step"] and p_big["total"] == p_every["total"]


def test_whole_step_memory_leaves_a_callers_trace_running():
    import tracemalloc

    config = GPTConfig(vocab_size=64, context=16, d_model=16, n_layer=2, n_head=2)
    model = DynamicTiedGPT(config, state=(0, 1))
    x = np.random.default_rng(0).integers(0, 64, (2, 16))
    tracemalloc.start()
    try:
        kept = np.ones(10_000)                               # traced before the call
        step_peak_bytes(model, x, np.roll(x, -1, axis=1))
        assert tracemalloc.is_tracing()
        assert tracemalloc.get_traced_memory()[0] >= kept.nbytes   # nothing was reset
    finally:
        tracemalloc.stop()
    step_peak_bytes(model, x, np.roll(x, -1, axis=1))
    assert not tracemalloc.is_tracing()                      # its own trace: stopped


# ------------------------------------------------------------------ experiment

TINY = dict(model=GPTConfig(vocab_size=256, context=16, d_model=16, n_layer=3, n_head=2),
            train=TrainConfig(steps=8, batch_size=4, warmup_steps=1, eval_interval=4,
                              eval_batches=2),
            tying=DynamicTyingConfig(lm_steps_per_decision=2, reward_norm="ema",
                                     reward_clip=100.0),
            modes=("official", "shared"), seeds=2, shared_seeds=1, lrs=(3e-3,),
            grid_seeds=2, floor_at=0.5, fixed_switch=0.5)


def test_experiment_writes_its_report_results_and_plots_and_a_rerun_retrains_nothing(
        tmp_path):
    assert "dynamic-tying" in REGISTRY
    out = tmp_path / "dt"
    results = experiment.run(quick=True, out_dir=out, profile=TINY)
    for name in ("report.md", "results.json", "test_ppl.png", "val_curves.png",
                 "independent_layers.png", "memory.png", "tying_pattern.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    runs = saved["runs"]
    assert set(runs) == {"vanilla", "dynamic (official)", "random schedule",
                         "fixed pattern", "dynamic (shared)"}
    assert [len(runs[k]) for k in runs] == [2, 2, 2, 2, 1]
    v, d, f = runs["vanilla"][0], runs["dynamic (official)"][0], runs["fixed pattern"][0]
    assert v["trainable_final"] == count_parameters(GPT(TINY["model"]))
    assert f["final_state"] == [0, 0, 0] and f["state_per_episode"][0] == [0, 1, 2]
    assert d["trainable_final"] <= v["trainable_final"]
    assert d["epsilon_per_episode"][-1] < d["epsilon_per_episode"][0]
    assert d["val"]["ppl_best_in_run"] <= d["val"]["ppl_last_in_run"]
    assert d["test"]["bpb"] == pytest.approx(math.log2(d["test"]["ppl"]))
    assert d["step_peak"]["total"] > d["param_memory_final"]["total"]
    for label in ("vanilla", "dynamic (official)", "random schedule", "fixed pattern"):
        assert sorted(r["seed"] for r in runs[label]) == [0, 1], label
    assert set(saved["verdicts"]) >= {"dynamic vs vanilla", "dynamic vs random schedule",
                                      "dynamic vs fixed pattern"}
    assert all(x["outcome"] in ("holds", "does not hold", "within noise")
               for x in saved["verdicts"].values())
    assert set(results["headline"]) == {"claim", "where", "verdict", "figure"}
    assert 3 <= len(results["summary"]) <= 4
    report = (out / "report.md").read_text()
    assert "random schedule" in report and "Differences from the paper" in report
    assert "sync_optimizer" in report                           # the Adam-state remark
    assert "- **dynamic (shared)**: the same agent" in report and "seeds 0." in report
    judged = re.findall(r"above chance: \*\*([a-z ]+)\*\*", report)   # raw, standardised
    assert len(judged) == 2 and set(judged) <= {"holds", "does not hold", "within noise"}
    # the run cache: a second run loads every run and trains nothing
    again = experiment.run(quick=True, out_dir=out, profile=TINY)
    assert all(r["cached"] for rs in again["runs"].values() for r in rs)
    assert again["table"] == results["table"]


def test_the_earlier_grid_flags_a_rate_within_the_chosen_rates_seed_range(tmp_path):
    """The earlier grid kept only means: its chosen rate's point is this run's figures at
    the grid's seeds, and a rate nearer than their range is flagged as a near-tie."""
    profile = {**TINY, "modes": ("official",)}
    out = tmp_path / "dt"
    val = experiment.run(quick=True, out_dir=out, profile=profile)["tuning"]["vanilla"]
    chosen = val["grid"]["0.003"]
    assert chosen["max"] > chosen["min"]
    near = chosen["mean"] + (chosen["max"] - chosen["min"]) / 2
    grid = {"command": "(by hand)", "seeds": [0, 1],
            "ppl": {"vanilla": {3e-3: 0.5, 1e-2: near, 3e-2: chosen["mean"] + 100}}}
    experiment.run(quick=True, out_dir=out, profile={**profile, "earlier_grid": grid})
    report = (out / "report.md").read_text()
    row = [line for line in report.splitlines() if line.startswith("| vanilla |")][-1]
    assert f"**0.003: {chosen['mean']:.3f}**" in row and "0.500" not in row
    assert "Within the seeds' noise of the choice: vanilla (0.01)." in report


@pytest.mark.parametrize("bound, reach", [(3.89, "cannot hold"), (12.5, "is within reach")])
def test_the_memory_note_follows_the_depths_bound(bound, reach):
    """The most a state saves decides whether "up to 10x" is possible at that depth."""
    note = experiment._bound_note(6, bound)
    assert f"no state saves more than {bound:.2f}x" in note
    assert f'"up to 10x" {reach} at this depth' in note


def test_a_run_does_not_depend_on_what_ran_before_it_in_the_process():
    """Workers run different sequences of runs: a run's figures must be a function of
    its settings and seed alone (the agent's Q-network is seeded too)."""
    profile = {**TINY, "seeds": 1}
    splits = experiment.prose_splits()
    corpus = splits.hash()
    settings = experiment._settings("dynamic", "official", 3e-3, profile, corpus, 2)
    first = experiment.dynamic_tying_run(dict(settings), 0, "cpu")
    nt.manual_seed(123)
    np.random.default_rng(5).normal(size=10)
    nt.randn(7)                                # move nanotie's random stream on
    second = experiment.dynamic_tying_run(dict(settings), 0, "cpu")
    assert first["val"] == second["val"] and first["rewards"] == second["rewards"]
    assert first["actions"] == second["actions"]


def test_the_grid_picks_each_methods_rate_on_val_and_the_controls_take_dynamics(
        tmp_path):
    profile = {**TINY, "lrs": (1e-3, 1e-2), "modes": ("official",), "seeds": 2,
               "grid_seeds": 1}
    results = experiment.run(quick=True, out_dir=tmp_path / "dt", profile=profile)
    tuning = results["tuning"]
    for method in ("vanilla", "dynamic"):
        grid = tuning[method]["grid"]
        assert set(grid) == {"0.001", "0.01"}
        best = min(grid, key=lambda k: grid[k]["mean"])
        assert tuning[method]["best"] == float(best)
    lrs = results["learning_rates"]
    assert lrs["random schedule"] == lrs["fixed pattern"] == lrs["dynamic (official)"] \
        == tuning["dynamic"]["best"]
    assert lrs["vanilla"] == tuning["vanilla"]["best"]


@pytest.mark.slow
def test_quick_profile_trains_fewer_parameters_with_less_memory(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "dt")
    t = results["table"]
    v, d = t["vanilla"], t["dynamic (official)"]
    assert d["trainable_mean"]["mean"] < v["trainable_mean"]["mean"]
    assert d["param_mb_mean"]["mean"] < v["param_mb_mean"]["mean"]
    assert d["test_bpb"]["mean"] < results["unigram_bpb"]           # it still learned
