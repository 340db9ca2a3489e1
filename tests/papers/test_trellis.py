"""TrellisNet: the spec's five properties, the LSTM it generalises, and the experiment.

1. LSTM -> TrellisNet matches the M-truncated LSTM in float64 (one layer with biases;
   several layers without; the bias caveat of several layers, tested as a known and
   exactly explained difference).
2. The parameter count does not depend on the number of levels.
3. Causality and the receptive field.
4. The cached W·x equals one convolution over [x; z] at every level.
5. Gradient checks; the shared weights' gradient is the sum over levels.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie.autograd import Tensor
from nanotie.gradcheck import gradcheck, gradcheck_module
from nanotie.nn import count_parameters
from nanotie.nn import functional as F
from nanotie.papers.trellis import (LSTM, AddingRegressor, LMConfig, LSTMConfig, SequenceLM,
                                    TrellisConfig, TrellisNet, UntiedTCN, adding_problem,
                                    from_lstm, locked_dropout, trellis_parameters,
                                    truncated_lstm)
from nanotie.papers.trellis import experiment

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]


def seq(shape, seed=0, device="cpu"):
    return Tensor(np.random.default_rng(seed).standard_normal(shape)).to(device)


def random_lstm(n_in, sizes, bias=True, seed=0, device="cpu"):
    nt.manual_seed(seed)
    return LSTM(LSTMConfig(n_in, sizes, bias)).double().to(device)


def perturb(model, scale=0.3, seed=0):
    """Move every parameter away from its (small) init so that nothing is near zero."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + rng.normal(0.0, scale, p.shape).astype(p.dtype)
    return model


def tiny_trellis(levels=3, dilations=None, weight_norm=False, n_in=3, n_hid=2, n_out=2,
                 seed=0, cls=TrellisNet):
    nt.manual_seed(seed)
    cfg = TrellisConfig(n_in=n_in, n_hid=n_hid, n_out=n_out, n_levels=levels,
                        dilations=dilations, weight_norm=weight_norm)
    return perturb(cls(cfg).double(), seed=seed)


# ------------------------------------------------------- 1. the equivalence


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 3, 5])
def test_one_layer_lstm_with_biases_is_exactly_a_trellisnet(device, M):
    lstm = random_lstm(4, (6,), bias=True, device=device)
    x = seq((2, 9, 4), device=device)
    net = from_lstm(lstm, M)
    assert net.config.n_levels == M and net.config.hidden == 6
    got, want = net(x).out.numpy(), truncated_lstm(lstm, x, M).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    # The truncation matters: for t >= M the full LSTM says something else.
    if M < 9:
        assert np.abs(lstm(x).out.numpy()[:, M:] - got[:, M:]).max() > 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_deep_lstm_without_biases_is_exactly_a_trellisnet(device):
    lstm = random_lstm(3, (5, 4, 2), bias=False, device=device)
    x = seq((2, 10, 3), seed=1, device=device)
    M = 4
    net = from_lstm(lstm, M)
    assert net.config.n_levels == M + 3 - 1
    assert (net.config.n_hid, net.config.n_out) == (9, 2)
    np.testing.assert_allclose(net(x).out.numpy(), truncated_lstm(lstm, x, M).numpy(),
                               rtol=0, atol=1e-13)


def test_converted_weights_have_the_block_sparse_structure():
    lstm = random_lstm(3, (5, 4), bias=True)
    net = from_lstm(lstm, 2)
    wx, wh = net.conv.weight_x.numpy(), net.conv.weight_h.numpy()
    H, n = 9, 3
    assert not wx[:, :n].any()                      # W1x = 0: no x_{t-1}
    W1h, W2h = wh[:, :H], wh[:, H:]
    for q in range(4):                              # gate groups i, o, g, f
        rows1, rows2 = slice(q * H, q * H + 5), slice(q * H + 5, q * H + 9)
        assert not W1h[rows1, 5:].any() and not W1h[rows2, :5].any()   # block diagonal
        assert not W2h[rows1].any() and not W2h[rows2, 5:].any()       # sub-diagonal only
        assert not wx[rows2].any()                  # x_t feeds layer 1 only
        np.testing.assert_array_equal(W2h[rows2, :5],
                                      lstm.layers[1].weight_ih.numpy()[q * 4:(q + 1) * 4])


