"""Weight tying is aliasing: two places hold the SAME Parameter object. The library
must honour that everywhere (DESIGN.md, "Weight tying, the theme"):

* parameters() yields a tied weight once, named_parameters(remove_duplicate=False)
  lists every path that holds it, and tied_parameters / tie_report name them;
* a tied weight's gradient is the SUM of the gradients of its uses;
* one optimizer step moves it once;
* counts count unique arrays; to() and freezing keep the tie;
* state_dict saves it once and load_state_dict restores the tie.

The references are UNTIED models with the same values, whose two copies we add up or
step by hand.
"""

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import (GPT, Block, GPTConfig, Linear, Module, ModuleList,
                        count_parameters, tie_report, tied_parameters)
from nanotie.nn.optim import SGD, AdamW

CFG = dict(vocab_size=11, context=8, d_model=8, n_layer=2, n_head=2)
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]


def tied_and_untied(seed=0, dtype=np.float64, **overrides):
    """A tied GPT, and an untied one with the same values everywhere: its wte and
    lm_head weights are two SEPARATE Parameters, both equal to the tied weight."""
    nt.manual_seed(seed)
    tied = GPT(GPTConfig(**CFG, **overrides)).to(dtype)
    rng = np.random.default_rng(seed)
    for p in tied.parameters():           # away from the near-zero GPT-2 init
        p.data = p.data + rng.normal(0.0, 0.3, p.shape).astype(dtype)
    untied = GPT(GPTConfig(**CFG, **overrides, tie_embeddings=False)).to(dtype)
    sd = tied.state_dict()
    sd["lm_head.weight"] = sd["wte.weight"].copy()
    sd["__ties__"] = np.array([], dtype=np.str_)    # store the copies separately
    untied.load_state_dict(sd)
    assert untied.lm_head.weight is not untied.wte.weight
    np.testing.assert_array_equal(untied.lm_head.weight.numpy(), tied.wte.weight.numpy())
    return tied, untied


def batch(seed=1, B=3, T=8, V=11):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


# ----------------------------------------------------------- de-duplication


def test_tied_weight_is_yielded_once_but_every_path_is_listed():
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    assert model.lm_head.weight is model.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names
    params = list(model.parameters())
    assert len({id(p) for p in params}) == len(params)
    assert sum(p is model.wte.weight for p in params) == 1
    every = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert "wte.weight" in every and "lm_head.weight" in every
    assert len(every) == len(names) + 1


def test_tied_parameters_and_tie_report_name_the_shared_paths():
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    assert tied_parameters(model) == {"wte.weight": ["wte.weight", "lm_head.weight"]}
    report = tie_report(model)
    assert "wte.weight = lm_head.weight" in report and "(11, 8)" in report
    untied = GPT(GPTConfig(**CFG, tie_embeddings=False))
    unique, separate = (count_parameters(m, trainable_only=False) for m in (model, untied))
    assert (f"unique parameters {unique:,}; untied it would be {separate:,} "
            f"({separate - unique:,} saved)") in report
    assert tied_parameters(untied) == {}
    assert "no tied parameters" in tie_report(untied)


def test_tying_after_construction_is_one_assignment():
    """nanoGPT's one line: assigning the Parameter ties; nothing is copied."""
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG, tie_embeddings=False))
    before = count_parameters(model)
    model.lm_head.weight = model.wte.weight
    assert tied_parameters(model) == {"wte.weight": ["wte.weight", "lm_head.weight"]}
    assert before - count_parameters(model) == CFG["vocab_size"] * CFG["d_model"]


@pytest.mark.parametrize("overrides", [{}, {"ffn": "swiglu", "norm": "rms", "bias": False}])
def test_count_drops_by_exactly_one_embedding_matrix(overrides):
    nt.manual_seed(0)
    tied = GPT(GPTConfig(**CFG, **overrides))
    untied = GPT(GPTConfig(**CFG, **overrides, tie_embeddings=False))
    V, d = CFG["vocab_size"], CFG["d_model"]
    assert count_parameters(untied) - count_parameters(tied) == V * d
    # and the count is the size of the unique arrays
    assert count_parameters(tied) == sum(p.numel() for p in
                                         {id(p): p for _, p in tied.named_parameters(
                                             remove_duplicate=False)}.values())


