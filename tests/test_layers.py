"""The standard layers against their formulas written out in NumPy (and against
PyTorch where it is installed): Linear, Embedding, LayerNorm, RMSNorm, Dropout, MLP,
SwiGLU. Their gradients come from ops that test_ops.py checks; here we check that
each layer wires its parameters into the right formula."""

import math

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SwiGLU
from nanotie.nn import functional as F


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def randomize(module, rng, scale=0.5):
    """Give every parameter random float64 values (norm gains near 1 stay near 1), so
    that a swapped or unused weight changes the output."""
    module.to(np.float64)
    for p in module.parameters():
        p.data = p.data + rng.normal(0.0, scale, p.shape)
    return module


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y if b is None else y + b


# ------------------------------------------------------------------ Linear


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_formula(rng, bias):
    """y = x W^T + b with W stored (out, in), on a batch with two leading dims."""
    layer = randomize(Linear(5, 3, bias=bias), rng)
    assert layer.weight.shape == (3, 5)
    assert (layer.bias is None) == (not bias)
    x = rng.standard_normal((2, 4, 5))
    y = layer(nt.tensor(x)).numpy()
    want = x @ layer.weight.numpy().T + (layer.bias.numpy() if bias else 0.0)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    names = [n for n, _ in layer.named_parameters()]
    assert names == (["weight", "bias"] if bias else ["weight"])


def test_linear_init_is_pytorch_uniform_bound():
    """Weights and biases start in (-1/sqrt(in), 1/sqrt(in)) and are not constant."""
    nt.manual_seed(3)
    layer = Linear(16, 32)
    bound = 1.0 / math.sqrt(16)
    for p in (layer.weight, layer.bias):
        a = p.numpy()
        assert a.dtype == np.float32
        assert np.abs(a).max() <= bound and a.std() > bound / 4


def test_linear_gradients_reach_weight_and_bias(rng):
    """The gradient of sum(y * w) is x^T w for W^T, and w summed over the batch for b."""
    layer = randomize(Linear(4, 3), rng)
    x = rng.standard_normal((6, 4))
    up = rng.standard_normal((6, 3))
    (layer(nt.tensor(x)) * nt.tensor(up)).sum().backward()
    np.testing.assert_allclose(layer.weight.grad, up.T @ x, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, up.sum(0), rtol=1e-12)


# --------------------------------------------------------------- Embedding


