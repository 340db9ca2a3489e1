"""Tied-LoRA: the six properties of the spec, and the experiment's outputs.

1. The closed-form trainable count equals the model's unique trainable arrays, for
   every configuration and several (L, d, r); at the paper's scale it gives the
   spec's numbers.
2. Untied with u, v frozen at 1 is LoRA (alpha = r); tied frozen A, B with trained
   u, v is peft's VeRA forward, given the same arrays.
3. Merged weights give the adapter path's outputs; unmerge restores the weights.
4. The tied A's and B's gradients are the sums of an untied copy's per-layer
   gradients, and match finite differences (float64).
5. Whenever v or B starts at zero, the adapted model starts as the base model.
6. Frozen parts get no gradient, no update and no optimizer state.

And the initial scale: random A and B start at LoRA's scale, so that Adam's steps of
about the learning rate per entry move them by a useful fraction.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import GPT, GPTConfig, count_parameters, tied_parameters
from nanotie.nn.optim import AdamW, param_groups
from nanotie.papers import REGISTRY
from nanotie.papers import tied_lora as tl
from nanotie.papers.gpt import experiment as gpt_experiment
from nanotie.papers.tied_lora import experiment
from nanotie.train import TrainConfig, train

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]
V = 13


def base_model(n_layer=3, d_model=8, n_head=2, dtype=np.float64, device="cpu", seed=0):
    """A small GPT whose weights are away from the near-zero GPT-2 init."""
    nt.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, context=8, d_model=d_model, n_layer=n_layer,
                          n_head=n_head)).to(dtype)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + rng.normal(0.0, 0.3, p.shape).astype(dtype)
    return model.to(device)


def adapted(config, seed=0, randomize=False, **kw):
    """``(base, model)``: a base GPT and a copy of it with ``config``'s adapters. With
    ``randomize``, every adapter array gets random values so the update is not zero."""
    base = base_model(seed=seed, **kw)
    model = base_model(seed=seed, **kw)
    nt.manual_seed(seed + 1)
    tl.attach(model, config)
    if randomize:
        rng = np.random.default_rng(seed + 2)
        for ad in tl.adapters(model):
            for p in (ad.A, ad.B, ad.u, ad.v):     # tied A, B get new values each time:
                p.data = p.data * 0 + rng.normal(0, 0.5, p.shape).astype(p.dtype)
    return base, model


def tokens(seed=1, B=2, T=8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def logits(model, x):
    with nt.no_grad():
        return model(x)[0].numpy()


def update_is_zero(model) -> bool:
    """True when every layer's update diag(v) B diag(u) A is exactly zero, as it is
    at step 0 when the configuration has a zero start."""
    with nt.no_grad():
        return all(not np.any(ad.delta_weight().numpy()) for ad in tl.adapters(model))


# ------------------------------------------------------------ 1. parameter counts


@pytest.mark.parametrize("L,d,r", [(1, 4, 1), (2, 8, 3), (3, 12, 4)])
def test_formula_equals_unique_trainable_count_for_every_configuration(L, d, r):
    for config in tl.all_configurations(r):
        _, model = adapted(config, n_layer=L, d_model=d)
        assert count_parameters(model) == tl.trainable_count(config, L, d), config.key


def test_tying_divides_the_trained_matrices_by_the_number_of_layers():
    L, d, r = 3, 8, 2
    _, lora = adapted(tl.TiedLoRAConfig.from_key("LoRA", r), n_layer=L, d_model=d)
    _, tl5 = adapted(tl.TiedLoRAConfig.from_key("TL5", r), n_layer=L, d_model=d)
    assert count_parameters(lora) == L * count_parameters(tl5)
    ties = tied_parameters(tl5)
    assert {"blocks.0.attn.qkv.A", "blocks.0.attn.qkv.B"} <= set(ties)
    assert len(ties["blocks.0.attn.qkv.A"]) == L
    assert not any(name.startswith("blocks.0.attn.qkv") for name in tied_parameters(lora))


def test_counts_at_the_papers_scale_match_the_spec():
    # L = 32 layers, d = 4096, r = 8 (LLaMA-2 7B), without building a model.
    L, d, r = 32, 4096, 8

    def count(key):
        return tl.trainable_count(tl.TiedLoRAConfig.from_key(key, r), L, d)

    assert count("LoRA") == 4_194_304
    assert count("TL5") == 131_072
    assert count("VeRA-style") == 393_472
    assert count("TL6") == 524_544
    assert round(100 * count("TL6") / count("LoRA"), 3) == 12.506
    # the spec's other lattice points, as formulas: Lr, 3Ld, dr + L(r+3d), 3dr + L(r+3d)
    assert count("tied:u") == L * r
    assert count("tied:v") == 3 * L * d
    assert count("tied:Auv") == d * r + L * (r + 3 * d)
    assert count("tied:Buv") == 3 * d * r + L * (r + 3 * d)


def test_the_lattice_is_lora_plus_every_tied_configuration():
    configs = tl.lattice(4)
    keys = [c.key for c in configs]
    assert len(keys) == len(set(keys)) == 16
    assert keys[0] == "untied:AB" and all(k.startswith("tied:") for k in keys[1:])
    assert {c.name for c in configs} >= set(tl.PRESETS)
    assert len({c.key for c in tl.all_configurations(4)}) == 30
    assert all(c.rank == 4 for c in configs)


@pytest.mark.parametrize("kwargs,field", [
    (dict(rank=0), "rank"),
    (dict(train_A=False, train_B=False, train_u=False, train_v=False), "nothing"),
])
def test_bad_configurations_are_refused_with_a_clear_message(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tl.TiedLoRAConfig(**kwargs)
    for key in ("TL9", "tiedAB", "shared:AB", "tied:ABw"):   # no preset, no tie, no such part
        with pytest.raises(ValueError, match="preset"):
            tl.TiedLoRAConfig.from_key(key)


# --------------------------------------------------------- 2. LoRA and VeRA corners


def _numpy_qkv(ad, x):
    """The base projection of an adapter's input, in NumPy."""
    return x @ ad.base.weight.numpy().T + ad.base.bias.numpy()