def test_deep_lstm_with_biases_differs_in_the_documented_way():
    """Known difference: with biases, upper layers start one step early on a zero input.
    The plain truncated LSTM disagrees; the "staircase" reference agrees exactly; and
    with zero biases above layer 1 the conversion is exact again."""
    lstm = random_lstm(3, (5, 4), bias=True, seed=2)
    x = seq((2, 10, 3), seed=2)
    M = 4
    got = from_lstm(lstm, M)(x).out.numpy()
    plain = truncated_lstm(lstm, x, M).numpy()
    assert np.abs(got - plain).max() > 1e-4
    # Before the window fills (t < M) nothing is truncated and all layers agree.
    np.testing.assert_allclose(got[:, :M], plain[:, :M], rtol=0, atol=1e-13)
    np.testing.assert_allclose(got, truncated_lstm(lstm, x, M, staircase=True).numpy(),
                               rtol=0, atol=1e-13)
    lstm.layers[1].bias.data[:] = 0.0
    np.testing.assert_allclose(from_lstm(lstm, M)(x).out.numpy(),
                               truncated_lstm(lstm, x, M).numpy(), rtol=0, atol=1e-13)


def test_history_repackaging_turns_segments_into_the_full_lstm():
    """Segments no longer than M, each started from the last top-level (h, c) of the one
    before, reproduce the UNtruncated one-layer LSTM; without history they do not."""
    lstm = random_lstm(3, (5,), seed=3)
    x = seq((2, 14, 3), seed=3)
    net = from_lstm(lstm, 5)
    full = lstm(x).out.numpy()
    history, outs = None, []
    for start, stop in ((0, 5), (5, 9), (9, 14)):
        step = net(x[:, start:stop], history)
        history = step.history
        outs.append(step.out.numpy())
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=0, atol=1e-13)
    assert np.abs(net(x[:, 5:9]).out.numpy() - full[:, 5:9]).max() > 1e-4


def test_zero_history_is_no_history():
    net = tiny_trellis(dilations=(1, 2, 1))
    x = seq((2, 6, 3))
    H = net.config.hidden
    zero = Tensor(np.zeros((2, H)))
    np.testing.assert_array_equal(net(x, (zero, zero)).out.numpy(), net(x).out.numpy())


# ------------------------------------------------ 2. parameters and levels


@pytest.mark.parametrize("weight_norm", [False, True])
def test_parameter_count_does_not_depend_on_the_number_of_levels(weight_norm):
    counts = {L: count_parameters(TrellisNet(TrellisConfig(n_in=5, n_hid=4, n_out=3,
                                                           n_levels=L,
                                                           weight_norm=weight_norm)))
              for L in (1, 2, 7, 30)}
    assert len(set(counts.values())) == 1
    cfg = TrellisConfig(n_in=5, n_hid=4, n_out=3, weight_norm=weight_norm)
    assert counts[1] == trellis_parameters(cfg)
    untied = {L: count_parameters(UntiedTCN(TrellisConfig(n_in=5, n_hid=4, n_out=3,
                                                          n_levels=L)))
              for L in (1, 2, 7)}
    assert untied[7] == 7 * untied[1] and untied[2] == 2 * untied[1]


# -------------------------------------------- 3. causality and receptive field


@pytest.mark.parametrize("dilations", [None, (1, 2, 1)])
def test_causality_and_receptive_field(dilations):
    """Output at t depends on x_{t-R+1..t} only, R = 1 + sum of dilations (W1x taps
    x_{t-d} at every level), and on each of them."""
    net = tiny_trellis(levels=3, dilations=dilations)
    R = net.config.receptive_field()
    T, t = 12, 8
    x = seq((1, T, 3), seed=5).numpy()
    base = net(Tensor(x)).out.numpy()[0, t]
    rng = np.random.default_rng(6)
    for s in range(T):
        moved = x.copy()
        moved[0, s] += rng.normal(size=3)
        changed = np.abs(net(Tensor(moved)).out.numpy()[0, t] - base).max() > 1e-9
        assert changed == (t - R + 1 <= s <= t), (s, R)