def test_embedding_picks_rows_and_scatters_gradient(rng):
    """out[..., :] = W[id]; a row read twice gets the sum of both gradients."""
    emb = randomize(Embedding(7, 3), rng)
    ids = np.array([[1, 4, 1], [6, 0, 1]])
    out = emb(ids)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[ids])
    up = rng.standard_normal((2, 3, 3))
    (out * nt.tensor(up)).sum().backward()
    want = np.zeros((7, 3))
    np.add.at(want, ids.reshape(-1), up.reshape(-1, 3))
    np.testing.assert_allclose(emb.weight.grad, want, rtol=1e-12)
    assert np.all(emb.weight.grad[[2, 3, 5]] == 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_embedding_takes_ids_of_any_integer_width(rng, dtype):
    """Bytes as uint8 into a 256-row table: the backward's scatter-add must not compute
    id + 256 in the ids' own dtype (an OverflowError for uint8)."""
    emb = randomize(Embedding(256, 3), rng)
    ids = np.array([[1, 2, 2, 100]])
    up = rng.standard_normal((1, 4, 3))
    grads = []
    for d in (np.int64, dtype):
        emb.weight.grad = None
        (emb(ids.astype(d)) * nt.tensor(up)).sum().backward()
        grads.append(emb.weight.grad)
    np.testing.assert_array_equal(grads[1], grads[0])


def test_embedding_rejects_out_of_range_ids():
    emb = Embedding(5, 2)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        emb(np.array([[0, 5]]))


# ------------------------------------------------------------------- norms


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_matches_formula(rng, bias):
    ln = randomize(LayerNorm(6, bias=bias), rng)
    x = rng.standard_normal((3, 4, 6)) * 3 + 1
    want = np_layer_norm(x, ln.weight.numpy(), ln.bias.numpy() if bias else None, 1e-5)
    np.testing.assert_allclose(ln(nt.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which, weight, bias", [("weight", (3,), None), ("bias", (4,), (2, 2)),
                                                 ("weight", (2, 2), None)])
def test_layer_norm_names_a_weight_or_bias_of_the_wrong_shape(which, weight, bias):
    """Not NumPy's reshape error, nor a (2, 2) weight silently read as (4,)."""
    x = nt.randn(2, 4)
    w, b = nt.randn(*weight), None if bias is None else nt.randn(*bias)
    shape = weight if which == "weight" else bias
    with pytest.raises(nt.autograd.ShapeError, match=rf"layer_norm: {which} of shape "
                                                     rf"\({shape[0]},.*normalized_shape \(4,\)"):
        F.layer_norm(x, (4,), w, b)


@pytest.mark.parametrize("weight", [(1,), (2, 4)])
def test_rms_norm_names_a_weight_of_the_wrong_shape(weight):
    """Broadcasting would take a (1,) or a (2, 4) weight for a (4,) one, silently."""
    with pytest.raises(nt.autograd.ShapeError, match=r"rms_norm: weight of shape "
                                                     r"\(.*normalized_shape \(4,\)"):
        F.rms_norm(nt.randn(2, 4), (4,), nt.randn(*weight))


def test_rms_norm_matches_formula(rng):
    rms = randomize(RMSNorm(6), rng)
    x = rng.standard_normal((3, 4, 6)) * 3 + 1
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * rms.weight.numpy()
    np.testing.assert_allclose(rms(nt.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


def test_norms_start_as_plain_normalisation():
    """Fresh gains are 1 and biases 0: the output has zero mean / unit RMS per row."""
    x = np.random.default_rng(0).standard_normal((5, 8)) * 4 + 2
    y = LayerNorm(8).to(np.float64)(nt.tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-4)
    z = RMSNorm(8).to(np.float64)(nt.tensor(x)).numpy()
    np.testing.assert_allclose((z ** 2).mean(-1), 1, rtol=1e-4)


# ---------------------------------------------------------- feed-forwards


@pytest.mark.parametrize("out_dim", [None, 3])
def test_mlp_matches_formula(rng, out_dim):
    """proj(GELU_tanh(fc(x))), hidden 4 d by default, out_dim d by default."""
    mlp = randomize(MLP(4, out_dim=out_dim), rng)
    assert mlp.fc.weight.shape == (16, 4) and mlp.proj.weight.shape == (out_dim or 4, 16)
    x = rng.standard_normal((2, 3, 4))
    h = np_gelu_tanh(x @ mlp.fc.weight.numpy().T + mlp.fc.bias.numpy())
    want = h @ mlp.proj.weight.numpy().T + mlp.proj.bias.numpy()
    np.testing.assert_allclose(mlp(nt.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


def test_swiglu_matches_formula(rng):
    """proj(SiLU(x W_gate^T) * (x W_up^T)), no biases by default."""
    ffn = randomize(SwiGLU(6, hidden=10), rng)
    assert [n for n, _ in ffn.named_parameters()] == ["gate.weight", "up.weight",
                                                       "proj.weight"]
    x = rng.standard_normal((2, 3, 6))
    g, u = x @ ffn.gate.weight.numpy().T, x @ ffn.up.weight.numpy().T
    want = (np_silu(g) * u) @ ffn.proj.weight.numpy().T
    np.testing.assert_allclose(ffn(nt.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", [6, 8, 16, 48, 100])
def test_swiglu_default_width_keeps_mlp_budget(d):
    """Hidden width is 8/3 d rounded up to a multiple of 8, so three d x h matrices
    hold about as many values as the MLP's two d x 4d ones."""
    ffn = SwiGLU(d)
    h = ffn.gate.weight.shape[0]
    assert h % 8 == 0 and 8 * d / 3 <= h < 8 * d / 3 + 8
    assert ffn.up.weight.shape == (h, d) and ffn.proj.weight.shape == (d, h)


def test_feed_forwards_match_torch(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    mlp, ffn = randomize(MLP(4, hidden=12), rng), randomize(SwiGLU(4, hidden=12), rng)
    x = rng.standard_normal((3, 4))
    T = {n: torch.tensor(p.numpy()) for n, p in mlp.named_parameters()}
    want = tF.linear(tF.gelu(tF.linear(torch.tensor(x), T["fc.weight"], T["fc.bias"]),
                             approximate="tanh"), T["proj.weight"], T["proj.bias"])
    np.testing.assert_allclose(mlp(nt.tensor(x)).numpy(), want.numpy(), rtol=1e-10)
    S = {n: torch.tensor(p.numpy()) for n, p in ffn.named_parameters()}
    tx = torch.tensor(x)
    want = tF.linear(tF.silu(tF.linear(tx, S["gate.weight"])) * tF.linear(tx, S["up.weight"]),
                     S["proj.weight"])
    np.testing.assert_allclose(ffn(nt.tensor(x)).numpy(), want.numpy(), rtol=1e-10)


def test_norms_match_torch(rng):
    torch = pytest.importorskip("torch")
    ln, rms = randomize(LayerNorm(5), rng), randomize(RMSNorm(5), rng)
    x = rng.standard_normal((4, 5))
    want = torch.nn.functional.layer_norm(torch.tensor(x), (5,), torch.tensor(ln.weight.numpy()),
                                          torch.tensor(ln.bias.numpy()), eps=1e-5)
    np.testing.assert_allclose(ln(nt.tensor(x)).numpy(), want.numpy(), rtol=1e-10)
    want = torch.nn.functional.rms_norm(torch.tensor(x), (5,),
                                        torch.tensor(rms.weight.numpy()), eps=1e-6)
    np.testing.assert_allclose(rms(nt.tensor(x)).numpy(), want.numpy(), rtol=1e-10)


def test_layers_start_from_pytorchs_default_distributions():
    """Linear ~ U(-1/sqrt(in), 1/sqrt(in)), Embedding ~ N(0, 1), init_normal ~ N(0, std^2):
    over 120,000 draws the std is within 2% (10 standard errors) of the formula's, and
    the mean within 2% of the std (7 standard errors) of 0."""
    from nanotie.nn.layers import init_normal

    nt.manual_seed(0)
    linear = Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert np.abs(linear.weight.numpy()).max() <= bound
    for values, std in ((linear.weight.numpy(), bound / math.sqrt(3)),
                        (Embedding(400, 300).weight.numpy(), 1.0),
                        (init_normal((400, 300), 0.02).numpy(), 0.02)):
        assert abs(values.std() / std - 1) < 0.02 and abs(values.mean()) < 0.02 * std


# ---------------------------------------------------------------- Dropout


def test_dropout_is_identity_in_eval_and_at_p_zero(rng):
    x = nt.tensor(rng.standard_normal((50, 40)))
    drop = Dropout(0.5).eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    np.testing.assert_array_equal(Dropout(0.0)(x).numpy(), x.numpy())


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_dropout_in_training_zeroes_about_p_and_rescales(p):
    """About a fraction p becomes 0 (binomial, n = 200,000: 5 standard deviations is
    under 0.006); the survivors are scaled by exactly 1/(1-p); the gradient flows
    through the same mask."""
    nt.manual_seed(11)
    x0 = np.random.default_rng(1).uniform(1.0, 2.0, (400, 500))    # no zeros of its own
    x = nt.tensor(x0, requires_grad=True)
    drop = Dropout(p)
    assert drop.training
    y = drop(x)
    out = y.numpy()
    dropped = out == 0
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / x0.size)
    np.testing.assert_allclose(out[~dropped], x0[~dropped] / (1 - p), rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.where(dropped, 0.0, 1 / (1 - p)), rtol=1e-12)
    # A fresh mask each call.
    assert not np.array_equal(drop(x).numpy() == 0, dropped)


def test_attention_dropout_drops_weights_and_rescales_the_rest(rng):
    """Attention's dropout is fused into its kernel. With v = I the output IS the
    attention matrix after dropout: each weight is 0 or softmax(q k^T / sqrt(E)) / (1 - p),
    and about a fraction p of them are 0."""
    p, T = 0.3, 64
    q, k = rng.standard_normal((8, T, 16)), rng.standard_normal((8, T, 16))
    s = q @ k.swapaxes(-1, -2) / math.sqrt(16)
    weights = np.exp(s - s.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    nt.manual_seed(3)
    out = F.scaled_dot_product_attention(nt.tensor(q), nt.tensor(k), nt.tensor(np.eye(T)),
                                         dropout_p=p).numpy()
    dropped = out == 0
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / out.size)
    np.testing.assert_allclose(out[~dropped], weights[~dropped] / (1 - p), rtol=1e-10)


def test_attention_dropout_gradients_pass_gradcheck(rng):
    def attend(q, k, v):
        nt.manual_seed(5)                 # the same dropped weights at every evaluation
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)

    q, k, v = (nt.tensor(rng.standard_normal((2, 5, 3)), requires_grad=True) for _ in range(3))
    assert nt.gradcheck(attend, [q, k, v])


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p)


@pytest.mark.parametrize("sizes", [(0, 3), (3, 0), (-2, 3), (2.5, 3)])
def test_linear_refuses_a_size_that_is_not_a_positive_integer(sizes):
    """Linear(0, 3) was a ZeroDivisionError from the 1/sqrt(in) bound."""
    with pytest.raises(ValueError, match="Linear: (in|out)_features must be a positive "
                                         "integer"):
        Linear(*sizes)
