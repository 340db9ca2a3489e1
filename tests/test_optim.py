"""Optimizers, clipping and the schedule.

SGD and AdamW are checked against the update rules written out in NumPy (float64,
several steps, changing gradients) and against torch.optim with the same gradients.
Checkpoints: an optimizer restored mid-way continues BITWISE like the one that never
stopped, and a bad optimizer state raises without changing anything.
"""

import math

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import GPT, GPTConfig, Parameter
from nanotie.nn.optim import SGD, AdamW, clip_grad_norm, cosine_schedule, param_groups

SHAPES = [(3, 4), (4,), (2, 3, 2)]


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def grad_sequence(n_steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(n_steps)]


# ------------------------------------------------------- against hand rules


def test_sgd_matches_the_update_rule():
    """g <- g + wd p; b <- mu b + g (b = g at first); p <- p - lr b."""
    lr, mu, wd = 0.1, 0.9, 0.05
    params = make_params()
    ref = [p.numpy().copy() for p in params]
    bufs = [None] * len(ref)
    opt = SGD(params, lr=lr, momentum=mu, weight_decay=wd)
    for grads in grad_sequence(4):
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.step()
        for i, g in enumerate(grads):
            g = g + wd * ref[i]
            bufs[i] = g if bufs[i] is None else mu * bufs[i] + g
            ref[i] = ref[i] - lr * bufs[i]
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.numpy(), r, rtol=1e-13, atol=1e-15)


def test_plain_sgd_keeps_no_state():
    params = make_params()
    opt = SGD(params, lr=0.5)
    w0 = [p.numpy().copy() for p in params]
    grads = grad_sequence(1)[0]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    for p, w, g in zip(params, w0, grads):
        np.testing.assert_allclose(p.numpy(), w - 0.5 * g, rtol=1e-14)
    assert all(not s for s in opt.state.values())


def test_adamw_matches_the_update_rule():
    """Decoupled decay, then Adam with bias correction, step t = 1, 2, 3, 4."""
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.95), 1e-6, 0.1
    params = make_params()
    ref = [p.numpy().copy() for p in params]
    m = [np.zeros_like(r) for r in ref]
    v = [np.zeros_like(r) for r in ref]
    opt = AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for t, grads in enumerate(grad_sequence(4), start=1):
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.step()
        for i, g in enumerate(grads):
            ref[i] = ref[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            ref[i] = ref[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.numpy(), r, rtol=1e-12, atol=1e-14)


def test_parameter_without_grad_is_left_alone():
    params = make_params()
    opt = AdamW(params, lr=0.1)
    params[0].grad = np.ones(SHAPES[0])
    before = params[1].numpy().copy()
    opt.step()
    np.testing.assert_array_equal(params[1].numpy(), before)
    assert id(params[1]) not in opt.state and id(params[0]) in opt.state


def test_a_scalar_parameter_steps_and_clips_as_a_one_element_vector():
    """A 0-d Parameter (a learned temperature): its gradient came back as a NumPy
    scalar, which cannot change in place, so AdamW raised, SGD's momentum kept its
    first value and clipping left the gradient as it was."""
    finals = []
    for shape in [(1,), ()]:
        p, q, r = (Parameter(np.full(shape, 2.0)) for _ in range(3))
        opts = [SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1), AdamW([q], lr=0.1)]
        for _ in range(3):
            for opt, w in zip(opts, (p, q)):
                opt.zero_grad()
                (w * w).sum().backward()
                opt.step()
        (r * r).sum().backward()
        clip_grad_norm([r], max_norm=1.0)
        finals.append([w.numpy().reshape(()) for w in (p, q)] + [r.grad.reshape(())])
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-12)


def test_optimizers_step_in_float32_without_upcasting():
    params = make_params(dtype=np.float32)
    for opt in (SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01), AdamW(params)):
        for p, g in zip(params, grad_sequence(1)[0]):
            p.grad = g.astype(np.float32)
        opt.step()
        assert all(p.dtype == np.float32 for p in params)


# ----------------------------------------------------------- against torch


@pytest.mark.parametrize("kind", ["sgd", "sgd_plain", "adamw"])
def test_matches_torch_optim(kind):
    torch = pytest.importorskip("torch")
    params = make_params()
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    if kind == "sgd":
        ours = SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01)
        theirs = torch.optim.SGD(tparams, lr=0.05, momentum=0.9, weight_decay=0.01)
    elif kind == "sgd_plain":
        ours, theirs = SGD(params, lr=0.2), torch.optim.SGD(tparams, lr=0.2)
    else:
        ours = AdamW(params, lr=3e-3, betas=(0.9, 0.99), eps=1e-7, weight_decay=0.05)
        theirs = torch.optim.AdamW(tparams, lr=3e-3, betas=(0.9, 0.99), eps=1e-7,
                                   weight_decay=0.05)
    for step, grads in enumerate(grad_sequence(6)):
        if step == 3:                       # a schedule changes lr mid-way
            for g in ours.param_groups + theirs.param_groups:
                g["lr"] *= 0.5
        for p, tp, g in zip(params, tparams, grads):
            p.grad = g.copy()
            tp.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_torch_adamw_default_weight_decay_agrees():
    torch = pytest.importorskip("torch")
    params = make_params()
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    ours, theirs = AdamW(params), torch.optim.AdamW(tparams)
    for grads in grad_sequence(3):
        for p, tp, g in zip(params, tparams, grads):
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        ours.step()
        theirs.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ groups


