"""Headless LMs / Contrastive Weight Tying: the spec's properties, as tests.

1. CWT is cross-entropy over O T^T / tau with the labels on the diagonal.
2. With every vocabulary id exactly once in S, CWT equals the tied softmax loss.
3. With duplicates, the loss at a position is at least log m_k.
4. Gradient routing into E: rows used only as targets get gradient, absent rows none,
   and E's gradient is the sum of its input-side and target-side uses.
5. Gradient checks (float64, repeated ids).
6. The MLM masking statistics, on a large sample.
Plus: the LM read-outs (E^T head, cloned head, head-only fine-tuning), the
bidirectional encoder, the probe, and the experiment's outputs on a tiny profile.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nanotie as nt
from nanotie import Tensor
from nanotie.gradcheck import gradcheck, gradcheck_module
from nanotie.nn import GPT, GPTConfig, count_parameters
from nanotie.nn import functional as F
from nanotie.nn.optim import AdamW
from nanotie.ops import embedding
from nanotie.papers import REGISTRY
from nanotie.papers.headless import (HeadlessConfig, HeadlessGPT, cwt_loss,
                                     freeze_all_but_head, lm_from_headless)
from nanotie.papers.headless.mlm import (IGNORE_INDEX, MaskedLM, MaskingConfig,
                                         mask_tokens, mlm_loss_fn)
from nanotie.papers.headless.probe import (effective_rank, linear_probe,
                                           pooled_features, topic_passages)

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]
f64 = np.float64


def small_config(**overrides) -> HeadlessConfig:
    cfg = dict(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2)
    return HeadlessConfig(**{**cfg, **overrides})


def perturbed(model, seed=0, scale=0.3):
    """Move the weights away from the near-zero GPT-2 init (float64)."""
    model.to(f64)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + rng.normal(0.0, scale, p.shape)
    return model


def np_cwt(o, t, tau=1.0):
    """The per-position CWT loss written directly in NumPy, Eq. 3."""
    s = o @ t.T / tau
    m = s.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(axis=1, keepdims=True)))[:, 0]
    return lse - np.diag(s)


# ------------------------------------------------------------- 1. diagonal CE


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [1.0, 0.37])
def test_cwt_is_cross_entropy_with_diagonal_labels(device, tau):
    rng = np.random.default_rng(0)
    K, D = 9, 5
    o, t = rng.normal(size=(K, D)), rng.normal(size=(K, D))
    O, T = Tensor(o, device=device), Tensor(t, device=device)
    ours = cwt_loss(O, T, tau).item()
    diag_ce = F.cross_entropy(O @ T.T / tau, nt.backend.xp_for(device).arange(K)).item()
    np.testing.assert_allclose(ours, diag_ce, rtol=1e-12)
    np.testing.assert_allclose(ours, np_cwt(o, t, tau).mean(), rtol=1e-12)
    per_k = cwt_loss(O, T, tau, reduction="none")
    assert per_k.shape == (K,)
    np.testing.assert_allclose(per_k.numpy(), np_cwt(o, t, tau), rtol=1e-12)


# ------------------------------------------------ 2. every id once = tied softmax


@pytest.mark.parametrize("device", DEVICES)
def test_every_vocabulary_id_once_gives_the_tied_softmax_loss(device):
    rng = np.random.default_rng(1)
    V, D = 10, 6
    E = Tensor(rng.normal(size=(V, D)), device=device)
    O = Tensor(rng.normal(size=(V, D)), device=device)
    ids = rng.permutation(V)                            # S holds each id exactly once
    ours = cwt_loss(O, embedding(E, ids)).item()
    tied = F.cross_entropy(O @ E.T, nt.backend.xp_for(device).asarray(ids)).item()
    np.testing.assert_allclose(ours, tied, rtol=1e-12)
    # With one id missing from S the two differ (the check above could not pass by luck).
    ours_short = cwt_loss(O[:-1], embedding(E, ids[:-1])).item()
    tied_short = F.cross_entropy(O[:-1] @ E.T,
                                 nt.backend.xp_for(device).asarray(ids[:-1])).item()
    assert abs(ours_short - tied_short) > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_headless_gpt_with_each_id_once_matches_its_zero_shot_lm(device):
    """Model level: the HeadlessGPT's loss on a window whose targets are a permutation
    of the vocabulary equals the CE loss of the tied GPT built from its weights."""
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config(vocab_size=8))).to(device)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 8, (1, 8)), rng.permutation(8)[None]
    _, loss = model(x, y)
    lm = lm_from_headless(model, "tied")
    assert lm.lm_head.weight is lm.wte.weight
    np.testing.assert_allclose(loss.item(), lm(x, y)[1].item(), rtol=1e-10)


# ------------------------------------------------------- 3. duplicates: log m_k


def test_each_position_loss_is_at_least_log_of_its_target_count():
    rng = np.random.default_rng(3)
    for trial in range(20):
        V, K, D = 5, 16, 4
        E = Tensor(rng.normal(size=(V, D)) * rng.uniform(0.1, 5))
        O = Tensor(rng.normal(size=(K, D)) * rng.uniform(0.1, 5))
        ids = rng.integers(0, V, K)
        losses = cwt_loss(O, embedding(E, ids), reduction="none").numpy()
        m = np.bincount(ids, minlength=V)[ids]                 # m_k, count of x_k in S
        assert (losses >= np.log(m) - 1e-12).all(), trial


def test_the_log_m_bound_is_reached_by_a_perfect_model():
    """Orthonormal embeddings and o_k = c e(x_k) with c large: every copy of the right
    token scores c, the others 0, so the loss at k tends to log m_k."""
    V, K = 4, 10
    E = Tensor(np.eye(V))
    ids = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    O = Tensor(50.0 * np.eye(V)[ids])
    losses = cwt_loss(O, embedding(E, ids), reduction="none").numpy()
    m = np.bincount(ids, minlength=V)[ids]
    np.testing.assert_allclose(losses, np.log(m), atol=1e-15 + 1e-12)
    assert K == len(ids)


# ------------------------------------------------------ 4. gradient routing into E


@pytest.mark.parametrize("device", DEVICES)
def test_rows_used_only_as_targets_get_gradient_and_absent_rows_get_none(device):
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config())).to(device)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, (2, 8))                      # inputs: ids 0..3
    y = rng.integers(4, 7, (2, 8))                      # targets only: ids 4..6
    _, loss = model(x, y)                               # ids 7..11: absent
    loss.backward()
    g = np.abs(nt.backend.asnumpy(model.wte.weight.grad)).sum(axis=1)
    assert (g[0:4] > 0).all() and (g[4:7] > 0).all()
    assert (g[7:] == 0).all()
    # The softmax head, for contrast, sends gradient to EVERY row.
    nt.manual_seed(0)
    ce = perturbed(GPT(GPTConfig(**{k: getattr(model.config, k) for k in
                                    ("vocab_size", "context", "d_model", "n_layer",
                                     "n_head")}))).to(device)
    ce(x, y)[1].backward()
    assert (np.abs(nt.backend.asnumpy(ce.wte.weight.grad)).sum(axis=1) > 0).all()


def test_embedding_gradient_is_the_sum_of_input_and_target_uses():
    """Targets are NOT detached: E's gradient equals the gradient with E as inputs
    only plus the gradient with E as targets only (two separate copies)."""
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config()))
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 12, (2, 8)), rng.integers(0, 12, (2, 8))
    model(x, y)[1].backward()
    tied_grad = model.wte.weight.grad.copy()

    model.zero_grad()
    target_copy = Tensor(model.wte.weight.data.copy(), requires_grad=True)
    outputs, _ = model(x)
    loss = cwt_loss(outputs.reshape(-1, 8), embedding(target_copy, y).reshape(-1, 8))
    loss.backward()
    input_side, target_side = model.wte.weight.grad, target_copy.grad
    assert np.abs(target_side).max() > 1e-3             # the target side matters
    np.testing.assert_allclose(tied_grad, input_side + target_side, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------- 5. gradchecks


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_gradcheck_cwt_loss_with_repeated_ids(tau):
    rng = np.random.default_rng(6)
    V, K, D = 6, 11, 4
    ids = rng.integers(0, V, K)
    assert len(set(ids.tolist())) < K                   # repeats present
    O = Tensor(rng.normal(size=(K, D)), requires_grad=True)
    E = Tensor(rng.normal(size=(V, D)), requires_grad=True)
    gradcheck(lambda o, e: cwt_loss(o, embedding(e, ids), tau, reduction="none"), [O, E])
    gradcheck(lambda o, e: cwt_loss(o, embedding(e, ids), tau), [O, E])


def test_gradcheck_headless_gpt_end_to_end():
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config(temperature=0.8)), scale=0.2)
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 12, (2, 6)), rng.integers(0, 5, (2, 6))   # repeated targets
    gradcheck_module(model, lambda: model(x, y)[1])


def test_gradcheck_masked_lm_cwt():
    nt.manual_seed(0)
    model = perturbed(MaskedLM(small_config(vocab_size=13)), scale=0.2)
    rng = np.random.default_rng(8)
    inputs, labels = mask_tokens(rng.integers(0, 12, (2, 8)), 12, 12,
                                 MaskingConfig(select_prob=0.5), rng)
    assert (labels != IGNORE_INDEX).sum() >= 2
    gradcheck_module(model, lambda: model(inputs, labels)[1])


@pytest.mark.parametrize("objective", ["cwt", "ce"])
def test_a_batch_with_nothing_masked_gives_a_zero_loss_and_zero_gradients(objective):
    """Not CE's 0 / 0 = NaN, which one unlucky batch would spread into every weight."""
    nt.manual_seed(0)
    model = MaskedLM(small_config(vocab_size=13), objective=objective)
    ids = np.random.default_rng(0).integers(0, 12, (2, 8))
    loss = model(ids, np.full((2, 8), IGNORE_INDEX))[1]
    loss.backward()
    assert loss.item() == 0.0
    assert all(not np.any(p.grad) for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------ 6. MLM masking


def test_bert_masking_statistics_on_a_large_sample():
    rng = np.random.default_rng(9)
    n_vocab, mask_id = 1000, 1000
    ids = rng.integers(0, n_vocab, (400, 500))                    # 200k positions
    inputs, labels = mask_tokens(ids, mask_id, n_vocab, MaskingConfig(recipe="bert"),
                                 rng=rng)
    selected = labels != IGNORE_INDEX
    n_sel = selected.sum()
    # Binomial standard errors are about 0.0008 (selection) and 0.002 (the splits).
    assert abs(selected.mean() - 0.15) < 0.005
    masked = inputs == mask_id
    assert not (masked & ~selected).any()                         # only S is touched
    assert (inputs[~selected] == ids[~selected]).all()
    assert (labels[selected] == ids[selected]).all()
    assert abs(masked[selected].mean() - 0.8) < 0.01
    kept = selected & (inputs == ids)
    replaced = selected & ~masked & (inputs != ids)
    # A random replacement hits the original id with probability 1/n_vocab.
    assert abs(replaced.sum() / n_sel - 0.1 * (1 - 1 / n_vocab)) < 0.008
    assert abs(kept.sum() / n_sel - (0.1 + 0.1 / n_vocab)) < 0.008
    assert inputs[replaced].max() < n_vocab


@pytest.mark.parametrize("T", [20, 64, 128])
def test_authors_masking_statistics_on_a_large_sample(T):
    """Their code: 10% of ALL positions randomised first, then exactly ceil(15% T)
    picked per row, 80% of the picked masked; labels are the original ids."""
    rng = np.random.default_rng(11)
    n_vocab, mask_id = 1000, 1000
    ids = rng.integers(0, n_vocab, (200_000 // T, T))
    inputs, labels = mask_tokens(ids, mask_id, n_vocab, rng=rng)    # the default recipe
    selected = labels != IGNORE_INDEX
    k = math.ceil(round(0.15 * T, 9))
    assert (selected.sum(axis=1) == k).all()                        # exactly k per row
    assert (labels[selected] == ids[selected]).all()
    masked = inputs == mask_id
    assert not (masked & ~selected).any()
    assert abs(masked[selected].mean() - 0.8) < 0.01
    # Outside S a position differs from its id only through the random pass (which
    # can draw the same id back: probability 1/n_vocab).
    changed_outside = (inputs != ids)[~selected].mean()
    assert abs(changed_outside - 0.1 * (1 - 1 / n_vocab)) < 0.005
    # Inside S, the unmasked 20% carry a random id a tenth of the time.
    unmasked = selected & ~masked
    assert abs((inputs != ids)[unmasked].mean() - 0.1) < 0.015
    assert inputs[~masked].max() < n_vocab
    # Which positions are picked does not depend on where they sit in the row: each
    # column's share is k / T within five binomial standard errors.
    p, rows = k / T, len(ids)
    assert np.abs(selected.mean(axis=0) - p).max() < 5 * math.sqrt(p * (1 - p) / rows)


@pytest.mark.parametrize("recipe", ["bert", "authors"])
def test_random_replacements_are_uniform_over_the_whole_vocabulary(recipe):
    """Every id of [0, n_random) is drawn, each a 1/n_random share of the time. The
    originals (id 7) lie outside that range, so every replacement is visible."""
    n_random, mask_id = 5, 6
    inputs, _ = mask_tokens(np.full((400, 500), 7), mask_id, n_random,
                            MaskingConfig(recipe=recipe), rng=np.random.default_rng(3))
    drawn = inputs[inputs < n_random]
    shares = np.bincount(drawn, minlength=n_random) / drawn.size
    se = math.sqrt(0.2 * 0.8 / drawn.size)               # binomial standard error
    assert drawn.size > 2000 and np.abs(shares - 1 / n_random).max() < 5 * se, shares


def test_the_encoders_attention_starts_from_gpt2s_init():
    """The bidirectional attention that replaces the causal one is drawn like the
    rest: N(0, 0.02) for qkv, 0.02 / sqrt(2 n_layer) for the residual projection,
    zero biases (a fresh Linear's default would be U(-1/sqrt(d), 1/sqrt(d)))."""
    nt.manual_seed(0)
    n_layer = 4
    model = MaskedLM(small_config(vocab_size=64, context=64, d_model=64, n_layer=n_layer))
    for block in model.blocks:
        attn = block.attn
        assert attn.qkv.weight.numpy().std() == pytest.approx(0.02, rel=0.1)
        assert attn.proj.weight.numpy().std() == pytest.approx(0.02 / math.sqrt(2 * n_layer),
                                                               rel=0.1)
        assert not attn.qkv.bias.numpy().any() and not attn.proj.bias.numpy().any()


def test_masking_rejects_an_unknown_recipe_and_ids_that_are_not_a_batch():
    with pytest.raises(ValueError, match="recipe"):
        MaskingConfig(recipe="electra")
    with pytest.raises(ValueError, match="B, T"):
        mask_tokens(np.arange(10), 10, 10)


def test_a_masked_lm_refuses_an_unknown_objective_and_a_config_of_another_kind():
    with pytest.raises(ValueError, match="objective must be 'cwt' or 'ce', got 'mse'"):
        MaskedLM(small_config(), objective="mse")
    with pytest.raises(TypeError, match="needs a HeadlessConfig, got GPTConfig"):
        MaskedLM(GPTConfig(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2))


def test_masked_lm_is_bidirectional_and_scores_only_selected_positions():
    nt.manual_seed(0)
    model = perturbed(MaskedLM(small_config(vocab_size=13)))
    rng = np.random.default_rng(10)
    x = rng.integers(0, 12, (1, 8))
    x2 = x.copy()
    x2[0, -1] = (x2[0, -1] + 1) % 12                        # change the LAST token
    out1, _ = model(x)
    out2, _ = model(x2)
    assert np.abs(out1.numpy()[0, 0] - out2.numpy()[0, 0]).max() > 1e-6   # position 0 sees it
    labels = np.full((1, 8), IGNORE_INDEX)
    labels[0, [1, 4]] = [3, 3]                              # a duplicated target
    _, loss = model(x, labels)
    o = out1.numpy()[0, [1, 4]]
    t = model.wte.weight.numpy()[[3, 3]]
    np.testing.assert_allclose(loss.item(), np_cwt(o, t).mean(), rtol=1e-10)
    ce = MaskedLM(small_config(vocab_size=13), objective="ce").to(f64)
    ce.load_state_dict(model.state_dict())
    logits, ce_loss = ce(x, labels)
    assert logits.shape == (1, 8, 13)
    expected = F.cross_entropy(logits[0, [1, 4]], np.array([3, 3])).item()
    np.testing.assert_allclose(ce_loss.item(), expected, rtol=1e-10)


# The authors' recipe also corrupts 10% of the context, so it learns more slowly.
@pytest.mark.parametrize("recipe, steps", [("bert", 100), ("authors", 150)])
def test_mlm_training_reduces_the_masked_loss(recipe, steps):
    nt.manual_seed(0)
    model = MaskedLM(small_config(vocab_size=13, context=16, d_model=16))
    text = np.tile(np.arange(12), 20)                       # a learnable pattern
    loss_fn = mlm_loss_fn(MaskingConfig(select_prob=0.3, recipe=recipe), seed=0)
    opt = AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, len(text) - 17, 8)
        x = np.stack([text[s:s + 16] for s in starts])
        loss = loss_fn(model, x, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # CWT starts slowly from GPT-2's small init (all scores near 0); half a nat is
    # far beyond the step-to-step noise.
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5


# ----------------------------------------------------------- getting an LM back


def test_headless_generate_samples_through_the_input_embedding():
    """The outputs are d-dimensional, the vocabulary is V > d: sampling must score the
    outputs against E (ids up to V - 1 appear), and give what the E^T language model
    gives with the same seed."""
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config(vocab_size=50, d_model=8)), scale=1.0)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    out = model.generate(prompt, 40, temperature=1.0, seed=3)
    assert out.shape == (2, 43)
    assert (out[:, :3] == prompt).all()
    assert out[:, 3:].max() >= 8                       # not confined to the d output slots
    assert out.max() < 50
    lm = lm_from_headless(model, "tied")
    np.testing.assert_array_equal(out, lm.generate(prompt, 40, temperature=1.0, seed=3))
    greedy = model.generate(prompt, 1, temperature=0)
    logits, _ = lm(prompt)
    np.testing.assert_array_equal(greedy[:, -1], logits.numpy()[:, -1].argmax(-1))
    assert model.training                              # generation leaves the mode alone


def test_masked_lm_refuses_to_generate():
    model = MaskedLM(small_config(vocab_size=13))
    with pytest.raises(TypeError, match="does not generate"):
        model.generate(np.array([[1, 2]]), 3)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_zero_shot_head_scores_outputs_against_the_input_embedding(tau):
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config(temperature=tau)))
    x = np.random.default_rng(11).integers(0, 12, (2, 8))
    outputs, _ = model(x)
    logits, _ = lm_from_headless(model, "tied")(x)
    expected = outputs.numpy() @ model.wte.weight.numpy().T / tau
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_a_plain_tied_gpt_comes_back_with_its_own_logits():
    """lm_from_headless also takes any GPT with a tied head, and then tau = 1."""
    nt.manual_seed(0)
    gpt = perturbed(GPT(GPTConfig(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2)))
    x = np.random.default_rng(13).integers(0, 12, (2, 8))
    np.testing.assert_allclose(lm_from_headless(gpt)(x)[0].numpy(), gpt(x)[0].numpy(),
                               rtol=1e-12)