def test_a_block_used_twice_counts_once_and_sums_its_gradients():
    """Layer sharing (the same Block twice in a ModuleList) is tying too."""
    nt.manual_seed(0)
    config = GPTConfig(**CFG)
    block = Block(config).to(np.float64)
    shared = ModuleList([block, block])
    assert count_parameters(shared) == count_parameters(block)
    assert len(list(shared.parameters())) == len(list(block.parameters()))
    paths = [n for n, _ in shared.named_parameters(remove_duplicate=False)]
    assert "0.attn.qkv.weight" in paths and "1.attn.qkv.weight" in paths
    ties = tied_parameters(shared)
    assert ties["0.attn.qkv.weight"] == ["0.attn.qkv.weight", "1.attn.qkv.weight"]
    assert len(ties) == len(list(block.parameters()))

    # Gradient: the shared block's = first use's + second use's, where two untied
    # copies (same values) play the two uses.
    rng = np.random.default_rng(2)
    for p in block.parameters():          # random gains and biases, so all matter
        p.data = p.data + rng.normal(0.0, 0.3, p.shape)
    first, second = _clone(block, config), _clone(block, config)
    x = nt.tensor(rng.standard_normal((2, 5, 8)))
    up = nt.tensor(rng.standard_normal((2, 5, 8)))
    (shared[1](shared[0](x)) * up).sum().backward()
    (second(first(x)) * up).sum().backward()
    for (name, p), q, r in zip(block.named_parameters(), first.parameters(),
                               second.parameters()):
        np.testing.assert_allclose(p.grad, q.grad + r.grad, rtol=1e-10, atol=1e-14,
                                   err_msg=name)
        assert np.abs(p.grad - q.grad).max() > 1e-6, name     # both uses contribute


def _clone(block, config):
    copy = Block(config).to(np.float64)
    copy.load_state_dict(block.state_dict())
    return copy


# ------------------------------------------------------------- gradients


