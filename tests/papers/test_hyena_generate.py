"""Distilled Hyena LMs: sharing with the original, the parallel and recurrent forms,
O(1) generation, the throughput steppers and the experiment's distillation section.

Models are tiny and random (the properties do not depend on training); the
equivalences are checked in float64.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nanotie as nt
from nanotie import Tensor, backend
from nanotie.autograd import no_grad
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import count_parameters
from nanotie.papers.distillery import reduction as ds
from nanotie.papers.distillery import generate as gen
from nanotie.papers.distillery import throughput as tp
from nanotie.papers.distillery.study import DistillStudy, distill_study
from nanotie.papers.distillery.distilled import DistilledMultiHyena, distill, distilled_operator
from nanotie.papers.hyena.model import HyenaConfig, HyenaLM
from nanotie.papers.hyena.operator import MultiHyenaOperator, linear_attention_with_decay
from nanotie.report import write_results
from nanotie.train import TrainConfig, train

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]
MIXERS = ["hyena", "multihyena"]
SMALL = dict(filter_width=16, filter_emb_dim=5, filter_inner=1)


def lm(mixer="hyena", context=32, d_model=16, n_layer=2, n_head=4, seed=0, double=True):
    backend.manual_seed(seed)
    model = HyenaLM(HyenaConfig(context=context, d_model=d_model, n_layer=n_layer,
                                n_head=n_head, mixer=mixer, **SMALL))
    return model.double() if double else model


def tokens(shape, seed=1, vocab=256):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def logits_of(model, idx, cache=None):
    with no_grad():
        return backend.asnumpy(model(idx, cache=cache)[0].data)


# ---------------------------------------------------------------- sharing, quality


@pytest.mark.parametrize("mixer", MIXERS)
def test_distilled_model_shares_every_parameter_but_the_implicit_filters(mixer):
    model = lm(mixer)
    distilled = distill(model, order=4)
    original = {id(p): name for name, p in model.named_parameters()}
    kept = {id(p) for p in distilled.parameters()}
    assert kept <= set(original)                              # nothing new to train
    dropped = {original[i] for i in set(original) - kept}
    filters = {f"blocks.{i}.attn.filter.{n}" for i, op in enumerate(model.mixers())
               for n, _ in op.filter.named_parameters()}
    assert dropped == filters                                 # exactly the implicit filters
    assert distilled.lm_head.weight is distilled.wte.weight is model.wte.weight
    for op, dop in zip(model.mixers(), distilled.mixers()):
        assert dop.dskip is op.dskip and dop.short is op.short and dop.in_proj is op.in_proj
    assert count_parameters(distilled) == count_parameters(model) - sum(
        count_parameters(op.filter) for op in model.mixers())
    # Aliasing, not copying: a change to a shared weight shows up in the distilled model.
    idx = tokens((1, 12))
    before = logits_of(distilled, idx)
    model.blocks[0].mlp.fc.weight.data *= 2
    assert np.abs(logits_of(distilled, idx) - before).max() > 1e-6


def test_distilled_model_trains_its_shared_weights_and_saves_them_once():
    """The parallel form is differentiable: gradients reach every shared weight (a
    float64 central-difference check). Its state_dict holds the shared weights, the
    tie saved once, and loads back into the original model's distilled twin."""
    model = lm("multihyena", context=12, d_model=8, n_layer=1, n_head=2)
    distilled = distill(model, order=2)
    idx, tgt = tokens((2, 12)), tokens((2, 12), seed=2)
    assert gradcheck_module(distilled, lambda: distilled(idx, tgt)[1], max_elements=16)
    state = distilled.state_dict()
    assert "lm_head.weight" not in state and "wte.weight" in state
    assert not any(".filter." in key for key in state)
    other = distill(lm("multihyena", context=12, d_model=8, n_layer=1, n_head=2, seed=5),
                    order=2)
    other.load_state_dict(state)
    assert other.lm_head.weight is other.wte.weight
    np.testing.assert_array_equal(other.wte.weight.numpy(), distilled.wte.weight.numpy())


def test_the_training_loop_trains_a_distilled_model_and_moves_the_originals_weights():
    """nt.train builds its optimizer from the model's param_groups: a distilled model,
    whose mixers have no implicit filter, trains, and the step moves the shared weights."""
    model = lm("multihyena", context=12, d_model=8, n_layer=1, n_head=2)
    distilled = distill(model, order=2)
    before = model.blocks[0].attn.in_proj.weight.numpy().copy()
    train(distilled, tokens(200), tokens(200, seed=2), TrainConfig(
        steps=1, batch_size=2, warmup_steps=0, eval_interval=1, eval_batches=1),
        progress=False)
    assert np.abs(model.blocks[0].attn.in_proj.weight.numpy() - before).max() > 0


