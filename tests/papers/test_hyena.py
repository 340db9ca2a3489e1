"""Hyena and MultiHyena: gradients, causality, the FFT convolution, the head tie,
the recurrent form, the counts, the recall task, and the experiment's outputs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie import Tensor, backend
from nanotie.gradcheck import gradcheck, gradcheck_module
from nanotie.nn import count_parameters
from nanotie.nn import functional as F
from nanotie.papers.hyena import (HyenaConfig, HyenaLM, HyenaOperator, ImplicitFilter,
                                  MultiHyenaOperator, decay_rates, linear_attention_with_decay,
                                  short_conv)
from nanotie.papers.hyena import experiment
from nanotie.papers.distillery.study import DistillStudy
from nanotie.papers.hyena.recall import (IGNORE, RecallConfig, episode_stream,
                                         recall_accuracy, recall_episodes)
from nanotie.data import iter_eval_batches
from nanotie.train import TrainConfig

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]

SMALL = dict(filter_width=8, filter_emb_dim=5, filter_inner=1)


def rng(seed=0):
    return np.random.default_rng(seed)


def direct_causal_conv(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """y[..., t] = sum_{s<=t} h[..., s] u[..., t-s], by the definition (a double loop)."""
    L = u.shape[-1]
    y = np.zeros(np.broadcast_shapes(u.shape, h.shape[:-1] + (L,)))
    for t in range(L):
        for s in range(min(t + 1, h.shape[-1])):
            y[..., t] += h[..., s] * u[..., t - s]
    return y


def operator(cls=HyenaOperator, d=4, max_len=8, seed=0, **kwargs):
    backend.manual_seed(seed)
    return cls(d, max_len, **{**SMALL, **kwargs}).double()


# ------------------------------------------------------------ fftconv itself


def test_fftconv_equals_the_direct_convolution_at_every_length():
    # h is as long as u and large at its END, the worst case for wrap-around.
    for L in range(1, 34):
        u, h = rng(L).standard_normal((2, 3, L)), rng(L + 100).standard_normal((3, L))
        h[..., -1] += 5.0
        y = F.fftconv(Tensor(u), Tensor(h)).numpy()
        np.testing.assert_allclose(y, direct_causal_conv(u, h), atol=1e-12, err_msg=f"L={L}")


def test_fft_length_leaves_room_for_the_whole_linear_convolution():
    # The linear convolution of two length-L signals has 2L-1 samples; a shorter FFT
    # wraps the tail onto the start. First show that wrap-around would be caught ...
    L = 16
    u, h = rng(1).standard_normal(L), rng(2).standard_normal(L)
    circular = np.fft.irfft(np.fft.rfft(u, L) * np.fft.rfft(h, L), L)
    assert np.abs(circular - direct_causal_conv(u, h)).max() > 1e-3
    # ... then that the size fftconv uses never allows it.
    for n in range(1, 5000):
        assert backend.fft_size(2 * n - 1) >= 2 * n - 1


def test_fftconv_gradient_broadcast_over_channels():
    u = Tensor(rng(3).standard_normal((2, 3, 7)), requires_grad=True)
    h = Tensor(rng(4).standard_normal((3, 7)), requires_grad=True)
    assert gradcheck(F.fftconv, [u, h])


# ---------------------------------------------------------------- short conv


def test_short_conv_matches_its_formula():
    x, w, b = rng(5).standard_normal((2, 3, 6)), rng(6).standard_normal((3, 3)), \
        rng(7).standard_normal(3)
    y = short_conv(Tensor(x), Tensor(w), Tensor(b)).numpy()
    want = np.zeros_like(x) + b[:, None]
    for t in range(6):
        for j in range(3):
            src = t - 2 + j
            if src >= 0:
                want[:, :, t] += w[:, j] * x[:, :, src]
    np.testing.assert_allclose(y, want, atol=1e-12)


def test_short_conv_matches_torch_conv1d():
    torch = pytest.importorskip("torch")
    x, w, b = rng(8).standard_normal((2, 4, 9)), rng(9).standard_normal((4, 3)), \
        rng(10).standard_normal(4)
    ref = torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(w)[:, None], torch.tensor(b),
                                     padding=2, groups=4)[..., :9].numpy()
    np.testing.assert_allclose(short_conv(Tensor(x), Tensor(w), Tensor(b)).numpy(), ref,
                               atol=1e-12)


def test_short_conv_gradient():
    args = [Tensor(rng(11).standard_normal(s), requires_grad=True)
            for s in ((2, 3, 5), (3, 3), (3,))]
    assert gradcheck(short_conv, args)


def test_short_conv_layer_starts_like_torch_conv1d_and_reset_redraws_it():
    """PyTorch's Conv1d default, U(-1/sqrt(K), 1/sqrt(K)) with K the kernel size (a
    depthwise kernel's fan-in): over 6,000 draws the std is within 5% of bound/sqrt(3)."""
    from nanotie.papers.hyena.operator import ShortConv

    backend.manual_seed(0)
    conv = ShortConv(2000, kernel_size=3)
    for _ in range(2):
        w = conv.weight.numpy()
        bound = 1 / np.sqrt(3)
        assert np.abs(w).max() <= bound and abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.05
        before = w.copy()
        conv.reset_parameters()
        assert not np.array_equal(conv.weight.numpy(), before)


