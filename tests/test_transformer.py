"""The GPT: gradients (finite differences, float64), learning (it memorises one
batch), causality, the KV cache, generation, configuration errors, the hooks, and
PyTorch as an oracle for the forward pass and every parameter's gradient."""

import math

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import GPT, GPTConfig, KVCache
from nanotie.nn.optim import AdamW

CFG = dict(vocab_size=11, context=8, d_model=8, n_layer=2, n_head=2)
VARIANTS = {
    "tied": {},
    "untied": {"tie_embeddings": False},
    "swiglu_rms": {"ffn": "swiglu", "norm": "rms"},
    "no_bias_untied": {"bias": False, "tie_embeddings": False},
}


def tiny(seed=0, dtype=np.float64, noise=0.3, **overrides):
    """A tiny GPT in ``dtype``. With ``noise``, every parameter is moved away from
    the near-zero GPT-2 init, so that every path of the network matters."""
    nt.manual_seed(seed)
    model = GPT(GPTConfig(**{**CFG, **overrides})).to(dtype)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + rng.normal(0.0, noise, p.shape).astype(dtype)
    return model


def batch(seed=1, B=2, T=8, V=11):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


# -------------------------------------------------------------- gradients


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_gradient_matches_finite_differences(variant):
    """dloss/dtheta against central differences: element by element on a random
    subset of every parameter's entries, and along random directions in the space of
    ALL parameters at once. For the tied model, perturbing one entry of the shared
    matrix perturbs both uses, so this checks the summed gradient too."""
    model = tiny(**VARIANTS[variant])
    idx, targets = batch()
    model(idx, targets)[1].backward()
    named = list(model.named_parameters())
    if VARIANTS[variant].get("tie_embeddings", True):
        assert "lm_head.weight" not in dict(named)
    rng = np.random.default_rng(5)
    eps = 1e-6

    def loss():
        with nt.no_grad():
            return model(idx, targets)[1].item()

    for name, p in named:
        flat, grad = p.data.reshape(-1), p.grad.reshape(-1)
        for k in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[k]
            flat[k] = old + eps
            plus = loss()
            flat[k] = old - eps
            minus = loss()
            flat[k] = old
            numeric = (plus - minus) / (2 * eps)
            assert abs(grad[k] - numeric) <= 1e-7 + 1e-5 * abs(numeric), (
                f"{variant}: {name}[{k}]: analytic {grad[k]:.8g}, numeric {numeric:.8g}")

    for _ in range(3):
        direction = [rng.standard_normal(p.shape) for _, p in named]
        olds = [p.data.copy() for _, p in named]
        for (_, p), v, o in zip(named, direction, olds):
            p.data = o + eps * v
        plus = loss()
        for (_, p), v, o in zip(named, direction, olds):
            p.data = o - eps * v
        minus = loss()
        for (_, p), o in zip(named, olds):
            p.data = o
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float((p.grad * v).sum()) for (_, p), v in zip(named, direction))
        assert abs(analytic - numeric) <= 1e-7 + 1e-6 * abs(numeric), (variant, analytic,
                                                                        numeric)


@pytest.mark.parametrize("variant", ["tied", "swiglu_rms"])
def test_blocks_and_head_pass_gradcheck(variant):
    """nanotie.gradcheck of the hooks (block, block, head) with respect to the
    residual stream, with a random upstream gradient on the (B, T, V) logits."""
    model = tiny(**VARIANTS[variant])
    x = nt.tensor(np.random.default_rng(2).standard_normal((2, 5, 8)), requires_grad=True)

    def blocks_and_head(x):
        return model.head(model.block(1, model.block(0, x)))

    assert nt.gradcheck(blocks_and_head, [x], name=f"GPT hooks ({variant})")


# --------------------------------------------------------------- learning