def test_cloned_head_is_a_separate_parameter_and_head_only_tuning_keeps_the_body():
    nt.manual_seed(0)
    model = perturbed(HeadlessGPT(small_config()))
    lm = lm_from_headless(model, "clone")
    assert lm.lm_head.weight is not lm.wte.weight
    np.testing.assert_array_equal(lm.lm_head.weight.numpy(), lm.wte.weight.numpy())
    assert count_parameters(lm) == count_parameters(model) + 12 * 8
    with pytest.raises(ValueError, match="tied"):
        freeze_all_but_head(lm_from_headless(model, "tied"))
    freeze_all_but_head(lm)
    before = {k: v.copy() for k, v in lm.state_dict().items()}
    opt = AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-2)
    rng = np.random.default_rng(12)
    loss = lm(rng.integers(0, 12, (2, 8)), rng.integers(0, 12, (2, 8)))[1]
    loss.backward()
    opt.step()
    after = lm.state_dict()
    changed = [k for k in before if k != "__ties__" and not np.array_equal(before[k], after[k])]
    assert changed == ["lm_head.weight"]
    # The headless model itself was copied, not shared.
    assert model.wte.weight is not lm.wte.weight


def test_configs_and_loss_reject_bad_arguments():
    with pytest.raises(ValueError, match="tie_embeddings"):
        small_config(tie_embeddings=False)
    with pytest.raises(ValueError, match="temperature"):
        small_config(temperature=0.0)
    with pytest.raises(ValueError, match="d_model=9 is not divisible by n_head=2"):
        small_config(d_model=9)                     # GPTConfig's own checks still run
    with pytest.raises(ValueError, match="outputs"):
        cwt_loss(Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 5))))
    with pytest.raises(ValueError, match="temperature > 0.*got 0.0"):
        cwt_loss(Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 4))), temperature=0.0)
    with pytest.raises(ValueError, match="reduction 'mean' or 'none'.*'sum'"):
        cwt_loss(Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 4))), reduction="sum")
    with pytest.raises(TypeError, match="HeadlessConfig"):
        HeadlessGPT(GPTConfig(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="head must be 'tied' or 'clone', got 'other'"):
        lm_from_headless(HeadlessGPT(small_config()), "other")
    untied = GPT(GPTConfig(vocab_size=12, context=8, d_model=8, n_layer=1, n_head=2,
                           tie_embeddings=False))
    with pytest.raises(ValueError, match="not tied"):
        lm_from_headless(untied, "clone")


# ------------------------------------------------------------------- the probe


def test_linear_probe_separates_informative_features_and_not_noise():
    rng = np.random.default_rng(13)
    n, classes, d = 200, 4, 16
    y_train, y_test = rng.integers(0, classes, n), rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, d)) * 3
    good = linear_probe(centers[y_train] + rng.normal(size=(n, d)), y_train,
                        centers[y_test] + rng.normal(size=(n, d)), y_test, steps=150)
    noise = linear_probe(rng.normal(size=(n, d)), y_train, rng.normal(size=(n, d)), y_test,
                         steps=150)
    assert good["test_accuracy"] > 0.9 and good["train_accuracy"] > 0.9
    assert noise["test_accuracy"] < 0.45