# ------------------------------------------------------------ implicit filter


def test_positional_features_are_the_docstrings():
    """PE(tau) = [t_tau, cos(2 pi f_k tau / L), -sin(2 pi f_k tau / L)], t_tau = tau / (L - 1),
    f_k = linspace(1e-4, K - 1, K), written out one entry at a time."""
    from nanotie.papers.hyena.filters import positional_features

    L, E = 7, 7
    K = (E - 1) // 2
    t, pe = positional_features(L, E)
    assert t.shape == (L,) and pe.shape == (L, E)
    for tau in range(L):
        assert t[tau] == pytest.approx(tau / (L - 1)) and pe[tau, 0] == t[tau]
        for k in range(K):
            f_k = 1e-4 + k * (K - 1 - 1e-4) / (K - 1)
            angle = 2 * np.pi * f_k * tau / L
            assert pe[tau, 1 + k] == pytest.approx(np.cos(angle), abs=1e-12)
            assert pe[tau, 1 + K + k] == pytest.approx(-np.sin(angle), abs=1e-12)


def test_the_filters_fixed_features_are_float32_buffers_that_are_not_saved():
    """PE and the decay window are functions of the settings: rebuilt, never in the
    state dict, and in the filter's dtype (float32 unless asked)."""
    filt = ImplicitFilter(3, 8)
    saved = set(filt.state_dict()) - {"__ties__"}
    assert saved == {name for name, _ in filt.named_parameters()}
    assert filt.pe.dtype == filt.window.dtype == np.float32
    assert filt(8).dtype == np.float32


def test_implicit_filter_gradient_including_the_shared_frequencies():
    backend.manual_seed(1)
    filt = ImplicitFilter(3, 10, emb_dim=5, width=6, n_inner=2, omega=2.0).double()
    w = Tensor(rng(12).standard_normal((3, 10)))
    assert gradcheck_module(filt, lambda: (filt(10) * w).sum(), max_elements=64)


def test_filters_are_a_function_of_position_not_of_length():
    backend.manual_seed(2)
    filt = ImplicitFilter(4, 32, emb_dim=5, width=8).double()
    full = filt(32).numpy()
    for L in (1, 7, 20):
        # Equal up to round-off: BLAS may sum a product of L rows in another order than
        # one of 32 (it does on some CPUs). A filter that depended on L, through t / L
        # say, would differ in the first digits.
        np.testing.assert_allclose(filt(L).numpy(), full[:, :L], rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="max_len"):
        filt(33)