def test_converted_lstm_has_receptive_field_exactly_M():
    """With W1x = 0 (a converted LSTM), M levels see exactly M inputs, as the spec says."""
    lstm = random_lstm(2, (3,), seed=7)
    net = from_lstm(lstm, 4)
    x = seq((1, 10, 2), seed=7).numpy()
    t = 8
    base = net(Tensor(x)).out.numpy()[0, t]
    for s in range(10):
        moved = x.copy()
        moved[0, s] += 1.0
        changed = np.abs(net(Tensor(moved)).out.numpy()[0, t] - base).max() > 1e-9
        assert changed == (t - 4 + 1 <= s <= t), s


# --------------------------------------------- 4. the cached input injection


@pytest.mark.parametrize("weight_norm", [False, True])
def test_cached_input_injection_equals_one_convolution_over_x_and_z(weight_norm):
    net = tiny_trellis(levels=4, dilations=(1, 2, 1, 3), weight_norm=weight_norm)
    x = seq((2, 9, 3), seed=8)
    H = net.config.hidden
    hist = (seq((2, H), seed=9), seq((2, H), seed=10))
    cached = net(x, hist).out
    concat = net.forward_concat(x, hist)
    np.testing.assert_allclose(cached.numpy(), concat.numpy(), rtol=0, atol=1e-13)
    w = np.random.default_rng(1).standard_normal(cached.shape)
    cached.backward(w)
    g1 = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    concat.backward(w)
    for a, p in zip(g1, net.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------- 5. gradients


def test_gradcheck_tiny_trellisnet_with_dilation_history_and_weight_norm():
    net = tiny_trellis(levels=3, dilations=(1, 2, 1), weight_norm=True)
    net.config.aux_every = 1
    x = seq((2, 5, 3), seed=11)
    H = net.config.hidden
    h0, c0 = seq((2, H), seed=12), seq((2, H), seed=13)
    w = Tensor(np.random.default_rng(14).standard_normal((2, 5, 2)))
    wa = Tensor(np.random.default_rng(15).standard_normal((2, 5, 2)))

    def loss():
        res = net(x, (h0, c0))
        return (res.out * w).sum() + sum((a * wa).sum() for a in res.aux) + res.history[1].sum()

    gradcheck_module(net, loss, max_elements=512)
    # Inputs and the history too.
    x.requires_grad_(True)
    h0.requires_grad_(True)
    c0.requires_grad_(True)
    gradcheck(lambda x, h, c: net(x, (h, c)).out, [x, h0, c0])


def test_shared_gradient_is_the_sum_over_levels():
    """An untied TCN whose levels hold equal copies of the shared weights computes the
    same function; the tied gradient is the sum of its per-level gradients."""
    tied = tiny_trellis(levels=4, dilations=(1, 1, 2, 1))
    untied = UntiedTCN(tied.config).double()
    for conv in untied.convs:
        for name in ("weight_x", "weight_h", "bias"):
            getattr(conv, name).data = getattr(tied.conv, name).data.copy()
    x = seq((2, 7, 3), seed=16)
    w = np.random.default_rng(17).standard_normal((2, 7, 2))
    out_t, out_u = tied(x).out, untied(x).out
    np.testing.assert_allclose(out_t.numpy(), out_u.numpy(), rtol=0, atol=1e-14)
    out_t.backward(w)
    out_u.backward(w)
    for name in ("weight_x", "weight_h", "bias"):
        per_level = [getattr(c, name).grad for c in untied.convs]
        # Every level contributes (W_h of level 0 reads z^(0) = 0, so it gets nothing).
        first = 1 if name == "weight_h" else 0
        assert all(np.abs(g).max() > 0 for g in per_level[first:])
        np.testing.assert_allclose(getattr(tied.conv, name).grad, sum(per_level),
                                   rtol=1e-10, atol=1e-14)


def test_gradcheck_lstm():
    lstm = perturb(random_lstm(3, (3, 2), seed=18), scale=0.2)
    x = seq((2, 4, 3), seed=19)
    w = Tensor(np.random.default_rng(20).standard_normal((2, 4, 2)))
    gradcheck_module(lstm, lambda: (lstm(x).out * w).sum(), max_elements=512)


# ------------------------------------------------------------ the pieces


def test_lstm_matches_pytorch():
    torch = pytest.importorskip("torch")
    lstm = random_lstm(3, (4,), seed=21)
    ref = torch.nn.LSTM(3, 4, batch_first=True).double()
    layer = lstm.layers[0]
    perm = np.r_[0:4, 12:16, 8:12, 4:8]      # ours i, o, g, f from PyTorch's i, f, g, o
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(layer.weight_ih.numpy()[np.argsort(perm)]))
        ref.weight_hh_l0.copy_(torch.from_numpy(layer.weight_hh.numpy()[np.argsort(perm)]))
        ref.bias_ih_l0.copy_(torch.from_numpy(layer.bias.numpy()[np.argsort(perm)]))
        ref.bias_hh_l0.zero_()
    x = seq((2, 6, 3), seed=22)
    want = ref(torch.from_numpy(x.numpy()))[0].detach().numpy()
    np.testing.assert_allclose(lstm(x).out.numpy(), want, rtol=1e-10, atol=1e-12)