def test_linear_probe_is_blind_to_the_features_scale_and_offset_and_seeded():
    """It standardises with the training set's statistics, so f -> a f + b (a per-feature
    scale from 0.01 to 100, an offset of 1000) changes nothing, and its own seed fixes
    the classifier's start whatever the generator held before."""
    rng = np.random.default_rng(14)
    n, classes, d = 120, 3, 8
    y_train, y_test = rng.integers(0, classes, n), rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, d)) * 1.5
    f_train = centers[y_train] + rng.normal(size=(n, d))
    f_test = centers[y_test] + rng.normal(size=(n, d))
    nt.manual_seed(1)
    plain = linear_probe(f_train, y_train, f_test, y_test, steps=60)
    a, b = np.logspace(-2, 2, d), 1000.0
    nt.manual_seed(2)
    scaled = linear_probe(a * f_train + b, y_train, a * f_test + b, y_test, steps=60)
    assert scaled == pytest.approx(plain, abs=1 / n)          # at most one passage apart
    assert 0.5 < plain["test_accuracy"] < 1.0                 # neither trivial nor hopeless


def test_pooled_features_are_the_encoders_outputs_averaged_over_positions():
    nt.manual_seed(0)
    model = perturbed(MaskedLM(small_config(vocab_size=13)))   # "cwt": forward gives ln_f(x)
    ids = np.random.default_rng(15).integers(0, 12, (5, 8))
    np.testing.assert_allclose(pooled_features(model, ids, batch_size=2),
                               model(ids)[0].numpy().mean(axis=1), rtol=1e-12)