@pytest.mark.parametrize("mixer", MIXERS)
def test_distilled_model_matches_the_original_better_as_the_order_grows(mixer):
    """The distilled LM's logits approach the original's as the order grows, and at
    the highest order they are close (relative to the logits' spread)."""
    model = lm(mixer)
    idx = tokens((2, 32))
    reference = logits_of(model, idx)
    gaps = []
    for order in (1, 4, 14):
        distilled = distill(model, order=order)
        gaps.append(np.abs(logits_of(distilled, idx) - reference).max())
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[-1] < 1e-3 * reference.std()


def test_distilled_filters_are_the_banks_impulse_responses():
    model = lm("multihyena")
    distilled = distill(model, tol=1e-3, max_order=8)
    for op, dop in zip(model.mixers(), distilled.mixers()):
        np.testing.assert_allclose(dop.filter_array(), dop.bank.impulse_response(),
                                   atol=1e-12)
        assert dop.filter_array().shape == op.filter_array().shape
        # h_0 is kept exactly (the direct term), whatever the order
        np.testing.assert_allclose(dop.filter_array()[:, 0], op.filter_array()[:, 0])


def test_distill_validates_its_arguments():
    model = lm()
    for length in (3, 33):
        with pytest.raises(ValueError, match=rf"length must be in \[4, 32\], got {length}"):
            distill(model, order=2, length=length)
    with pytest.raises(TypeError, match="HyenaLM"):
        distill(distill(model, order=2), order=2)
    with pytest.raises(TypeError, match="distil"):
        gen.init_state(model, 1)                    # an undistilled model has no recurrence


# ------------------------------------------------- the parallel and recurrent forms


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("split", [1, 9])
def test_prefill_plus_steps_equals_the_parallel_forward(mixer, split, device):
    """Spec property: token-by-token generation (a prefill of the first `split`
    tokens, then one step per token) gives the logits of the parallel forward of the
    distilled model on the same sequence (float64)."""
    distilled = distill(lm(mixer), order=6).to(device)
    idx = tokens((3, 32))
    parallel = logits_of(distilled, idx)
    state = gen.init_state(distilled, 3)
    pieces = [logits_of(distilled, idx[:, :split], state)]
    for t in range(split, idx.shape[1]):
        pieces.append(logits_of(distilled, idx[:, t:t + 1], state))
    assert state.length == idx.shape[1]
    recurrent = np.concatenate(pieces, axis=1)
    assert np.abs(recurrent - parallel).max() <= 1e-10 * np.abs(parallel).max()


@pytest.mark.parametrize("mixer", MIXERS)
def test_a_prompt_can_be_prefilled_in_chunks(mixer):
    """A prefill continues from a state: three chunks give the parallel logits."""
    distilled = distill(lm(mixer), order=4)
    idx = tokens((2, 30))
    parallel = logits_of(distilled, idx)
    state = gen.init_state(distilled, 2)
    pieces = [logits_of(distilled, idx[:, a:b], state) for a, b in [(0, 7), (7, 8), (8, 30)]]
    np.testing.assert_allclose(np.concatenate(pieces, 1), parallel, rtol=0,
                               atol=1e-10 * np.abs(parallel).max())


