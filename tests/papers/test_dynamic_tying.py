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
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nanotie as nt
from nanotie import backend
from nanotie.data import prose_corpus, train_val_split
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import GPT, GPTConfig, count_parameters
from nanotie.nn.optim import AdamW, param_groups
from nanotie.papers import REGISTRY
from nanotie.papers.dynamic_tying import (DynamicTiedGPT, DynamicTyingConfig, QNetwork,
                                          TyingAgent, action_offset, experiment,
                                          independent_layers, n_actions,
                                          optimizer_state_bytes, q_output_size, root_of,
                                          sync_optimizer, train_dynamic, trainable_formula,
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
                                        ((0, 1), "expected n_layer=3")])
def test_invalid_states_are_refused_clearly(bad, words):
    with pytest.raises(ValueError, match=words):
        validate_state(bad, 3)
    with pytest.raises(ValueError):
        DynamicTiedGPT(CFG, state=bad)
    with pytest.raises(ValueError, match="actions 0..2"):
        with_action((0, 1, 2), 2, 3)


@pytest.mark.parametrize("field, value", [("mode", "copy"), ("lm_steps_per_decision", 0),
                                          ("gamma", 1.5), ("epsilon_decay", 0.0),
                                          ("epsilon_min", 2.0), ("initial_state", "ones")])
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


# ------------------------------------------------------------------ experiment

TINY = dict(model=GPTConfig(vocab_size=256, context=16, d_model=16, n_layer=3, n_head=2),
            train=TrainConfig(steps=8, batch_size=4, warmup_steps=1, eval_interval=4,
                              eval_batches=2),
            tying=DynamicTyingConfig(lm_steps_per_decision=2),
            modes=("official", "shared"))


def test_experiment_writes_its_report_results_and_plots(monkeypatch, tmp_path):
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY)
    assert "dynamic-tying" in REGISTRY
    results = experiment.run(quick=True, out_dir=tmp_path / "dt")
    for name in ("report.md", "results.json", "loss.png", "independent_layers.png",
                 "memory.png", "tying_pattern.png"):
        assert (tmp_path / "dt" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "dt" / "results.json").read_text())
    assert set(saved["runs"]) == {"vanilla", "dynamic (official)", "dynamic (shared)"}
    v, d = saved["runs"]["vanilla"], saved["runs"]["dynamic (official)"]
    assert v["trainable_final"] == count_parameters(GPT(TINY["model"]))
    assert len(set(v["optimizer_bytes_curve"])) == 1              # vanilla never changes
    assert d["trainable_final"] <= v["trainable_final"]
    assert len(d["independent_per_episode"]) == saved["episodes"] == 2
    assert d["val_bpb"] == pytest.approx(d["val_loss_nats"] / math.log(2))
    assert len(results["summary"]) <= 4
    assert f"{d['val_ppl']:.3f}" in (tmp_path / "dt" / "report.md").read_text()


@pytest.mark.slow
def test_quick_profile_trains_fewer_parameters_with_less_adam_state(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "dt")
    v, d = results["runs"]["vanilla"], results["runs"]["dynamic (official)"]
    assert d["trainable_mean"] < v["trainable_mean"]
    assert d["optimizer_bytes_mean"] < v["optimizer_bytes_mean"]
    assert d["val_bpb"] < results["unigram_bpb"]                 # it still learned