def test_decay_window_spans_the_fast_and_slow_rates():
    rates = decay_rates(5, fast_decay=0.3, slow_decay=1.5, target=1e-2)
    assert np.all(np.diff(rates) > 0)                         # channel 0 slowest
    np.testing.assert_allclose(np.exp(-0.3 * rates[-1]), 1e-2)   # fast reaches target at 0.3
    np.testing.assert_allclose(np.exp(-1.5 * rates[0]), 1e-2)    # slow at 1.5
    backend.manual_seed(3)
    filt = ImplicitFilter(5, 50, emb_dim=3, width=4)
    window = filt.window.numpy()                              # (L, C)
    assert np.all(np.diff(window, axis=0) < 0) and np.all(window[-1, :-1] > window[-1, 1:])


def test_the_sine_frequencies_are_one_parameter_used_by_every_layer():
    backend.manual_seed(4)
    filt = ImplicitFilter(2, 6, emb_dim=3, width=4, n_inner=2)
    # Tied grad = sum of untied grads: differentiate each layer's use separately by
    # giving layer i its own copy of omega.
    w = Tensor(rng(13).standard_normal((2, 6)))
    (filt(6) * w).sum().backward()
    tied_grad = filt.freq.grad.copy()
    copies = [Tensor(filt.freq.data.copy(), requires_grad=True) for _ in range(3)]
    z = (copies[0] * filt.inp(filt.pe[:6])).sin()
    for layer, f in zip(filt.inner, copies[1:]):
        z = (f * layer(z)).sin()
    ((filt.out(z) * filt.window[:6]).transpose(0, 1) * w).sum().backward()
    np.testing.assert_allclose(tied_grad, sum(c.grad for c in copies), rtol=1e-5, atol=1e-6)
    assert sum(p is filt.freq for p in filt.parameters()) == 1


# ------------------------------------------------------------------- operator


@pytest.mark.parametrize("cls,extra", [(HyenaOperator, {}), (MultiHyenaOperator, {"n_head": 2})])
def test_operator_gradient(cls, extra):
    op = operator(cls, d=4, max_len=6, **extra)
    u = Tensor(rng(14).standard_normal((2, 6, 4)), requires_grad=True)
    assert gradcheck(lambda u: op(u), [u], name=f"{cls.__name__} input")
    w = Tensor(rng(15).standard_normal((2, 6, 4)))
    assert gradcheck_module(op, lambda: (op(u) * w).sum(), max_elements=48)


def test_hyena_matches_its_equations_with_a_direct_convolution():
    op = operator(d=3, max_len=7, seed=5)
    u = rng(16).standard_normal((2, 7, 3))
    z = u @ op.in_proj.weight.numpy().T + op.in_proj.bias.numpy()          # (B, L, 3D)
    z = short_conv(Tensor(z.transpose(0, 2, 1)), op.short.weight, op.short.bias).numpy()
    x0, x1, v = z[:, :3], z[:, 3:6], z[:, 6:]
    w = x1 * v
    y = x0 * (direct_causal_conv(w, op.filter_array(7)) + op.dskip_array()[:, None] * w)
    want = y.transpose(0, 2, 1) @ op.out_proj.weight.numpy().T + op.out_proj.bias.numpy()
    np.testing.assert_allclose(op(Tensor(u)).numpy(), want, atol=1e-10)


def test_multihyena_outer_product_form_equals_a_per_channel_reference():
    op = operator(MultiHyenaOperator, d=6, max_len=5, seed=6, n_head=2)       # N = 3
    q, k, v = (rng(s).standard_normal((2, 6, 5)) for s in (17, 18, 19))
    got = op.mix(Tensor(q), Tensor(k), Tensor(v)).numpy()
    h, dskip = op.filter_array(5), op.dskip_array()
    want = np.zeros_like(q)
    for m in range(2):                         # head m: channels 3m .. 3m+2
        for i in range(3):
            for j in range(3):                 # channel (i, j) of the head's N^2, filter h^m
                z = k[:, 3 * m + i] * v[:, 3 * m + j]                          # (B, L)
                conv = direct_causal_conv(z, h[m]) + dskip[m] * z
                want[:, 3 * m + j] += q[:, 3 * m + i] * conv
    np.testing.assert_allclose(got, want, atol=1e-10)