def test_multihyena_recurrence_with_one_pole_is_linear_attention_with_decay():
    """Spec property (MultiHyena's recurrent form): with the single-pole filter
    h_t = lam^t, the distilled operator's per-head state steps reproduce the
    independent linear-attention-with-decay reference of ``operator.py``."""
    B, L, D, M, lam = 2, 20, 12, 3, 0.8
    backend.manual_seed(3)
    op = MultiHyenaOperator(D, L, M, **SMALL).double()
    # h_0 = 1 (the direct term), h_t = R lam^(t-1) with R = lam, for every head.
    bank = ds.ModalFilterBank(np.full((M, 1), lam + 0j), np.full((M, 1), lam + 0j),
                              np.ones(M), L)
    dop = distilled_operator(op, bank)
    assert isinstance(dop, DistilledMultiHyena)
    u = Tensor(np.random.default_rng(4).standard_normal((B, L, D)))
    cache = gen.init_cache(dop, B)
    with no_grad():
        steps = [dop(u[:, t:t + 1], cache).numpy() for t in range(L)]
        q, k, v = (backend.asnumpy(a.data).reshape(B, M, D // M, L) for a in op.project(u))
        y = linear_attention_with_decay(q, k, v, lam, op.dskip_array())     # (B, M, N, L)
        reference = op.out_proj(Tensor(y.reshape(B, D, L).swapaxes(1, 2))).numpy()
        parallel = dop(u).numpy()
    np.testing.assert_allclose(np.concatenate(steps, 1), reference, atol=1e-12)
    np.testing.assert_allclose(parallel, reference, atol=1e-12)


def test_float32_model_runs_a_complex64_state_and_agrees_with_its_parallel_form():
    distilled = distill(lm("hyena", double=False), order=4)
    idx = tokens((1, 24))
    parallel = logits_of(distilled, idx)
    state = gen.init_state(distilled, 1)
    assert state.layers[0].state.dtype == np.complex64
    pieces = [logits_of(distilled, idx[:, :5], state)]
    pieces += [logits_of(distilled, idx[:, t:t + 1], state) for t in range(5, 24)]
    recurrent = np.concatenate(pieces, 1)
    assert recurrent.dtype == np.float32
    assert np.abs(recurrent - parallel).max() <= 1e-4 * np.abs(parallel).max()


# ------------------------------------------------------------------- generation


@pytest.mark.parametrize("mixer", MIXERS)
def test_generate_greedy_and_sampled_match_the_parallel_model(mixer):
    """generate() has GPT.generate's options: greedy (temperature 0) and seeded
    top-k sampling pick the same tokens as re-running the parallel model (whose
    logits agree to round-off), and top_k=1 is greedy."""
    distilled = distill(lm(mixer), order=6)
    prompt = tokens((2, 5))
    greedy = distilled.generate(prompt, 20, temperature=0)
    assert greedy.shape == (2, 25) and np.array_equal(greedy[:, :5], prompt)
    np.testing.assert_array_equal(greedy, distilled.generate(prompt, 20, temperature=0,
                                                             use_cache=False))
    sampled = distilled.generate(prompt, 20, temperature=1.0, top_k=50, seed=7)
    np.testing.assert_array_equal(sampled, distilled.generate(
        prompt, 20, temperature=1.0, top_k=50, seed=7, use_cache=False))
    assert not np.array_equal(sampled, greedy)
    np.testing.assert_array_equal(distilled.generate(prompt, 20, top_k=1, seed=3), greedy)
    with pytest.raises(ValueError, match="temperature"):
        distilled.generate(prompt, 2, temperature=-1)
    with pytest.raises(ValueError, match="prompt"):
        distilled.generate(np.zeros((2, 0), np.int64), 2)


def test_the_state_does_not_grow_and_generation_runs_past_the_context():
    """Spec property (O(1) memory per token): the recurrent state holds the same
    numbers after 3 tokens and after 300; the filters' length no longer limits
    generation (the modal filters are defined for every t)."""
    distilled = distill(lm("multihyena", context=16), order=4)
    state = gen.init_state(distilled, 1)
    logits_of(distilled, tokens((1, 3)), state)
    size = state.numbers()
    shapes = [(c.window.shape, c.state.shape) for c in state.layers]
    for t in range(297):
        logits_of(distilled, tokens((1, 1), seed=t), state)
    assert state.numbers() == size and state.length == 300
    assert [(c.window.shape, c.state.shape) for c in state.layers] == shapes
    out = distilled.generate(tokens((1, 4)), 40, seed=0)
    assert out.shape == (1, 44)
    # the parallel form stops at the context
    with pytest.raises(ValueError, match="longer than the filters' max_len 16"):
        logits_of(distilled, tokens((1, 20)))


@pytest.mark.slow
def test_per_token_time_does_not_grow_with_context():
    """Spec property 6, timed: the median step at context 4096 is within 2x of the
    step at context 64 (the recurrence's work is the same; the margin is for noise)."""
    base = HyenaConfig(d_model=32, n_layer=2, n_head=4, **SMALL)
    model = tp.generation_models(base, 4096, order=8, kinds=("distilled_hyena",))
    stepper = tp.stepper_for("distilled_hyena", model["distilled_hyena"])

    def median_step(prompt):
        with no_grad():
            stepper.prefill(prompt)
        return tp.time_steps({"distilled": stepper}, steps=50, rounds=1)["distilled"]["median"]

    short, long = median_step(tokens((1, 64))), median_step(tokens((1, 4096)))
    assert long < 2 * short


# ---------------------------------------------- cached Hyena, preallocated KV cache


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("split", [1, 9])
def test_cached_hyena_steps_equal_the_parallel_forward(mixer, split):
    """The UNdistilled model with a ConvCache (prefill, then one position per call)
    gives the logits of its own parallel forward, and keeps O(L) state."""
    model = lm(mixer)
    idx = tokens((3, 32))
    parallel = logits_of(model, idx)
    state = gen.init_conv_state(model, 3)
    pieces = [logits_of(model, idx[:, :split], state)]
    before = state.nbytes()
    for t in range(split, idx.shape[1]):
        pieces.append(logits_of(model, idx[:, t:t + 1], state))
    assert state.length == 32 and all(c.length == 32 for c in state.layers)
    assert state.nbytes() > before                    # the cache grows with the context
    cached = np.concatenate(pieces, axis=1)
    assert np.abs(cached - parallel).max() <= 1e-10 * np.abs(parallel).max()
    with pytest.raises(ValueError, match="longer than"):
        logits_of(model, idx[:, :1], state)           # past the filters' length


def test_an_operators_own_cache_refuses_positions_past_its_filters():
    """Used without the LM (whose embedding checks the context first), a ConvCache
    names the overflow instead of failing inside a NumPy slice assignment."""
    op = lm().mixers()[0]                                       # filters of length 32
    cache = gen.init_conv_cache(op, 1)
    u = Tensor(np.zeros((1, 20, op.d_model)))
    with no_grad():
        cache.forward(op, u)
        with pytest.raises(ValueError, match="40 positions exceed the filters' length 32"):
            cache.forward(op, u)


def test_state_per_sequence_is_constant_only_for_the_distilled_model():
    """What each stepper keeps per sequence: the distilled state does not grow with
    the context; the cached Hyena's and the KV cache's grow linearly."""
    base = HyenaConfig(d_model=16, n_layer=1, n_head=4, **SMALL)
    models = tp.generation_models(base, 128, order=4, fit_length=32)
    grows = {}
    for kind in ("hyena_cached", "transformer_kv", "distilled_hyena"):
        sizes = []
        for L in (32, 64, 96):
            stepper = tp.stepper_for(kind, models[kind])
            with no_grad():
                stepper.prefill(tokens((1, L)))
            sizes.append(stepper.state_bytes())
        grows[kind] = sizes
    assert len(set(grows["distilled_hyena"])) == 1
    for kind in ("hyena_cached", "transformer_kv"):
        a, b, c = grows[kind]
        assert b - a == c - b > 0                        # linear in L


# ------------------------------------------------------------ throughput steppers


def test_the_steppers_generate_what_the_models_generate():
    """The timed steppers do real work: each one's greedy tokens are the model's own
    greedy continuation (and the chunked KV prefill equals the unchunked one)."""
    base = HyenaConfig(d_model=16, n_layer=1, n_head=4, **SMALL)
    models = tp.generation_models(base, 64, order=4, fit_length=32)
    assert set(models) == set(tp.KINDS)
    prompt = tokens((1, 40))
    for kind, model in models.items():
        model = model.double()
        stepper = tp.stepper_for(kind, model)
        if kind == "transformer_kv":
            stepper.chunk = 16                              # 40 tokens in 3 chunks
        produced = []
        with no_grad():
            stepper.prefill(prompt)
            for _ in range(4):
                stepper.step()
                last = stepper.window[:, -1] if kind == "hyena_recompute" else stepper.last
                produced.append(int(last[0]))
        # Hyena's first step makes token 40; the others made it in their prefill.
        first = 40 if kind == "hyena_recompute" else 41
        expected = model.generate(prompt, first - 36, temperature=0)[0, first:]
        assert produced == list(expected), kind
        timing = tp.time_steps({kind: stepper}, steps=2, rounds=1)[kind]
        assert timing["median"] > 0 and len(timing["rounds"]) == 1


# ------------------------------------------------------------------- experiment


def test_distill_study_compares_three_methods_against_both_bounds(tmp_path):
    """The study's figures on a small model: the modal fit never below the tight
    bound nor above balanced truncation or ERA, the tight bound never below the loose
    one, Hankel-norm ratios >= 1, finite test bits per byte, and JSON-ready."""
    from nanotie.papers.gpt.experiment import prose_splits

    model = lm("hyena", context=24, d_model=8, n_layer=1, double=False)
    study = DistillStudy(orders=(1, 2, 4), contexts=(16, 32), eval_batches=2, eval_batch=4)
    r = distill_study(model, prose_splits().test, study)
    err, tight, loose = (np.array(r[k]) for k in ("rel_error", "rel_tight", "rel_loose"))
    assert err.shape == tight.shape == (8, 3)
    assert r["bound_holds"] and np.all(err >= tight) and np.all(tight >= loose * (1 - 1e-9))
    assert np.all(np.diff(err, axis=1) <= 1e-12)               # the error falls with d
    assert r["modal_over_balanced_max"] <= 1 + 1e-9 and r["modal_over_era_max"] <= 1 + 1e-9
    assert r["hankel_ratio_min"] >= 1 - 1e-9
    assert all(x >= 1 for x in r["fit_over_tight"] if np.isfinite(x))
    b = r["bpb"]
    assert all(0 < x < 9 for x in b["by_order"] + [b["original"], b["order_0"], b["chosen"]])
    assert sum(r["chosen_orders_hist"]) == 8
    saved = json.loads(write_results(tmp_path, {"d": r}).read_text())   # JSON-ready
    assert saved["d"]["orders"] == [1, 2, 4]