def test_effective_rank_counts_the_directions_that_share_the_variance():
    """r orthogonal directions with equal variance give r; unequal shares give fewer
    (exp of the entropy of the shares); a shift of every row changes nothing."""
    rng = np.random.default_rng(16)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))                 # orthonormal columns
    h2 = np.array([[1.0, 1.0], [1.0, -1.0]])
    coords = np.kron(np.kron(h2, h2), h2)[:, 1:]        # Hadamard: centred, orthogonal
    for r in (1, 2, 4):
        spread = coords[:, :r] @ q[:, :r].T + 7.0                  # variance over r directions
        assert effective_rank(spread) == pytest.approx(r, rel=1e-9)
    shares = np.array([0.7, 0.3])
    uneven = coords[:, :2] * np.sqrt(shares) @ q[:, :2].T
    assert effective_rank(uneven) == pytest.approx(np.exp(-(shares * np.log(shares)).sum()))


def test_topic_passages_are_balanced_and_train_and_test_do_not_share_windows():
    from nanotie import data

    tok = data.BPETokenizer.train(data.prose_corpus(60_000), 400)
    xtr, ytr, xte, yte = topic_passages(tok, window=16, per_class=20)
    assert xtr.shape[1] == xte.shape[1] == 16
    assert set(np.bincount(ytr)) == {10} and set(np.bincount(yte)) == {10}
    train_rows = {r.tobytes() for r in xtr}
    assert not any(r.tobytes() in train_rows for r in xte)