def test_lstm_continues_from_its_history():
    """Each layer's last (h, c), handed back, continues the run: two halves equal the
    whole sequence, in every layer of a stack."""
    lstm = perturb(random_lstm(3, (4, 2), seed=23), scale=0.2)
    x = seq((2, 9, 3), seed=24)
    whole = lstm(x).out.numpy()
    first = lstm(x[:, :4])
    assert len(first.history) == 2
    second = lstm(x[:, 4:], first.history)
    np.testing.assert_allclose(np.concatenate([first.out.numpy(), second.out.numpy()], 1),
                               whole, rtol=0, atol=1e-13)


def test_lstm_init_is_pytorchs_uniform():
    """Every weight and bias ~ U(-1/sqrt(r), 1/sqrt(r)): inside the bound, and with the
    uniform's std bound / sqrt(3) (within 3%)."""
    r = 200
    lstm = random_lstm(50, (r,), seed=25)
    k = 1 / np.sqrt(r)
    for name, p in lstm.named_parameters():
        a = p.numpy()
        assert np.abs(a).max() <= k and a.std() == pytest.approx(k / np.sqrt(3), rel=0.03), name


def test_weight_norm_starts_at_v_and_is_blind_to_the_scale_of_v():
    """w = g v / ||v|| row by row, with g starting at ||v||: a fresh net computes what
    the plain net with the same v computes, and scaling v by 3 changes nothing."""
    x = seq((2, 6, 3), seed=31)
    outputs = []
    for weight_norm in (False, True):
        nt.manual_seed(4)
        net = TrellisNet(TrellisConfig(n_in=3, n_hid=2, n_out=2, n_levels=3, init_std=0.3,
                                       weight_norm=weight_norm)).double()
        outputs.append(net(x).out.numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6)   # g was set in float32
    normed = tiny_trellis(weight_norm=True)                  # gains moved off ||v||
    before = normed(x).out.numpy()
    for v in (normed.conv.weight_x, normed.conv.weight_h):
        v.data = 3.0 * v.data
    np.testing.assert_allclose(normed(x).out.numpy(), before, rtol=1e-12, atol=1e-15)


def test_locked_dropout_uses_one_mask_for_all_time_steps():
    nt.manual_seed(0)
    x = Tensor(np.ones((4, 10, 8)))
    y = locked_dropout(x, 0.5, training=True).numpy()
    assert (y == y[:, :1]).all()                       # same mask at every t
    assert set(np.unique(y)) == {0.0, 2.0}             # kept values scaled by 1/(1-p)
    assert locked_dropout(x, 0.5, training=False) is x


@pytest.mark.parametrize("field", ["dropout_h", "dropout_in"])
def test_dropout_is_active_only_in_training_and_shares_its_mask_across_levels(field):
    net = tiny_trellis(levels=3)
    setattr(net.config, field, 0.5)
    x = seq((2, 5, 3), seed=23)
    net.eval()
    a, b = net(x).out.numpy(), net(x).out.numpy()
    np.testing.assert_array_equal(a, b)
    net.train()
    assert np.abs(net(x).out.numpy() - a).max() > 0