class SinglePole(MultiHyenaOperator):
    """MultiHyena whose every head uses h_t = lam^t."""

    lam = 0.8

    def filters(self, length):
        xp = backend.xp_of(self.dskip.data)
        h = self.lam ** xp.arange(length, dtype=self.dskip.dtype)
        return Tensor(xp.broadcast_to(h, (self.n_filters, length)).copy())


@pytest.mark.parametrize("device", DEVICES)
def test_multihyena_with_one_pole_is_linear_attention_with_decay(device):
    op = operator(SinglePole, d=8, max_len=12, seed=7, n_head=2).to(device)
    q, k, v = (Tensor(backend.to_device(rng(s).standard_normal((2, 8, 12)), device))
               for s in (20, 21, 22))
    got = op.mix(q, k, v).numpy().reshape(2, 2, 4, 12)
    want = linear_attention_with_decay(*(backend.asnumpy(t.data).reshape(2, 2, 4, 12)
                                         for t in (q, k, v)), SinglePole.lam, op.dskip_array())
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_multihyena_with_one_channel_per_head_is_hyena():
    hy = operator(HyenaOperator, d=4, max_len=6, seed=8)
    mh = operator(MultiHyenaOperator, d=4, max_len=6, seed=9, n_head=4)     # N = 1
    mh.load_state_dict(hy.state_dict())
    u = Tensor(rng(23).standard_normal((2, 6, 4)))
    np.testing.assert_allclose(mh(u).numpy(), hy(u).numpy(), atol=1e-12)


def filter_params(emb, width, inner, channels):
    """The implicit filter's parameters: first layer, inner layers, output, omega."""
    return (emb * width + width) + inner * (width * width + width) + width * channels + width


@pytest.mark.parametrize("d,heads", [(8, 2), (12, 3), (16, 16)])
def test_filter_and_parameter_counts_follow_their_formulas(d, heads):
    kw = dict(filter_width=5, filter_emb_dim=7, filter_inner=2)
    hy = HyenaOperator(d, 10, **kw)
    mh = MultiHyenaOperator(d, 10, n_head=heads, **kw)
    assert (hy.n_filters, hy.filter_array().shape) == (d, (d, 10))
    assert (mh.n_filters, mh.filter_array().shape) == (heads, (heads, 10))
    assert mh.dskip_array().shape == (heads,)
    shared = (3 * d * d + 3 * d) + (3 * d * 3 + 3 * d) + (d * d + d)   # in, short, out
    assert count_parameters(hy) == shared + filter_params(7, 5, 2, d) + d
    assert count_parameters(mh) == shared + filter_params(7, 5, 2, heads) + heads
    assert count_parameters(hy) - count_parameters(mh) == (5 + 1) * (d - heads)


# ------------------------------------------------------------------- the LMs


def lm(mixer="hyena", seed=0, **kwargs):
    backend.manual_seed(seed)
    cfg = HyenaConfig(vocab_size=20, context=12, d_model=8, n_layer=2, n_head=2, mixer=mixer,
                      **{**SMALL, **kwargs})
    return HyenaLM(cfg).double()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixer", ["hyena", "multihyena"])
def test_lm_is_causal_and_independent_of_the_length(mixer, device):
    model = lm(mixer).to(device)
    idx = rng(24).integers(0, 20, (2, 12))
    logits = model(idx)[0].numpy()
    for t in (0, 5, 10):
        changed = idx.copy()
        changed[:, t + 1:] = rng(t).integers(0, 20, (2, 11 - t))
        assert (changed[:, t + 1:] != idx[:, t + 1:]).any()
        other = model(changed)[0].numpy()
        np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-10,
                                   err_msg=f"position {t} saw the future")
        assert np.abs(other[:, t + 1:] - logits[:, t + 1:]).max() > 1e-6
        np.testing.assert_allclose(model(idx[:, :t + 1])[0].numpy(), logits[:, :t + 1],
                                   atol=1e-10)