def test_untied_with_u_v_frozen_at_one_is_lora_with_alpha_equal_to_r():
    config = tl.TiedLoRAConfig.from_key("LoRA", 3)
    _, model = adapted(config, randomize=True)
    rng = np.random.default_rng(5)
    for ad in tl.adapters(model):
        ad.u.data[...] = 1.0                       # the LoRA corner: u = v = 1, frozen
        ad.v.data[...] = 1.0
        assert not ad.u.requires_grad and not ad.v.requires_grad
        x = rng.normal(size=(2, 5, 8))
        A, B = ad.A.numpy(), ad.B.numpy()
        alpha, r = 3, 3                            # LoRA: W x + (alpha / r) B A x
        want = _numpy_qkv(ad, x) + (alpha / r) * x @ (B @ A).T
        np.testing.assert_allclose(ad(nt.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    As = [ad.A for ad in tl.adapters(model)]
    assert all(a is not b for a, b in zip(As, As[1:]))   # untied: one A per layer


def test_lora_starts_with_b_zero_and_frozen_unit_scales():
    _, model = adapted(tl.TiedLoRAConfig.from_key("LoRA", 2))
    for ad in tl.adapters(model):
        assert ad.A.requires_grad and ad.B.requires_grad
        assert not ad.B.numpy().any() and ad.A.numpy().std() > 0
        assert (ad.u.numpy() == 1).all() and (ad.v.numpy() == 1).all()


def test_tied_frozen_a_b_with_trained_u_v_is_the_peft_vera_forward():
    config = tl.TiedLoRAConfig.from_key("VeRA-style", 4)
    _, model = adapted(config, randomize=True)
    ads = tl.adapters(model)
    assert all(ad.A is ads[0].A and ad.B is ads[0].B for ad in ads)   # shared
    assert not ads[0].A.requires_grad and not ads[0].B.requires_grad  # frozen
    vera_A, vera_B = ads[0].A.numpy(), ads[0].B.numpy()               # (r, in), (out, r)
    rng = np.random.default_rng(6)
    for ad in ads:
        lambda_d, lambda_b = ad.u.numpy(), ad.v.numpy()
        x = rng.normal(size=(7, 8))
        # peft: base(x) + lambda_b * (B @ (lambda_d * (A @ x))), one column x at a time
        want = np.stack([_numpy_qkv(ad, xi) + lambda_b * (vera_B @ (lambda_d * (vera_A @ xi)))
                         for xi in x])
        np.testing.assert_allclose(ad(nt.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ the initial scale


@pytest.mark.parametrize("key", ["TL6", "VeRA-style", "tied:Au"])
def test_random_a_and_b_start_at_fan_in_scale(key):
    d, r = 64, 16                                  # 1024 and 3072 entries: std to ~5%
    _, model = adapted(tl.TiedLoRAConfig.from_key(key, r), n_layer=1, d_model=d,
                       n_head=4)
    ad = tl.adapters(model)[0]
    assert ad.A.numpy().std() == pytest.approx(d ** -0.5, rel=0.1)     # N(0, 1/d)
    assert ad.B.numpy().std() == pytest.approx(r ** -0.5, rel=0.1)     # N(0, 1/r)
    assert abs(ad.A.numpy().mean()) < 0.2 * d ** -0.5


def _adam_steps(model, steps, lr, seed=1):
    """``steps`` AdamW steps (no decay, no clipping) on random tokens."""
    opt = AdamW(param_groups(model, 0.0), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x, y = rng.integers(0, V, (4, 8)), rng.integers(0, V, (4, 8))
        opt.zero_grad()
        model(x, y)[1].backward()
        opt.step()


@pytest.mark.parametrize("key", ["TL6", "TL5", "LoRA"])
def test_a_few_adam_steps_move_the_random_parts_by_what_the_rate_allows(key):
    # Adam moves each entry by about lr per step, whatever the gradient's size. At
    # LoRA's scale (rms 1/sqrt(d)) that is a relative change of order lr sqrt(d) per
    # step; at N(0, 1) it would be only lr, and a short run would leave A and B where
    # they started. Three steps: v = 0 (TL6) or B = 0 (TL5, LoRA) blocks A's gradient
    # on the first, and the zero-start part's gradient is what unblocks it.
    d, r, lr, steps = 64, 4, 1e-2, 3
    _, model = adapted(tl.TiedLoRAConfig.from_key(key, r), n_layer=2, d_model=d,
                       n_head=4)
    ads = tl.adapters(model)
    start = {n: np.concatenate([getattr(ad, n).numpy().ravel() for ad in ads])
             for n in "ABv"}
    _adam_steps(model, steps, lr)
    end = {n: np.concatenate([getattr(ad, n).numpy().ravel() for ad in ads]) for n in "ABv"}
    per_entry = {n: np.sqrt(np.mean((end[n] - start[n]) ** 2)) for n in start}
    zero = "v" if key == "TL6" else "B"
    # the zero-start part moved every step, by about lr per entry
    assert 0.3 * lr * steps < per_entry[zero] < 1.5 * lr * steps
    # A moved on the later steps, by a relative amount of order lr sqrt(d), far more
    # than the lr-sized relative change a unit-scale A would see
    relative_A = np.linalg.norm(end["A"] - start["A"]) / np.linalg.norm(start["A"])
    assert relative_A > 0.3 * lr * np.sqrt(d) > 2 * lr
    assert relative_A < 3 * lr * np.sqrt(d)


def test_tl6_can_start_at_b_zero_with_unit_scales_instead():
    config = tl.TiedLoRAConfig.from_key("TL6", 2)
    assert tl.zero_part(config) == "v"             # the default: v = 0, B random
    base, model = base_model(), base_model()
    nt.manual_seed(1)
    tl.attach(model, config, zero="B")
    for ad in tl.adapters(model):
        assert not ad.B.numpy().any() and ad.B.requires_grad
        assert (ad.u.numpy() == 1).all() and (ad.v.numpy() == 1).all() and ad.v.requires_grad
    x, _ = tokens()
    np.testing.assert_array_equal(logits(model, x), logits(base, x))     # zero start
    _adam_steps(model, 2, 1e-2)
    assert not update_is_zero(model)


@pytest.mark.parametrize("key,zero,match", [("VeRA-style", "B", "does not train B"),
                                            ("TL5", "v", "does not train v"),
                                            ("TL6", "A", "'v', 'B' or None")])
def test_a_zero_start_on_a_part_that_is_not_trained_is_refused(key, zero, match):
    with pytest.raises(ValueError, match=match):
        tl.attach(base_model(), tl.TiedLoRAConfig.from_key(key, 2), zero=zero)


# ------------------------------------------------------------------- 3. merging


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key", ["LoRA", "TL5", "TL6", "VeRA-style", "tied:Bu"])
def test_merged_weights_give_the_adapter_paths_output(key, device):
    dtype = np.float64 if device == "cpu" else np.float32
    _, model = adapted(tl.TiedLoRAConfig.from_key(key, 3), randomize=True, device=device,
                       dtype=dtype)
    x, _ = tokens()
    before = logits(model, x)
    weights = [ad.base.weight.numpy().copy() for ad in tl.adapters(model)]
    tl.merge(model)
    # The merged model is a plain GPT: load the merged weights into one and compare.
    plain = GPT(model.config).to(dtype).to(device)
    state = {k.replace(".qkv.base.", ".qkv."): v for k, v in model.state_dict().items()
             if not k.endswith((".A", ".B", ".u", ".v"))}
    state["__ties__"] = np.array([t for t in state["__ties__"] if "qkv" not in t])
    plain.load_state_dict(state)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits(model, x), before, **tol)
    np.testing.assert_allclose(logits(plain, x), before, **tol)
    assert any(np.abs(w - ad.base.weight.numpy()).max() > 1e-3
               for w, ad in zip(weights, tl.adapters(model)))        # W did change
    tl.unmerge(model)
    for w, ad in zip(weights, tl.adapters(model)):
        np.testing.assert_allclose(ad.base.weight.numpy(), w, **tol)
    np.testing.assert_allclose(logits(model, x), before, **tol)


# ------------------------------------------------------- 4. the tied gradient sum


def test_tied_a_and_b_gradients_are_the_sum_of_untied_per_layer_gradients():
    r = 2
    _, tied = adapted(tl.TiedLoRAConfig.from_key("TL6", r), randomize=True)
    _, untied = adapted(tl.TiedLoRAConfig(r, tie_AB=False), randomize=True)
    for t, u in zip(tl.adapters(tied), tl.adapters(untied)):   # equal copies of A, B
        for name in "ABuv":
            getattr(u, name).data = getattr(t, name).data.copy()
    x, y = tokens()
    np.testing.assert_allclose(logits(untied, x), logits(tied, x), rtol=1e-12, atol=1e-12)
    for model in (tied, untied):
        model.zero_grad()
        model(x, y)[1].backward()
    ads_t, ads_u = tl.adapters(tied), tl.adapters(untied)
    for name in "AB":
        per_layer = [getattr(ad, name).grad for ad in ads_u]
        assert all(np.abs(g).max() > 0 for g in per_layer)
        np.testing.assert_allclose(getattr(ads_t[0], name).grad, sum(per_layer),
                                   rtol=1e-10, atol=1e-12)
    for t, u in zip(ads_t, ads_u):                  # u and v are per layer in both
        np.testing.assert_allclose(t.u.grad, u.u.grad, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(t.v.grad, u.v.grad, rtol=1e-10, atol=1e-12)


def test_tied_adapter_gradients_match_finite_differences():
    _, model = adapted(tl.TiedLoRAConfig.from_key("TL6", 2), randomize=True)
    x, y = tokens()
    assert gradcheck_module(model, lambda: model(x, y)[1], name="TL6 GPT")


# ----------------------------------------------------------------- 5. zero start


@pytest.mark.parametrize("device", DEVICES)
def test_the_adapted_model_starts_as_the_base_whenever_v_or_b_starts_at_zero(device):
    dtype = np.float64 if device == "cpu" else np.float32
    x, _ = tokens()
    seen = {True: 0, False: 0}
    for config in tl.all_configurations(3):
        base, model = adapted(config, device=device, dtype=dtype)
        seen[config.zero_start] += 1
        if config.zero_start:
            assert update_is_zero(model), config.key
            np.testing.assert_array_equal(logits(model, x), logits(base, x))
        else:                # v and B frozen: nothing starts at zero (see the docstring)
            assert not (config.train_v or config.train_B)
            assert not update_is_zero(model)
            assert np.abs(logits(model, x) - logits(base, x)).max() > 1e-3
    assert seen == {True: 24, False: 6}


# ----------------------------------------------------- 6. frozen parts stay frozen


@pytest.mark.parametrize("key", ["LoRA", "TL5", "TL6", "VeRA-style", "tied:Av"])
def test_frozen_parts_get_no_gradient_no_update_and_no_optimizer_state(key):
    config = tl.TiedLoRAConfig.from_key(key, 2)
    _, model = adapted(config)
    named = dict(model.named_parameters())
    frozen = {n for n, p in named.items() if not p.requires_grad}
    trained = set(named) - frozen
    assert trained and all(".qkv." in n for n in trained)
    before = {n: p.numpy().copy() for n, p in named.items()}
    opt = AdamW(param_groups(model, 0.01), lr=1e-2)     # as the training loop builds it
    assert {id(p) for p in opt.parameters()} == {id(named[n]) for n in trained}
    x, y = tokens()
    for _ in range(2):
        opt.zero_grad()
        model(x, y)[1].backward()
        assert all(named[n].grad is None for n in frozen)
        opt.step()
    assert all(id(named[n]) not in opt.state for n in frozen)
    assert all(set(opt.state[id(named[n])]) == {"step", "m", "v"} for n in trained)
    for n in frozen:
        np.testing.assert_array_equal(named[n].numpy(), before[n], err_msg=n)
    assert any(not np.array_equal(named[n].numpy(), before[n]) for n in trained)


def test_the_training_loop_leaves_the_base_model_untouched():
    _, model = adapted(tl.TiedLoRAConfig.from_key("TL6", 2), dtype=np.float32)
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.requires_grad}
    ids = np.random.default_rng(0).integers(0, V, 400)
    train(model, ids, ids, TrainConfig(steps=3, batch_size=2, warmup_steps=1,
                                       eval_interval=3, eval_batches=1), progress=False)
    for n, p in model.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.numpy(), frozen[n], err_msg=n)
    assert not update_is_zero(model)


def test_state_dict_saves_the_tied_pair_once_and_restores_the_tie():
    config = tl.TiedLoRAConfig.from_key("TL6", 2)
    _, model = adapted(config, randomize=True)
    state = model.state_dict()
    assert "blocks.0.attn.qkv.A" in state and "blocks.1.attn.qkv.A" not in state
    _, fresh = adapted(config, seed=3)
    fresh.load_state_dict(state)
    ads = tl.adapters(fresh)
    assert all(ad.A is ads[0].A for ad in ads)
    x, _ = tokens()
    np.testing.assert_array_equal(logits(fresh, x), logits(model, x))


def test_attach_refuses_a_model_that_already_has_adapters():
    _, model = adapted(tl.TiedLoRAConfig())
    with pytest.raises(ValueError, match="already"):
        tl.attach(model, tl.TiedLoRAConfig())


def test_an_adapter_refuses_a_misshapen_part_and_adapters_asks_for_attach():
    """A u of shape (1,) would broadcast silently over the r ranks; it is refused."""
    base = base_model()
    qkv = base.blocks[0].attn.qkv
    (d_out, d), r = qkv.weight.shape, 2
    shapes = {"A": (r, d), "B": (d_out, r), "u": (1,), "v": (d_out,)}
    parts = [nt.nn.Parameter(np.zeros(s)) for s in shapes.values()]
    with pytest.raises(ValueError, match=r"u has shape \(1,\), expected \(2,\)"):
        tl.TiedLoRALinear(qkv, *parts)
    with pytest.raises(ValueError, match="no Tied-LoRA adapters; call attach"):
        tl.adapters(base)


# ------------------------------------------------------------------ the experiment

TINY_BASE = (GPTConfig(context=16, d_model=16, n_layer=2, n_head=2),
             TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_interval=4,
                         eval_batches=1))
TINY_SWEEP = experiment.SweepProfile(ranks=(2,), steps=2, batch_size=2, block_size=16,
                                     warmup_steps=1, eval_windows=4, code_bytes=20_000)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(gpt_experiment.PROFILES, "quick", TINY_BASE)
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY_SWEEP)


def test_experiment_tunes_each_configuration_on_val_and_reports_every_seed(tiny, tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "tied-lora")
    out = tmp_path / "tied-lora"
    for name in ("report.md", "results.json", "loss_vs_params.png", "test_bpb.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    rows = saved["rows"]
    names = [r["config"] for r in rows]
    assert set(names) == set(tl.PRESETS) | {experiment.SENSITIVITY}
    for r in rows:
        assert r["trainable"] == r["formula"]
        assert r["seeds"] == [0, 1] and len(r["test_bpb"]["values"]) == 2
        assert all(np.isfinite(v) for v in r["test_bpb"]["values"])
        # the reported rate is the one with the best validation figure of the grid
        grid = saved["tuning"][f"{r['key']} r={r['rank']}"]["grid"]
        assert set(grid) == {str(lr) for lr in TINY_SWEEP.lrs}
        assert r["lr"] == float(min(grid, key=lambda lr: grid[lr]["mean"]))
    at = {r["config"]: r for r in rows}
    assert at["TL5"]["trainable"] * TINY_BASE[0].n_layer == at["LoRA"]["trainable"]
    assert at[experiment.SENSITIVITY]["lr"] == at["TL6"]["lr"]
    assert at[experiment.SENSITIVITY]["zero"] == "B" and at["TL6"]["zero"] == "v"
    assert at["VeRA-style"]["moved"].keys() >= {"u", "v"} and "A" not in at["VeRA-style"]["moved"]
    assert at["TL6"]["moved"]["v"]["relative"] is None          # v started at zero
    assert at["TL6"]["moved"]["A"]["relative"] > 0
    assert {v["outcome"] for v in saved["verdicts"]} <= {"holds", "does not hold",
                                                          "within noise"}
    assert results["headline"]["verdict"] == saved["verdicts"][0]["outcome"]
    report = (out / "report.md").read_text()
    assert "The paper's claim" in report and "each seed" in report and "What moved" in report
    lora_gain = [g for g in saved["gains"] if g["config"] == "LoRA"][0]
    assert lora_gain["share_of_lora"] == pytest.approx(1.0)
    assert (f"{at['TL6']['test_bpb']['mean']:.3f}" in report)


def test_a_second_run_reuses_every_run_and_the_base(tiny, tmp_path, capsys):
    first = experiment.run(quick=True, out_dir=tmp_path / "tied-lora")
    checkpoints = sorted((tmp_path / "cache").glob("gpt-quick-*.npz"))
    assert len(checkpoints) == 1                 # one base, seed 0's, trained once
    stamp = checkpoints[0].stat().st_mtime_ns
    second = experiment.run(quick=True, out_dir=tmp_path / "tied-lora")
    assert not any(r["cached"] for r in first["runs"])
    assert all(r["cached"] for r in second["runs"])
    assert [r["test_bpb"] for r in second["rows"]] == [r["test_bpb"] for r in first["rows"]]
    assert checkpoints[0].stat().st_mtime_ns == stamp


def test_the_adapters_train_on_the_gpt_experiments_seed_0_base(tiny, tmp_path):
    gpt = gpt_experiment.run(quick=True, out_dir=tmp_path / "gpt")
    results = experiment.run(quick=True, out_dir=tmp_path / "tied-lora")
    seed0 = [r for r in gpt["runs"] if r["seed"] == 0][0]
    assert results["base_prose_bpb"]["test"] == seed0["test"]["bpb"]
    assert len(list((tmp_path / "cache").glob("gpt-quick-*.npz"))) == 2   # gpt's 2 seeds


def test_movement_reports_relative_change_and_the_rms_reached_from_zero():
    start = {"A": np.array([3.0, 4.0]), "B": np.zeros(2), "u": np.ones(2), "v": np.zeros(3)}
    end = {"A": np.array([3.0, 4.5]), "B": np.array([0.3, -0.4]), "u": np.ones(2),
           "v": np.array([0.1, -0.1, 0.1])}
    m = experiment.movement(start, end, "ABv")
    assert m["A"]["relative"] == pytest.approx(0.5 / 5.0)
    assert m["B"]["relative"] is None
    assert m["B"]["rms_change"] == pytest.approx(np.sqrt((0.09 + 0.16) / 2))
    assert "u" not in m and m["mean_abs_v"] == pytest.approx(0.1)


def test_evaluation_windows_spread_over_the_whole_split():
    ids = np.arange(1000)
    w = experiment.spread_windows(ids, T=16, n=5)
    assert w.shape == (5, 17)
    assert w[0, 0] == 0 and w[-1, -1] == 999                   # first and last id
    assert (np.diff(w, axis=1) == 1).all()                      # each window contiguous
    assert (np.diff(w[:, 0]) > 16).all()                        # no overlap, spread out
    with pytest.raises(ValueError, match="window"):
        experiment.spread_windows(np.arange(10), T=16, n=2)


def test_windows_bpb_is_the_models_mean_next_byte_loss_in_bits():
    nt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, context=8, d_model=8, n_layer=1, n_head=2))
    windows = np.random.default_rng(0).integers(0, V, (5, 9))
    with nt.no_grad():
        nats = [float(model(w[None, :-1], w[None, 1:])[1].item()) for w in windows]
    assert experiment.windows_bpb(model, windows, batch_size=2) == pytest.approx(
        np.mean(nats) / np.log(2), rel=1e-6)
    assert model.training                                       # train mode restored