def test_language_model_ties_decoder_and_uses_the_auxiliary_loss():
    """loss = CE(top level) + aux_weight * the mean CE of the intermediate levels, all
    read out through the one tied decoder; the embedding starts at N(0, embed_std^2)."""
    nt.manual_seed(0)
    core = TrellisNet(TrellisConfig(n_in=8, n_hid=4, n_out=8, n_levels=6, aux_every=2))
    lm = SequenceLM(LMConfig(d_embed=8, context=6, aux_weight=0.5), core, 8)
    assert lm.decoder.weight is lm.embedding.weight
    assert lm.embedding.weight.numpy().std() == pytest.approx(0.3, rel=0.05)
    idx = np.random.default_rng(0).integers(0, 256, (2, 6))
    tgt = np.random.default_rng(1).integers(0, 256, (2, 6))
    logits, loss = lm(idx, tgt)
    aux = core(lm.embedding(idx)).aux
    assert logits.shape == (2, 6, 256) and len(aux) == 2
    aux_ce = [F.cross_entropy(lm.decoder(a), tgt).item() for a in aux]
    lm.config.aux_weight = 0.0
    _, plain = lm(idx, tgt)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * np.mean(aux_ce), rel=1e-6)
    no_aux = SequenceLM(LMConfig(d_embed=8, context=6, aux_weight=0.5),
                        TrellisNet(TrellisConfig(n_in=8, n_hid=4, n_out=8, n_levels=6)), 8)
    no_aux.load_state_dict(lm.state_dict())          # the same weights, no aux levels
    assert no_aux(idx, tgt)[1].item() == plain.item()
    no_targets = lm(idx)
    assert no_targets[1] is None
    np.testing.assert_array_equal(no_targets[0].numpy(), logits.numpy())
    with pytest.raises(ValueError, match="n_out"):
        SequenceLM(LMConfig(d_embed=8), core, 5)


def test_adding_problem_targets_are_the_sum_of_the_two_marked_values():
    x, y = adding_problem(64, 10, np.random.default_rng(0))
    assert x.shape == (64, 10, 2) and y.shape == (64,)
    marks = x[..., 1]
    assert (marks.sum(1) == 2).all()
    assert (marks[:, :5].sum(1) == 1).all() and (marks[:, 5:].sum(1) == 1).all()
    np.testing.assert_allclose((x[..., 0] * marks).sum(1), y, rtol=1e-6)
    # Each mark can fall on every step of its half (T odd: the halves are 0..3, 4..8).
    marks = adding_problem(2000, 9, np.random.default_rng(1))[0][..., 1]
    first, second = marks[:, :4].argmax(1), 4 + marks[:, 4:].argmax(1)
    assert set(first) == set(range(4)) and set(second) == set(range(4, 9))


def test_the_adding_regressor_reads_the_last_step():
    nt.manual_seed(0)
    core = TrellisNet(TrellisConfig(n_in=2, n_hid=4, n_out=3, n_levels=3))
    model = AddingRegressor(core, 3)
    x, _ = adding_problem(4, 7, np.random.default_rng(2))
    y = model(Tensor(x)).numpy()
    x[:, -1, 0] += 1.0                                  # only the last step's value
    assert y.shape == (4,) and np.abs(model(Tensor(x)).numpy() - y).min() > 1e-6


def test_config_refuses_dilations_that_do_not_match_the_levels():
    with pytest.raises(ValueError, match="dilations"):
        TrellisConfig(n_levels=3, dilations=(1, 2))
    with pytest.raises(ValueError, match="dilations must be >= 1"):
        TrellisConfig(n_levels=2, dilations=(0, 1))
    with pytest.raises(ValueError, match="dropout_h"):
        TrellisConfig(dropout_h=1.0)


def test_loss_decreases_when_training_a_tiny_trellis_lm():
    from nanotie.nn.optim import AdamW
    nt.manual_seed(0)
    core = TrellisNet(TrellisConfig(n_in=8, n_hid=8, n_out=8, n_levels=3, init_std=0.1))
    lm = SequenceLM(LMConfig(d_embed=8, context=8), core, 8)
    data = np.frombuffer(b"abcabcabcabcabcabcabcabcabcabc", dtype=np.uint8).astype(np.int64)
    x, y = data[None, :-1], data[None, 1:]
    opt = AdamW(list(lm.parameters()), lr=3e-2)
    first = None
    for _ in range(40):
        _, loss = lm(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


# ----------------------------------------------------------- the experiment


TINY = experiment.Profile(
    context=8, d_embed=4, hidden=8, dilations=(1, 2), depths=(1, 2), lm_steps=3, lm_batch=2,
    lm_warmup=1, lm_eval_interval=2, eval_batches=1, lm_lrs=(1e-3, 3e-3), seeds=2,
    adding_T=6, adding_dilations=(1, 2), adding_hidden=10, adding_steps=3, adding_batch=4,
    adding_lrs=(1e-2, 2e-2), adding_eval=8)


@pytest.fixture
def tiny_profile(monkeypatch):
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY)
    return TINY