def test_lm_swaps_the_mixer_and_keeps_the_tied_head():
    model = lm("multihyena")
    assert len(model.mixers()) == 2
    assert all(isinstance(b.attn, MultiHyenaOperator) for b in model.blocks)
    assert model.lm_head.weight is model.wte.weight
    assert not any(path.startswith("wpe") for path, _ in model.named_parameters())
    clone = lm("multihyena", seed=1)
    clone.load_state_dict(model.state_dict())
    idx = rng(25).integers(0, 20, (1, 12))
    np.testing.assert_array_equal(clone(idx)[0].numpy(), model(idx)[0].numpy())


def test_lm_gradient():
    model = lm("hyena", filter_inner=0)
    idx, tgt = rng(26).integers(0, 20, (2, 6)), rng(27).integers(0, 20, (2, 6))
    assert gradcheck_module(model, lambda: model(idx, tgt)[1], max_elements=16)


def test_lm_generates_without_a_cache_and_refuses_one():
    model = lm()
    out = model.generate(np.zeros((1, 2), dtype=np.int64), 4, temperature=0)
    assert out.shape == (1, 6)
    with pytest.raises(ValueError, match="no KV cache"):
        model.generate(np.zeros((1, 2), dtype=np.int64), 1, use_cache=True)


def test_hyena_lm_init_scales_each_out_proj_and_keeps_conv1d_for_the_short_convs():
    """GPT-2's init, with each mixer's out_proj at 0.02 / sqrt(2 n_layer) and the short
    convs at PyTorch's Conv1d U(-1/sqrt(k), 1/sqrt(k)) (std within 10%)."""
    nt.manual_seed(0)
    n_layer, k = 4, 3
    model = HyenaLM(HyenaConfig(vocab_size=16, context=16, d_model=96, n_layer=n_layer,
                                n_head=2, short_kernel=k))
    for op in model.mixers():
        out = op.out_proj.weight.numpy()
        assert out.std() == pytest.approx(0.02 / np.sqrt(2 * n_layer), rel=0.1)
        short = op.short.weight.numpy()
        assert np.abs(short).max() <= 1 / np.sqrt(k)
        assert short.std() == pytest.approx(1 / np.sqrt(3 * k), rel=0.1)
    with pytest.raises(ValueError, match="sequence of 17 tokens"):
        model(np.zeros((1, 17), dtype=np.int64))


def test_configs_name_the_bad_field():
    with pytest.raises(ValueError, match="mixer"):
        HyenaConfig(mixer="attention")
    with pytest.raises(ValueError, match="emb_dim"):
        HyenaLM(HyenaConfig(filter_emb_dim=4))
    with pytest.raises(ValueError, match="divisible"):          # GPTConfig's own checks
        HyenaConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="n_head"):
        MultiHyenaOperator(6, 4, n_head=4)
    with pytest.raises(ValueError, match="n_pairs"):
        RecallConfig(n_keys=4, n_pairs=5)
    with pytest.raises(ValueError, match="n_pairs"):
        RecallConfig(n_keys=4, n_pairs=0)
    RecallConfig(n_keys=4, n_pairs=1, n_queries=1)        # the smallest task is allowed


def test_inputs_of_the_wrong_shape_and_a_config_of_another_kind_are_refused():
    x = Tensor(np.ones((2, 4, 8)))                                          # (B, C, L)
    with pytest.raises(ValueError, match=r"short_conv: expected x of shape \(B, 3, L\)"):
        short_conv(x, Tensor(np.ones((3, 3))))
    with pytest.raises(ValueError, match=r"HyenaOperator: expected input \(B, L, 4\)"):
        operator()(Tensor(np.ones((2, 8, 5))))
    with pytest.raises(TypeError, match="HyenaLM needs a HyenaConfig, got GPTConfig"):
        HyenaLM(nt.nn.GPTConfig(vocab_size=8, context=8, d_model=8, n_layer=1, n_head=2))