def test_param_groups_exempt_vectors_from_decay():
    nt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_layer=2, n_head=2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["params"] and all(p.ndim == 1 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if n.endswith("bias") or ".ln" in n
        or n.startswith("ln_f")}
    together = decay["params"] + no_decay["params"]
    assert sorted(map(id, together)) == sorted(map(id, model.parameters()))
    decay, no_decay = param_groups(model, 0.1, no_decay=[model.wpe.weight])   # exempt a matrix
    assert id(model.wpe.weight) not in map(id, decay["params"])
    assert [id(p) for p in no_decay["params"]] == [            # in the model's order
        id(p) for p in model.parameters() if p.ndim < 2 or p is model.wpe.weight]

    # The groups' hyper-parameters reach the update: vectors are not decayed.
    opt = AdamW(param_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = np.zeros(p.shape, p.dtype)
    w_before = model.wpe.weight.numpy().copy()
    g_before = model.ln_f.weight.numpy().copy()
    opt.step()
    np.testing.assert_array_equal(model.ln_f.weight.numpy(), g_before)
    np.testing.assert_allclose(model.wpe.weight.numpy(), w_before * (1 - 0.1 * 0.5),
                               rtol=1e-6)


def test_groups_reject_unknown_options_and_dedupe_across_groups():
    a, b = make_params()[:2]
    with pytest.raises(TypeError, match="unknown option"):
        SGD([{"params": [a], "momentom": 0.9}], lr=0.1)
    opt = SGD([{"params": [a, b]}, {"params": [b, a], "lr": 0.5}], lr=0.1)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 0]
    with pytest.raises(TypeError, match="optimizers take Parameters"):
        SGD([nt.tensor(np.ones(2), requires_grad=True)], lr=0.1)


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"eps": 0.0}, {"betas": (0.9, 1.0)},
                                    {"weight_decay": -0.1}])
def test_adamw_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="AdamW"):
        AdamW(make_params(), **kwargs)


# --------------------------------------------------------------- clipping


def test_clip_grad_norm_returns_the_norm_and_clips_to_max_norm():
    params = make_params()
    grads = grad_sequence(1)[0]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    norm = math.sqrt(sum((g ** 2).sum() for g in grads))
    got = clip_grad_norm(params, max_norm=0.5)
    assert got == pytest.approx(norm, rel=1e-12)
    clipped = math.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert clipped == pytest.approx(0.5, rel=1e-5)
    for p, g in zip(params, grads):         # one scale for all: the direction is kept
        np.testing.assert_allclose(p.grad, g * (clipped / norm), rtol=1e-10)


def test_clip_grad_norm_below_the_limit_changes_nothing():
    params = make_params()
    grads = grad_sequence(1)[0]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    norm = clip_grad_norm(params, max_norm=1e6)
    assert norm == pytest.approx(math.sqrt(sum((g ** 2).sum() for g in grads)), rel=1e-12)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_counts_a_repeated_parameter_once():
    a, b, _ = make_params()
    a.grad, b.grad = np.full(a.shape, 3.0), np.full(b.shape, 4.0)
    norm = clip_grad_norm([a, b, a], max_norm=1.0)
    assert norm == pytest.approx(math.sqrt(9 * a.numel() + 16 * b.numel()), rel=1e-12)
    clipped = math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum())
    assert clipped == pytest.approx(1.0, rel=1e-5)    # a scaled once, not twice


# --------------------------------------------------------------- schedule


@pytest.mark.parametrize("warmup,total", [(10, 100), (1, 20), (0, 50)])
def test_cosine_schedule_shape(warmup, total):
    max_lr, min_lr = 1e-3, 1e-5
    lrs = [cosine_schedule(s, max_lr, total, warmup, min_lr) for s in range(total + 5)]
    if warmup > 1:
        ramp = np.diff(lrs[:warmup])
        assert np.all(ramp > 0) and np.allclose(ramp, ramp[0])     # linear, increasing
    assert lrs[0] > 0
    assert lrs[warmup - 1 if warmup else 0] == pytest.approx(max_lr)
    decay = np.array(lrs[warmup:total + 1])
    assert np.all(np.diff(decay) <= 0) and np.any(np.diff(decay) < 0)
    assert decay[0] == pytest.approx(max_lr)
    assert lrs[total] == pytest.approx(min_lr) and lrs[-1] == pytest.approx(min_lr)
    assert min(lrs) >= min_lr - 1e-15 and max(lrs) <= max_lr + 1e-15
    # The cosine's midpoint is the mean of the two rates.
    if (total - warmup) % 2 == 0:
        mid = warmup + (total - warmup) // 2
        assert lrs[mid] == pytest.approx((max_lr + min_lr) / 2)