# -------------------------------------------------------------- the experiment


def tiny_profile(**overrides):
    from nanotie.papers.headless import experiment

    return experiment.Profile(**{**dict(
        vocab_size=300, model=GPTConfig(context=16, d_model=16, n_layer=1, n_head=2),
        batch_size=4, epochs=0.01, lrs=(2e-3, 8e-3), seeds=2, curve_points=2,
        curve_batches=2, finetune_fraction=0.3, ft_lrs=(4e-5, 1e-3), sweep=(300, 600),
        sweep_steps=1, sweep_repeats=2, probe_window=8, probe_per_class=6, probe_steps=20,
        final_eval_batches=2), **overrides})


def test_pretraining_is_at_most_the_profiles_epochs():
    from nanotie.papers.headless import experiment

    for epochs in (0.5, 1.0):
        prof = tiny_profile(epochs=epochs)
        steps = experiment.pretrain_steps(prof, 10_000)
        assert steps * prof.batch_size * prof.model.context <= epochs * 10_000
        assert (steps + 1) * prof.batch_size * prof.model.context > epochs * 10_000
    quick = experiment.PROFILES["quick"]
    _, ids, _, _ = experiment.corpus(quick.vocab_size)
    steps = experiment.pretrain_steps(quick, len(ids["train"]))
    assert steps * quick.batch_size * quick.model.context <= len(ids["train"])