def test_memorises_one_batch():
    """Starts at the uniform guess (loss ~ ln V, the GPT-2 init makes logits tiny)
    and drives the loss on one fixed batch of random tokens to near zero."""
    nt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context=8, d_model=16, n_layer=2, n_head=2))
    idx, targets = batch(seed=3, B=4)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = model(idx, targets)[1]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(11)) < 0.05
    assert losses[-1] < 0.05, losses[-1]
    logits, _ = model.eval()(idx)
    np.testing.assert_array_equal(logits.numpy().argmax(-1), targets)


# --------------------------------------------------------------- causality


@pytest.mark.parametrize("t", [0, 3, 7])
def test_a_future_token_does_not_change_earlier_logits(t):
    model = tiny()
    idx, _ = batch()
    changed = idx.copy()
    changed[:, t] = (changed[:, t] + 1) % 11
    a, b = model(idx)[0].numpy(), model(changed)[0].numpy()
    np.testing.assert_allclose(b[:, :t], a[:, :t], rtol=1e-12, atol=1e-14)
    assert np.abs(b[:, t:] - a[:, t:]).max(axis=-1).min() > 1e-6   # later ones do change


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("variant", ["tied", "swiglu_rms"])
def test_cached_forward_equals_full_forward(variant):
    """Feeding the sequence in pieces through a KVCache gives the full forward's
    logits at every position; the cache counts the tokens and writes them into the
    buffers it was made with."""
    model = tiny(**VARIANTS[variant])
    idx, _ = batch()
    full = model(idx)[0].numpy()
    cache = KVCache(model, 2)
    hd = CFG["d_model"] // CFG["n_head"]
    assert cache.layers[0].k.shape == (2, CFG["n_head"], CFG["context"], hd)
    buffers = [id(layer.k) for layer in cache.layers]
    pieces = []
    for a, b in [(0, 3), (3, 4), (4, 8)]:
        pieces.append(model(idx[:, a:b], cache=cache)[0].numpy())
        assert cache.length == b and all(layer.length == b for layer in cache.layers)
        assert cache.nbytes() == CFG["n_layer"] * 2 * (2 * CFG["n_head"] * b * hd) * 8
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-10, atol=1e-12)
    assert [id(layer.k) for layer in cache.layers] == buffers              # in place
    with pytest.raises(ValueError, match="longer than the context"):
        model(idx[:, :1], cache=cache)