def test_experiment_writes_report_results_plots_and_a_run_cache(tiny_profile, tmp_path,
                                                                monkeypatch):
    res = experiment.run(quick=True, out_dir=tmp_path / "trellis")
    for name in ("report.md", "results.json", "lm_loss.png", "lm_test.png", "depth.png",
                 "adding.png", "equivalence.png"):
        assert (tmp_path / "trellis" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "trellis" / "results.json").read_text())
    eq = saved["equivalence"]
    assert eq["one layer, biases"]["max_abs_diff"] < 1e-12
    assert eq["two layers, no biases"]["max_abs_diff"] < 1e-12
    assert eq["two layers, biases"]["max_abs_diff_staircase"] < 1e-12
    assert eq["repackaged segments vs full LSTM"]["max_abs_diff"] < 1e-12
    sweep = saved["depth_sweep"]["trellis"]
    assert len({r["core_parameters"] for r in sweep}) == 1          # depth costs nothing
    assert set(saved["lm"]) == {"TrellisNet", "LSTM", "untied TCN"}
    for r in saved["lm"].values():                                    # every seed, both splits
        assert r["test_bpb"]["n"] == TINY.seeds and 0 < r["test_bpb"]["mean"] < 9
        assert r["lr"] in TINY.lm_lrs
    assert set(saved["lm_tuning"]["TrellisNet"]["grid"]) == {str(lr) for lr in TINY.lm_lrs}
    assert len(saved["adding"]) == 4 and set(saved["verdicts"]) >= {"lm_vs_lstm", "lm_vs_tcn"}
    assert set(res["headline"]) == {"claim", "where", "verdict", "figure"}
    report = (tmp_path / "trellis" / "report.md").read_text()
    # Each model's receptive field is printed beside its result.
    assert "| receptive field | test bpb |" in report and "all 8 (recurrent)" in report

    # A rerun reads every run from the cache: no model is trained again.
    def no_training(*args, **kwargs):
        raise AssertionError("a rerun retrained a model")

    monkeypatch.setattr(experiment, "train", no_training)
    monkeypatch.setattr(experiment, "train_adding", no_training)
    again = experiment.run(quick=True, out_dir=tmp_path / "trellis")
    assert again["lm"] == res["lm"] and again["headline"] == res["headline"]
    assert list((tmp_path / "cache" / "runs").glob("lm_run-*.json"))


def test_a_one_rate_adding_grid_is_reported_untuned(tmp_path):
    """A profile given to run() is labelled custom, and the library's own stay as they are."""
    quick = experiment.PROFILES["quick"]
    res = experiment.run(out_dir=tmp_path / "trellis", profile=replace(TINY, adding_lrs=(2e-2,)))
    assert res["profile"] == "custom" and experiment.PROFILES["quick"] is quick
    assert "set by hand: untuned" in (tmp_path / "trellis" / "report.md").read_text()


def test_lm_models_see_the_whole_context():
    """The dilated TrellisNet and TCN of each profile reach back over the whole training
    window: the first byte of a window moves the prediction at its last position (with
    dilation 1 and 4 levels they saw 5 bytes of 32)."""
    for name, prof in experiment.PROFILES.items():
        assert 1 + sum(prof.dilations) >= prof.context, name
    prof = experiment.PROFILES["quick"]
    budget = trellis_parameters(experiment.trellis_config(prof.d_embed, prof.hidden,
                                                          len(prof.dilations)))
    x = np.random.default_rng(0).standard_normal((1, prof.context, prof.d_embed))
    moved = x.copy()
    moved[0, 0] += 1.0
    for kind in ("trellis", "tcn"):
        nt.manual_seed(0)
        core = perturb(experiment.build_core(kind, prof.d_embed, budget, prof.hidden,
                                             len(prof.dilations), dilations=prof.dilations))
        assert experiment.receptive_field(core) >= prof.context
        last = [core(Tensor(a.astype(np.float32))).out.numpy()[0, -1] for a in (x, moved)]
        assert np.abs(last[0] - last[1]).max() > 1e-6, kind
    # The depth sweep: depth L sees 2^L bytes, for the tied and the untied model alike.
    settings = [experiment.lm_settings(prof, k, L, 1e-3, budget, "c")
                for L in prof.depths for k in ("trellis", "tcn")]
    for s in settings:
        cfg = experiment.trellis_config(4, 8, s["levels"], tuple(s["dilations"]))
        assert cfg.receptive_field() == 2 ** s["levels"]