def test_flops_of_a_step_follow_the_head():
    """CWT's head scores K targets, CE's head V ids: equal when K = V, and the CE/CWT
    ratio grows with V; equal compute gives CE fewer steps than CWT + fine-tuning."""
    from nanotie.papers.headless import experiment

    model = {"d_model": 32, "n_layer": 2, "context": 16}
    f = experiment.flops_per_token
    assert f(model, 512, "ce", 512) == f(model, 512, "cwt", 512)
    ratios = [f(model, V, "ce", 256) / f(model, V, "cwt", 256) for V in (512, 2048, 8192)]
    assert ratios == sorted(ratios) and ratios[0] > 1
    eq = experiment.equal_compute_steps(model, 8192, 16, 100, 10)
    assert 10 < eq["ce_steps"] < 100 + 10
    assert eq["ce_steps"] == round(100 / eq["flops_ratio"]) + 10


def test_corpus_splits_are_disjoint_and_the_tokenizer_sees_only_train():
    from nanotie.papers.headless import experiment

    tok, ids, bpt, digest = experiment.corpus(300)
    assert set(ids) == {"train", "val", "test"}
    assert all(len(v) > 0 for v in ids.values()) and all(b > 1 for b in bpt.values())
    from nanotie import data, protocol

    retrained = data.BPETokenizer.train(
        protocol.split(data.prose_corpus(), 0.1, 0.1).train.tobytes(), 300)
    assert retrained.merges == tok.merges
    # A run whose settings were made for another corpus (another Python) stops.
    for run in (experiment.pretrain_run, experiment.mlm_run):
        with pytest.raises(protocol.CorpusError, match="corpus differs"):
            run({"vocab_size": 300, "corpus": "not-this-one"}, 0, "cpu")