def test_a_sweep_runs_only_the_chosen_configurations(tiny, tmp_path):
    profile = replace(TINY_SWEEP, configs=("TL6", "tied:Bu"), sensitivity=False, seeds=1)
    runner = experiment.protocol.Runner()
    base = gpt_experiment.base_run(True, 0, tmp_path / "cache")
    runner.map([base])
    raw = experiment.sweep(profile, base.settings, runner)
    assert [c.key for c in raw["configs"]] == ["tied:ABuv", "tied:Bu"]
    assert {r.run.settings["config"] for r in raw["grid"]} == {"tied:ABuv", "tied:Bu"}
    assert len(raw["grid"]) == 2 * len(profile.lrs) and raw["later"] == []


@pytest.mark.parametrize("shift,outcome", [(0.0, "holds"), (-0.5, "does not hold"),
                                            (0.5, "does not hold")])
def test_the_sensitivity_row_is_parity_both_ways(shift, outcome):
    """TL6's result from the B = 0 start must be neither far worse nor far better."""
    from nanotie.protocol import spread

    rows = [{"config": "TL6", "rank": 8, "test_bpb": spread([3.00, 3.01])},
            {"config": experiment.SENSITIVITY, "rank": 8,
             "test_bpb": spread([3.00 + shift, 3.01 + shift])}]
    (what, v), = experiment.verdicts_at(rows, 8)
    assert "sensitivity" in what and v.outcome == outcome


def test_experiment_is_registered():
    assert REGISTRY["tied-lora"].module == "nanotie.papers.tied_lora.experiment"


def test_a_sweep_of_a_configuration_name_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="preset"):
        experiment.SweepProfile(configs=("TL9",)).configurations()


@pytest.mark.slow
def test_quick_profile_lora_and_tl6_improve_on_the_frozen_base(tmp_path):
    results = experiment.run(quick=True, out_dir=tmp_path / "tied-lora")
    for row in results["rows"]:
        if row["config"] in ("LoRA", "TL6"):
            assert row["test_bpb"]["max"] < results["base_code_bpb"]["test"], row["config"]