# --------------------------------------------------------------- recall task


def test_recall_episodes_ask_for_the_values_bound_in_the_episode():
    cfg = RecallConfig(n_keys=10, n_values=6, n_pairs=5, n_queries=4)
    x, y = recall_episodes(cfg, 50, seed=0)
    assert x.shape == y.shape == (50, cfg.seq_len)
    for xe, ye in zip(x, y):
        keys, values = xe[0:10:2], xe[1:10:2]
        assert len(set(keys)) == 5 and keys.max() < 10 and values.min() >= 10
        bound = dict(zip(keys, values))
        asked = np.flatnonzero(ye != IGNORE)
        assert list(asked) == list(range(10, 18, 2))
        for t in asked:
            assert ye[t] == bound[xe[t]] == xe[t + 1]
    assert len({tuple(e) for e in x}) == 50            # fresh bindings every episode
    assert set(x[:, 1:10:2].ravel()) == set(range(10, 16))   # every value token is drawn
    # As many queries as pairs: each key asked exactly once; every key may be bound.
    full = RecallConfig(n_keys=6, n_values=6, n_pairs=6, n_queries=6)
    x, _ = recall_episodes(full, 20, seed=1)
    assert all(sorted(xe[12::2]) == sorted(xe[0:12:2]) == list(range(6)) for xe in x)


def test_recall_accuracy_is_the_share_of_answers_predicted():
    """A stand-in model predicts every answer but 3 of the 60 (and junk elsewhere):
    accuracy 57 / 60, whatever the batch size, read in eval mode."""
    cfg = RecallConfig(n_keys=6, n_values=6, n_pairs=3, n_queries=3)
    x, y = recall_episodes(cfg, 20, seed=2)
    pred = np.where(y != IGNORE, y, 0)
    for e, t in ((0, 6), (7, 8), (19, 10)):              # three answers, made wrong
        pred[e, t] = (pred[e, t] + 1) % cfg.vocab_size
    by_row = {xe.tobytes(): pe for xe, pe in zip(x, pred)}

    modes = []

    class StandIn(nt.nn.Module):
        def forward(self, xb):
            modes.append(self.training)
            p = np.stack([by_row[row.tobytes()] for row in xb])          # (b, T)
            return Tensor(np.eye(cfg.vocab_size)[p]), None               # one-hot logits
    for batch_size in (256, 3):
        assert recall_accuracy(StandIn(), x, y, batch_size) == pytest.approx(57 / 60)
    assert modes and not any(modes)


def test_episode_stream_windows_name_every_episode():
    stream = episode_stream(7, 5)
    firsts = [int(v) for xb, _ in iter_eval_batches(stream, 5, 3) for v in xb[:, 0]]
    assert firsts == list(range(7)) and set(stream) == set(range(7))   # only episode numbers


# ---------------------------------------------------------------- experiment


TINY = experiment.Profile(
    model=HyenaConfig(context=16, d_model=8, n_layer=1, n_head=2, **SMALL),
    train=TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_interval=2, eval_batches=2),
    recall=RecallConfig(n_keys=4, n_values=4, n_pairs=2, n_queries=2),
    recall_model=HyenaConfig(d_model=8, n_layer=1, n_head=2, **SMALL),
    recall_train=TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_interval=2,
                             eval_batches=2),
    n_recall_train=40, n_recall_val=10, n_recall_test=10,
    study=DistillStudy(orders=(1, 2, 4), contexts=(16, 32), steps=2, rounds=1,
                       eval_batches=2))