def test_experiment_writes_its_outputs_and_reuses_the_cache(tmp_path):
    from nanotie.papers.headless import experiment

    prof = tiny_profile(mlm_steps=2, mlm_lrs=(2e-3,))
    first = experiment.run(quick=True, out_dir=tmp_path / "headless", profile=prof)
    for name in ("report.md", "results.json", "loss_vs_compute.png",
                 "throughput_vs_vocab.png", "test_bpb.png"):
        assert (tmp_path / "headless" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "headless" / "results.json").read_text())
    assert saved["pretrain"]["epochs"] <= prof.epochs
    # Each objective's chosen rate is the one with the best validation figure.
    assert len(saved["tuning"]) >= 3 + 3
    for method, t in saved["tuning"].items():
        assert f"{t['best']:g}" == min(t["grid"], key=lambda k: t["grid"][k]["mean"]), method
    for row in saved["rows"].values():
        assert row["test_bpb"]["n"] == prof.seeds
        assert all(0 < v < 20 for v in row["test_bpb"]["values"])
    p = saved["parameters"]
    assert p["ce_tied"] == p["cwt"] and p["ce_untied"] == p["cwt"] + 300 * 16
    assert p["cwt_finetuned"] == p["ce_untied"]          # the cloned head: one more V x d
    assert [r["vocab_size"] for r in saved["throughput_vs_vocab"]] == [300, 600]
    assert all(len(r["ce_tokens_per_s_each"]) == 2 for r in saved["throughput_vs_vocab"])
    assert {v["outcome"] for v in saved["verdicts"].values()} <= {
        "holds", "does not hold", "within noise"}
    assert {o: saved["mlm"]["test_bits"][o]["n"] for o in ("cwt", "ce")} == {
        "cwt": prof.seeds, "ce": prof.seeds}
    assert all(0 <= v <= 1 for o in ("cwt", "ce") for v in saved["mlm"]["test_top1"][o]["values"])
    assert saved["mlm"]["unigram"]["bits"] > 0 and 0 <= saved["mlm"]["unigram"]["top1"] <= 1
    assert saved["rows"][experiment.EQUAL_COMPUTE_ROW]["test_bpb"]["n"] == prof.seeds
    assert isinstance(first["headline"], list) and len(first["summary"]) >= 3
    report = (tmp_path / "headless" / "report.md").read_text()
    assert "Table 3" in report and "Differences from the paper" in report
    for row in saved["rows"].values():
        assert f"{row['test_bpb']['mean']:.3f}" in report
    assert len(list((tmp_path / "cache" / "headless").glob("*.npz"))) >= 3 * prof.seeds
    # A second run loads every run from the cache: the same figures, no training.
    second = experiment.run(quick=True, out_dir=tmp_path / "headless", profile=prof)
    assert second["rows"] == first["rows"]
    assert second["throughput_vs_vocab"] == first["throughput_vs_vocab"]