@pytest.mark.parametrize("rows", [1, 3])
def test_cache_refuses_another_batch_size_and_stays_usable(rows):
    """A cache for 2 rows given 1 (NumPy would broadcast it into both) or 3: a clear
    error, before anything is written, so the cache still gives the full forward."""
    model = tiny()
    idx = np.random.default_rng(5).integers(0, 11, (3, 8))
    cache = KVCache(model, 2)
    with pytest.raises(ValueError, match="batch of 2, given a batch of " + str(rows)):
        model(idx[:rows, :3], cache=cache)
    assert cache.length == 0 and all(layer.length == 0 for layer in cache.layers)
    np.testing.assert_allclose(model(idx[:2, :3], cache=cache)[0].numpy(),
                               model(idx[:2, :3])[0].numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------- generation


def greedy_by_hand(model, prompt, n):
    """Greedy decoding with a full forward over the last ``context`` tokens per step."""
    out = prompt.copy()
    for _ in range(n):
        logits = model(out[:, -CFG["context"]:])[0].numpy()
        out = np.concatenate([out, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return out


@pytest.mark.parametrize("prompt_len,new", [(3, 4), (3, 12), (10, 3)])
def test_greedy_generation_is_the_same_with_and_without_cache(prompt_len, new):
    """Also when the sequence outgrows the context (3 + 12 > 8), and when the prompt
    alone is longer than the context."""
    model = tiny(noise=0.5)
    prompt = np.random.default_rng(4).integers(0, 11, (2, prompt_len))
    with_cache = model.generate(prompt, new, temperature=0)
    without = model.generate(prompt, new, temperature=0, use_cache=False)
    assert with_cache.shape == (2, prompt_len + new)
    np.testing.assert_array_equal(with_cache[:, :prompt_len], prompt)
    np.testing.assert_array_equal(with_cache, without)
    np.testing.assert_array_equal(with_cache, greedy_by_hand(model, prompt, new))


def test_sampling_is_reproducible_and_respects_top_k():
    model = tiny(noise=0.5)
    prompt = np.array([[1, 2], [3, 4]])
    a = model.generate(prompt, 20, temperature=1.0, seed=7)
    b = model.generate(nt.tensor(prompt), 20, temperature=1.0, seed=7)
    c = model.generate(prompt, 20, temperature=1.0, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(model.generate(prompt, 10, top_k=1, seed=3),
                                  model.generate(prompt, 10, temperature=0))
    k = 3
    out = model.generate(prompt, 12, temperature=2.0, top_k=k, seed=9)
    for t in range(prompt.shape[1], out.shape[1]):
        logits = model(out[:, max(0, t - CFG["context"]):t])[0].numpy()[:, -1]
        top = np.argsort(logits, axis=-1)[:, -k:]
        assert all(out[r, t] in top[r] for r in range(2)), t


@pytest.mark.parametrize("temperature, top_k", [(0.5, None), (2.0, None), (1.0, 2)])
def test_sampling_draws_from_the_softmax_of_logits_over_temperature(temperature, top_k):
    """Token frequencies over 40,000 draws from one row of logits: within 5 standard
    deviations of softmax(logits / temperature), restricted to the top k."""
    from nanotie.nn.transformer import _sample

    logits = np.array([0.0, 1.0, 2.0, 0.5, -1.0])
    n = 40_000
    drawn = _sample(np.tile(logits, (n, 1)), temperature, top_k, np.random.default_rng(0))
    want = np.exp(logits / temperature)
    if top_k is not None:
        want[np.argsort(logits)[:-top_k]] = 0.0
    want /= want.sum()
    freq = np.bincount(drawn, minlength=len(logits)) / n
    assert np.all(np.abs(freq - want) <= 5 * np.sqrt(want * (1 - want) / n) + 1e-12), freq


def test_generate_restores_training_mode_and_checks_its_arguments():
    model = tiny(dropout=0.2)
    assert model.training
    model.generate(np.array([[1]]), 3)
    assert model.training
    model.eval().generate(np.array([[1]]), 3)
    assert not model.training
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(np.array([[1]]), 3, temperature=-1)
    with pytest.raises(ValueError, match="expected a prompt of shape"):
        model.generate(np.array([1, 2]), 3)
    with pytest.raises(ValueError, match="expected a prompt of shape"):
        model.generate(np.zeros((1, 0), dtype=np.int64), 3)


def test_dropout_is_active_in_training_only():
    model = tiny(dropout=0.3)
    idx, _ = batch()
    assert not np.array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())


# ----------------------------------------------------- config and errors


@pytest.mark.parametrize("kwargs,match", [
    ({"d_model": 10, "n_head": 4}, "d_model=10 is not divisible by n_head=4"),
    ({"ffn": "geglu"}, "ffn must be 'mlp' or 'swiglu', got 'geglu'"),
    ({"norm": "batch"}, "norm must be 'layer' or 'rms', got 'batch'"),
    ({"vocab_size": 0}, "vocab_size must be positive"),
    ({"n_layer": 0}, "n_layer must be positive"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**CFG, **kwargs})


def test_too_long_or_badly_shaped_input_says_so():
    model = tiny()
    with pytest.raises(ValueError, match="sequence of 9 tokens is longer than the context "
                                         "of 8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected token ids of shape \(B, T\)"):
        model(np.zeros(4, dtype=np.int64))


def test_init_weights_is_gpt2s():
    """N(0, 0.02) matrices, residual projections scaled by 1/sqrt(2 n_layer), zero
    biases, unit norm gains."""
    nt.manual_seed(0)
    n_layer = 4
    model = GPT(GPTConfig(vocab_size=64, context=64, d_model=64, n_layer=n_layer,
                          n_head=4))
    for name, p in model.named_parameters():
        a = p.numpy()
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert a.std() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.1), name
        elif a.ndim == 2:
            assert a.std() == pytest.approx(0.02, rel=0.1) and abs(a.mean()) < 0.005, name
        elif name.endswith("bias"):
            assert np.all(a == 0), name
        else:
            assert np.all(a == 1), name


# ------------------------------------------------------------------- hooks


def test_hooks_are_what_forward_calls():
    """A variant overrides one hook and keeps the rest (labml's pattern)."""

    class ScaledHead(GPT):
        def head(self, x):
            return super().head(x) * 2.0

    class NoBlocks(GPT):
        def block(self, i, x, cache=None):
            return x

    class NoPositions(GPT):
        def embed(self, idx, pos_offset=0):
            return self.wte(idx)

    base = tiny()
    idx, targets = batch()
    base_logits = base(idx)[0].numpy()
    for cls in (ScaledHead, NoBlocks, NoPositions):
        variant = _like(cls, base)
        logits, loss = variant(idx, targets)
        assert loss is not None
        if cls is ScaledHead:
            np.testing.assert_allclose(logits.numpy(), 2 * base_logits, rtol=1e-12)
        else:
            assert not np.allclose(logits.numpy(), base_logits)
    # NoBlocks really skips the stack: its logits are head(embed(idx)).
    skip = _like(NoBlocks, base)
    np.testing.assert_allclose(skip(idx)[0].numpy(), base.head(base.embed(idx)).numpy(),
                               rtol=1e-12)


def _like(cls, model):
    """An instance of ``cls`` with ``model``'s configuration and weights."""
    other = cls(model.config).to(np.float64)
    other.load_state_dict(model.state_dict())
    return other


# ---------------------------------------------------------- PyTorch oracle


def torch_gpt(torch, P, idx, targets, config):
    """The same GPT written in PyTorch from a dict of named leaf tensors ``P``."""
    F = torch.nn.functional
    B, T = idx.shape
    d, H = config.d_model, config.n_head
    hd = d // H

    def norm(x, prefix):
        if config.norm == "rms":
            return F.rms_norm(x, (d,), P[prefix + ".weight"], eps=1e-6)
        return F.layer_norm(x, (d,), P[prefix + ".weight"], P.get(prefix + ".bias"),
                            eps=1e-5)

    def linear(x, prefix):
        return F.linear(x, P[prefix + ".weight"], P.get(prefix + ".bias"))

    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    for i in range(config.n_layer):
        b = f"blocks.{i}"
        qkv = linear(norm(x, b + ".ln1"), b + ".attn.qkv")                 # (B, T, 3d)
        q, k, v = qkv.view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)       # (B, H, T, hd)
        x = x + linear(y.transpose(1, 2).reshape(B, T, d), b + ".attn.proj")
        h = norm(x, b + ".ln2")
        if config.ffn == "mlp":
            h = linear(F.gelu(linear(h, b + ".mlp.fc"), approximate="tanh"), b + ".mlp.proj")
        else:
            h = linear(F.silu(linear(h, b + ".mlp.gate")) * linear(h, b + ".mlp.up"),
                       b + ".mlp.proj")
        x = x + h
    head = P["wte.weight"] if config.tie_embeddings else P["lm_head.weight"]
    logits = norm(x, "ln_f") @ head.T
    return logits, F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


@pytest.mark.parametrize("variant", ["tied", "untied", "swiglu_rms"])
def test_forward_and_gradients_match_pytorch(variant):
    torch = pytest.importorskip("torch")
    model = tiny(**VARIANTS[variant])
    idx, targets = batch()
    logits, loss = model(idx, targets)
    loss.backward()
    P = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in model.named_parameters()}
    t_logits, t_loss = torch_gpt(torch, P, torch.tensor(idx), torch.tensor(targets),
                                 model.config)
    t_loss.backward()
    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    assert loss.item() == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in model.named_parameters():
        assert P[name].grad is not None, name
        np.testing.assert_allclose(p.grad, P[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=f"{variant}: {name}")