def test_tuning_reads_val_only_and_the_report_shows_the_test_split(tiny_profile, tmp_path,
                                                                    monkeypatch):
    """Make the test figures favour the other rate: the choice must not move."""
    real = experiment.lm_run

    def skewed(settings, seed, device="cpu"):
        out = real(settings, seed, device)
        out["test"]["bpb"] += 10.0 if settings["lr"] == TINY.lm_lrs[0] else -10.0
        out["val"]["bpb"] += -1.0 if settings["lr"] == TINY.lm_lrs[0] else 1.0
        return out

    monkeypatch.setattr(experiment, "lm_run", skewed)
    res = experiment.run(quick=True, out_dir=tmp_path / "trellis")
    assert all(v["lr"] == TINY.lm_lrs[0] for v in res["lm"].values())
    assert all(v["test_bpb"]["mean"] > 10 for v in res["lm"].values())


def test_adding_control_is_the_mean_predictor_on_the_same_held_out_sets():
    prof = experiment.Profile(adding_T=12, adding_eval=64)
    control = experiment.mean_predictor_mse(prof)
    for name, seed in (("val", 10**6), ("test", 10**6 + 1)):
        _, y = adding_problem(64, 12, np.random.default_rng(seed))
        assert control[name] == pytest.approx(float(np.mean((y - 1.0) ** 2)))
    assert control["val"] != control["test"]            # two different held-out sets


def test_equivalence_plot_labels_exact_zeros_as_zero(tmp_path, monkeypatch):
    texts = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.text

    def spy(self, x, y, s, *a, **k):
        texts.append(s)
        return real(self, x, y, s, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", spy)
    experiment.plot_equivalence({"exact": {"max_abs_diff": 0.0},
                                 "rounding": {"max_abs_diff": 3e-17}}, tmp_path / "eq.png")
    assert any("0 (exact)" in t for t in texts) and not any("e-300" in t for t in texts)


def test_notebook_writes_nothing_into_runs(tmp_path):
    """``NANOTIE_QUICK=1 python notebooks/07_trellisnet.py`` in a folder that holds a
    real ``runs/trellis`` must leave it alone (it used to overwrite it with a 20-step
    run still labelled "quick")."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "notebooks" / "07_trellisnet.py"
    runs = tmp_path / "runs" / "trellis"
    runs.mkdir(parents=True)
    (runs / "report.md").write_text("a full run's report\n")
    env = {**os.environ, "NANOTIE_QUICK": "1", "MPLBACKEND": "Agg",
           "TMPDIR": str(tmp_path)}                    # its own temporary runs land here
    done = subprocess.run([sys.executable, str(source)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == ["report.md", "trellis"]
    assert (runs / "report.md").read_text() == "a full run's report\n"


@pytest.mark.slow
def test_quick_profile_claims(tmp_path):
    res = experiment.run(quick=True, out_dir=tmp_path / "trellis")
    # Every LM beats the unigram model; the dilated TrellisNet solves the adding problem
    # better than predicting the mean, and better than its undilated self.
    assert all(r["test_bpb"]["max"] < res["unigram_test_bpb"] for r in res["lm"].values())
    add = res["adding"]
    control = res["adding_mean_predictor_mse"]["test"]
    assert add["TrellisNet (dilated)"]["test_mse"]["max"] < 0.5 * control
    assert add["TrellisNet (dilated)"]["test_mse"]["max"] < \
        add["TrellisNet, no dilation"]["test_mse"]["min"]