def test_bits_per_byte_divide_by_the_bytes_of_the_very_tokens_scored(tmp_path):
    """The pretraining curve (a prefix of val) and the val and test figures (here on a
    prefix too) turn nats per token into bits per byte with the bytes of the tokens
    scored, not the mean bytes per token of the whole split."""
    from dataclasses import asdict

    from nanotie import data
    from nanotie.papers.headless import experiment

    tok, ids, _, digest = experiment.corpus(300)
    shape = asdict(GPTConfig(context=16, d_model=16, n_layer=1, n_head=2))
    settings = {"vocab_size": tok.vocab_size, "model": shape, "batch_size": 4, "lr": 1e-3,
                "objective": "ce_tied", "steps": 2, "warmup_steps": 1, "curve_points": 1,
                "curve_batches": 3, "final_eval_batches": 5, "corpus": digest,
                "checkpoint_dir": str(tmp_path)}
    model, history = experiment.pretrained(settings, 0, "cpu")

    def exact(split, batches):                 # sum of nats / sum of bytes, batch by batch
        nats = n_bytes = 0
        with model.evaluating():
            for x, y in data.iter_eval_batches(ids[split], 16, 4, batches):
                nats += float(model(x, y)[1].item()) * y.size
                n_bytes += len(tok.decode_bytes(y))
        return nats / (n_bytes * math.log(2))

    assert history.val_bpb[-1] == pytest.approx(exact("val", 3), rel=1e-6)
    figures = experiment.pretrain_run(settings, 0, "cpu")       # the same model, loaded
    for split in ("val", "test"):
        assert figures[split]["bpb"] == pytest.approx(exact(split, 5), rel=1e-6)


def test_masked_lms_are_scored_with_dropout_off(monkeypatch):
    """mlm_run's val and test scores read the trained encoder in eval mode: with
    dropout > 0, scoring in training mode would drop units at random."""
    from dataclasses import asdict

    from nanotie.papers.headless import experiment, mlm

    modes, forward = [], mlm.MaskedLM.forward

    def spy(self, *args, **kwargs):
        modes.append(self.training)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(mlm.MaskedLM, "forward", spy)
    tok, _, _, digest = experiment.corpus(300)
    shape = asdict(GPTConfig(context=8, d_model=8, n_layer=1, n_head=2, dropout=0.5))
    settings = {"vocab_size": tok.vocab_size, "model": shape, "batch_size": 2, "steps": 1,
                "lr": 1e-3, "objective": "cwt", "corpus": digest, "final_eval_batches": 1}
    experiment.mlm_run(settings, 0, "cpu")
    assert modes[0] and not any(modes[-2:])      # trained in train mode, scored in eval


def test_headless_is_registered():
    assert REGISTRY["headless"].module == "nanotie.papers.headless.experiment"


@pytest.mark.slow
def test_quick_profile_shows_the_papers_patterns(tmp_path):
    from nanotie.papers.headless import experiment

    r = experiment.run(quick=True, out_dir=tmp_path / "headless")
    rows = r["rows"]
    assert (rows[experiment.FT_MODES[("cwt", "whole")]]["test_bpb"]["mean"]
            < rows["CWT, zero-shot head o E^T"]["test_bpb"]["mean"])   # Table 3: E^T is worse
    assert r["throughput_vs_vocab"][-1]["ratio"] > 1.0        # CWT ahead at the largest V
    acc = r["probe"]["test_accuracy"]
    assert acc["cwt"]["mean"] > acc["untrained"]["mean"]