def test_run_follows_the_protocol_and_a_rerun_comes_from_the_cache(tmp_path):
    results = experiment.run(out_dir=tmp_path / "hyena", profile=TINY)
    out = tmp_path / "hyena"
    for name in ["report.md", "results.json", *results["figures"].values()]:
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for name in results["figures"].values():
        assert f"]({name})" in report                    # relative links to its PNGs
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [0, 1]
    for name in experiment.MODELS:
        assert len(saved["lm"][name]["test_bpb"]["values"]) == 2          # every seed
        assert 0 < saved["lm"][name]["test_bpb"]["mean"] < 9
        assert 0 <= saved["recall"][name]["test_acc"]["mean"] <= 1
    d, m = TINY.model.d_model, TINY.model.n_head
    assert saved["filters"]["hyena"]["filters"] == d
    assert saved["filters"]["multihyena"]["filters"] == m
    assert saved["filters"]["transformer"]["filters"] == 0
    assert 3 <= len(results["summary"]) <= 4
    assert set(results["headline"]) == {"claim", "where", "verdict", "figure"}
    assert results["headline"]["verdict"] in ("holds", "does not hold", "within noise")
    entries = sorted((tmp_path / "cache" / "runs").glob("*.json"))
    assert len(entries) == 2 * 3 * 2 + 1                   # LM and recall runs, timing
    # A rerun reads every run from the cache: the same figures, no training.
    again = experiment.run(out_dir=tmp_path / "hyena", profile=TINY)
    assert again["lm"] == results["lm"] and again["recall"] == results["recall"]
    assert sorted((tmp_path / "cache" / "runs").glob("*.json")) == entries


def test_a_tuned_run_reports_the_chosen_rates_not_the_profiles_default(tmp_path):
    tuned = replace(TINY, lr_grid=(1e-3, 4e-3), recall_lr_grid=(1e-3, 4e-3))
    results = experiment.run(out_dir=tmp_path / "hyena", profile=tuned)
    report = (tmp_path / "hyena" / "report.md").read_text()
    assert f"lr {TINY.train.lr:g}" not in report and "rate chosen on val" in report
    for task in ("lm", "recall"):
        assert {c["best"] for c in results["tuning"][task].values()} <= {1e-3, 4e-3}
    assert report.count("learning rate: validation") == 2           # both grids shown


def test_the_filter_plot_labels_both_axes_of_every_panel(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(experiment, "save_figure", lambda fig, path: saved.append(fig))
    f = experiment._filter_figures(HyenaLM(TINY.model))
    experiment.plot_filters({"hyena": f, "multihyena": f}, tmp_path / "filters.png")
    for ax in saved[0].axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def test_recall_splits_are_disjoint_generators_and_lm_run_checks_its_corpus():
    """Each seed's train, val and test episodes come from three generators that no
    other seed's split reuses (seed 1's training set is not seed 0's test set)."""
    sizes = (TINY.n_recall_train, TINY.n_recall_val, TINY.n_recall_test)
    d0, d1 = (experiment.recall_data(TINY.recall, sizes, seed) for seed in (0, 1))
    assert not np.array_equal(d0["x_val"], d0["x_test"])
    assert not np.array_equal(d1["x_train"][:10], d0["x_test"])
    assert not np.array_equal(d1["x_train"][:10], d0["x_val"])
    with pytest.raises(ValueError, match="corpus differs"):
        experiment.lm_run({"corpus": "not-this-one", "model": "hyena"}, 0, "cpu")


def test_param_groups_exempt_the_implicit_filters_from_weight_decay():
    model = lm("multihyena")
    decay, rest = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    ids = [id(p) for g in (decay, rest) for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())     # each once
    filters = {id(p) for op in model.mixers() for p in op.filter.parameters()}
    assert filters and filters <= {id(p) for p in rest["params"]}
    assert any(p.ndim >= 2 for p in rest["params"])                     # filter matrices
    assert id(model.wte.weight) in {id(p) for p in decay["params"]}


@pytest.mark.slow
def test_quick_profile_models_learn_prose_and_recall(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "hyena")
    for name in experiment.MODELS:
        assert results["lm"][name]["test_bpb"]["mean"] < results["unigram_test_bpb"] - 0.5, name
        assert results["recall"][name]["test_acc"]["mean"] > 2 * results["recall_chance"], name