# ------------------------------------------------------------- checkpoints


def _tiny_gpt(seed):
    nt.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_layer=1, n_head=2))


def _train(model, opt, steps, start, total=8):
    rng = np.random.default_rng(100 + start)
    for s in range(start, start + steps):
        for g in opt.param_groups:
            g["lr"] = cosine_schedule(s, 1e-2, total, warmup_steps=2) * (
                1.0 if g["weight_decay"] else 0.5)
        idx = rng.integers(0, 11, (2, 8))
        opt.zero_grad()
        model(idx, np.roll(idx, -1, axis=1))[1].backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_restored_optimizer_continues_bitwise(tmp_path, kind):
    """A runs 6 steps straight; B runs 3, is saved (model and optimizer) through
    np.savez, restored into a FRESH model C and optimizer, and C runs 3 more: C ends
    bitwise equal to A."""
    def make_opt(model):
        if kind == "adamw":
            return AdamW(param_groups(model, 0.1), lr=1e-2)
        return SGD(param_groups(model, 0.1), lr=1e-2, momentum=0.9)

    a = _tiny_gpt(0)
    opt_a = make_opt(a)
    _train(a, opt_a, 3, start=0)
    saved_lrs = [g["lr"] for g in opt_a.param_groups]
    np.savez(tmp_path / "model.npz", **a.state_dict())
    np.savez(tmp_path / "opt.npz", **opt_a.state_dict())
    _train(a, opt_a, 3, start=3)

    c = _tiny_gpt(1)                              # other initial values
    opt_c = make_opt(c)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as f:
        c.load_state_dict(f)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        opt_c.load_state_dict(dict(f))
    assert opt_c.step_count == 3
    assert [g["lr"] for g in opt_c.param_groups] == saved_lrs
    _train(c, opt_c, 3, start=3)
    want = dict(a.named_parameters())
    for name, p in c.named_parameters():
        assert np.array_equal(p.numpy(), want[name].numpy()), name
    assert opt_c.step_count == opt_a.step_count


def _adamw_after_two_steps():
    params = make_params()
    opt = AdamW(params, lr=0.01)
    for grads in grad_sequence(2):
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.step()
    return params, opt


def _corrupt_shape(sd):
    sd["1.m"] = np.zeros((5,))
    return "'1.m'"


def _corrupt_unknown_index(sd):
    sd["7.m"] = np.zeros(3)
    return "unexpected key '7.m'"


def _corrupt_index_one_past_the_last(sd):
    sd[f"{len(SHAPES)}.m"] = np.zeros(3)
    return f"unexpected key '{len(SHAPES)}.m'"


def _corrupt_unknown_name(sd):
    sd["0.momentum"] = np.zeros(SHAPES[0])
    return "unexpected key '0.momentum'"


def _corrupt_incomplete(sd):
    del sd["2.v"]
    return "parameter 2: state has ['m', 'step']"


def _corrupt_scalar_moment(sd):
    sd["0.m"] = np.array(1.0)
    return "'0.m'"


def _corrupt_missing_step(sd):
    del sd["step"]
    return "missing 'step'"


def _corrupt_missing_lr(sd):
    del sd["lr"]
    return "missing 'lr'"


def _corrupt_lr(sd):
    sd["lr"] = np.array([0.1, 0.2])
    return "'lr' has shape (2,)"


BAD_STATES = [_corrupt_shape, _corrupt_unknown_index, _corrupt_index_one_past_the_last,
              _corrupt_unknown_name,
              _corrupt_incomplete, _corrupt_scalar_moment, _corrupt_missing_step,
              _corrupt_missing_lr, _corrupt_lr]


@pytest.mark.parametrize("corrupt", BAD_STATES, ids=lambda f: f.__name__[9:])
def test_bad_optimizer_state_raises_and_changes_nothing(corrupt):
    _, donor = _adamw_after_two_steps()
    sd = {k: np.array(v, copy=True) for k, v in donor.state_dict().items()}
    fragment = corrupt(sd)
    params = make_params(seed=3)
    opt = AdamW(params, lr=0.5)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    before = {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}
    values = [p.numpy().copy() for p in params]
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    assert fragment in str(info.value)
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert np.array_equal(after[k], before[k]), k
    assert opt.param_groups[0]["lr"] == 0.5 and opt.step_count == 1
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.numpy(), v)
    opt.step()                                   # and it still works


def test_all_optimizer_state_problems_are_listed():
    _, donor = _adamw_after_two_steps()
    sd = dict(donor.state_dict())
    fragments = [f(sd) for f in (_corrupt_shape, _corrupt_unknown_index, _corrupt_lr)]
    with pytest.raises(ValueError) as info:
        AdamW(make_params(), lr=0.1).load_state_dict(sd)
    for fragment in fragments:
        assert fragment in str(info.value)