@pytest.mark.parametrize("overrides", [{}, {"ffn": "swiglu", "norm": "rms"}])
def test_tied_gradient_is_the_sum_of_the_untied_gradients(overrides):
    tied, untied = tied_and_untied(**overrides)
    idx, targets = batch()
    tied(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    g_in, g_out = untied.wte.weight.grad, untied.lm_head.weight.grad
    np.testing.assert_allclose(tied.wte.weight.grad, g_in + g_out, rtol=1e-10, atol=1e-14)
    # Both uses contribute: neither alone would pass.
    for part in (g_in, g_out):
        assert np.abs(tied.wte.weight.grad - part).max() > 1e-3
    # Every other parameter gets the same gradient in both models.
    other = dict(untied.named_parameters())
    for name, p in tied.named_parameters():
        if name != "wte.weight":
            np.testing.assert_allclose(p.grad, other[name].grad, rtol=1e-10, atol=1e-14,
                                       err_msg=name)


# ------------------------------------------------------------ optimizers


def _grads_and_step(make_opt):
    """Backward through both models; step the tied one with ``make_opt``. Returns the
    tied model, the tied weight before the step, and the summed untied gradient."""
    tied, untied = tied_and_untied()
    idx, targets = batch()
    tied(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    g = untied.wte.weight.grad + untied.lm_head.weight.grad
    w0 = tied.wte.weight.numpy().copy()
    make_opt(tied).step()
    return tied, w0, g


@pytest.mark.parametrize("listing", ["parameters", "every_path"])
def test_one_sgd_step_moves_a_tied_weight_once(listing):
    """p <- p - lr (g_in + g_out), even when the tied weight is passed twice."""
    lr = 0.1

    def make(model):
        if listing == "parameters":
            return SGD(model.parameters(), lr=lr)
        return SGD([p for _, p in model.named_parameters(remove_duplicate=False)], lr=lr)

    tied, w0, g = _grads_and_step(make)
    np.testing.assert_allclose(tied.wte.weight.numpy(), w0 - lr * g, rtol=1e-12, atol=1e-15)
    assert tied.lm_head.weight is tied.wte.weight


@pytest.mark.parametrize("listing", ["parameters", "every_path"])
def test_one_adamw_step_moves_a_tied_weight_once(listing):
    """Adam's first step, by hand: m = (1-b1) g, v = (1-b2) g^2, so after bias
    correction p <- p (1 - lr wd) - lr g / (|g| + eps), with g the SUMMED gradient."""
    lr, wd, eps = 0.01, 0.1, 1e-8

    def make(model):
        ps = (list(model.parameters()) if listing == "parameters" else
              [p for _, p in model.named_parameters(remove_duplicate=False)])
        return AdamW(ps, lr=lr, weight_decay=wd, eps=eps)

    tied, w0, g = _grads_and_step(make)
    want = w0 * (1 - lr * wd) - lr * g / (np.abs(g) + eps)
    np.testing.assert_allclose(tied.wte.weight.numpy(), want, rtol=1e-9, atol=1e-12)


def test_clip_grad_norm_counts_a_tied_weight_once():
    tied, _ = tied_and_untied()
    tied(*batch())[1].backward()
    every = [p for _, p in tied.named_parameters(remove_duplicate=False)]
    unique = list(tied.parameters())
    want = np.sqrt(sum((p.grad ** 2).sum() for p in unique))
    got = nt.nn.optim.clip_grad_norm(every, max_norm=1e9)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got < np.sqrt(sum((p.grad ** 2).sum() for p in every))


# ------------------------------------------------------------- to(), freezing


@pytest.mark.parametrize("device", DEVICES)
def test_to_keeps_the_tie(device):
    """to() changes arrays IN PLACE: every Parameter keeps its identity, so the tie
    (and a shared block) survive a cast and a move."""
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    model.blocks[1] = model.blocks[0]
    ids = {path: id(p) for path, p in model.named_parameters(remove_duplicate=False)}
    idx, targets = batch()
    model(idx, targets)[1].backward()
    model.to(device).to(np.float64)
    assert {path: id(p) for path, p in model.named_parameters(remove_duplicate=False)} == ids
    assert model.lm_head.weight is model.wte.weight
    assert model.blocks[1] is model.blocks[0]
    for p in model.parameters():
        assert p.dtype == np.float64 and p.device == device
        assert p.grad.dtype == np.float64
    logits, loss = model(idx, targets)
    assert logits.dtype == np.float64 and logits.device == device
    model.to("cpu").float()
    assert model.lm_head.weight is model.wte.weight
    assert model.wte.weight.dtype == np.float32 and model.wte.weight.device == "cpu"


def test_frozen_tied_weight_is_not_counted_and_gets_no_optimizer_state():
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    total = count_parameters(model)
    V, d, T = CFG["vocab_size"], CFG["d_model"], CFG["context"]
    model.wte.requires_grad_(False)          # freezes the head too: one object
    model.wpe.requires_grad_(False)
    assert not model.lm_head.weight.requires_grad
    assert count_parameters(model, trainable_only=True) == total - V * d - T * d
    assert count_parameters(model, trainable_only=False) == total

    frozen = [model.wte.weight, model.wpe.weight]
    before = [p.numpy().copy() for p in frozen]
    opt = AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(*batch())[1].backward()
        opt.step()
    for p, b in zip(frozen, before):
        assert id(p) not in opt.state and p.grad is None
        np.testing.assert_array_equal(p.numpy(), b)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(opt.state) == {id(p) for p in trainable}
    assert not np.array_equal(model.ln_f.weight.numpy(), np.ones(d))     # others moved
    groups = nt.nn.optim.param_groups(model, 0.1)
    assert not any(p is model.wte.weight for g in groups for p in g["params"])


# ------------------------------------------------------------- save / load


def test_state_dict_saves_a_tied_weight_once(tmp_path):
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    sd = model.state_dict()
    assert "wte.weight" in sd and "lm_head.weight" not in sd
    assert sd["__ties__"].tolist() == ["lm_head.weight=wte.weight"]
    np.savez(tmp_path / "tied.npz", **sd)
    with np.load(tmp_path / "tied.npz", allow_pickle=False) as f:
        assert f["__ties__"].tolist() == ["lm_head.weight=wte.weight"]
    nt.manual_seed(0)
    untied = GPT(GPTConfig(**CFG, tie_embeddings=False))
    assert untied.state_dict()["__ties__"].size == 0
    assert "lm_head.weight" in untied.state_dict()


@pytest.mark.parametrize("target_tied", [True, False])
def test_loading_a_tied_checkpoint_restores_the_tie(tmp_path, target_tied):
    """Into a tied model: the values. Into an untied one (the alias is a separate
    Parameter), with ``retie=True``: the values AND the tie, so the model trains as the
    saved one did (without it the mismatch is refused: see test_module)."""
    nt.manual_seed(0)
    src = GPT(GPTConfig(**CFG))
    np.savez(tmp_path / "tied.npz", **src.state_dict())
    nt.manual_seed(1)
    dst = GPT(GPTConfig(**CFG, tie_embeddings=target_tied))
    with np.load(tmp_path / "tied.npz", allow_pickle=False) as f:
        dst.load_state_dict(f, retie=not target_tied)
    assert dst.lm_head.weight is dst.wte.weight and dst.config.tie_embeddings
    np.testing.assert_array_equal(dst.wte.weight.numpy(), src.wte.weight.numpy())
    assert count_parameters(dst) == count_parameters(src)
    assert tied_parameters(dst) == tied_parameters(src)
    idx, targets = batch()
    a, b = src(idx, targets), dst(idx, targets)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    # and the restored tie behaves as one: one SGD step moves both uses.
    b[1].backward()
    SGD(dst.parameters(), lr=1.0).step()
    np.testing.assert_array_equal(dst.lm_head.weight.numpy(), dst.wte.weight.numpy())
    assert not np.array_equal(dst.wte.weight.numpy(), src.wte.weight.numpy())


def test_tie_is_restored_in_a_custom_module():
    """Not only GPT: any alias path in the tie table is re-pointed."""

    class Autoencoder(Module):
        def __init__(self, tie):
            super().__init__()
            self.enc = Linear(4, 4, bias=False)
            self.dec = Linear(4, 4, bias=False)
            if tie:
                self.dec.weight = self.enc.weight

    nt.manual_seed(0)
    src, dst = Autoencoder(True), Autoencoder(False)
    dst.load_state_dict(src.state_dict())
    assert dst.dec.weight is dst.enc.weight
    np.testing.assert_array_equal(dst.dec.weight.numpy(), src.enc.weight.numpy())
