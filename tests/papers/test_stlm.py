"""Super Tiny Language Models: the spec's six properties, the analytic parameter count
against built models, and the experiment's outputs (tiny profile)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie import data
from nanotie.gradcheck import gradcheck_module
from nanotie.nn import count_parameters, tied_parameters
from nanotie.nn import functional as F
from nanotie.papers import REGISTRY
from nanotie.papers.stlm import (EOT, PAD, PAPER_FIGURES, STLM, ByteWindows, STLMConfig,
                                 byte_cross_entropy, measured_split, millions,
                                 paper_configs, parameter_budget)
from nanotie.papers.stlm import experiment
from nanotie.train import TrainConfig, evaluate

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")])]

SMALL = dict(vocab_size=23, context=8, d_model=16, n_layer=3, n_head=2, byte_window=5,
             byte_dim=8, byte_heads=2)
TOKEN = dict(embedder="token")
BYTE = dict(embedder="byte", tie_embeddings=False)


def small(**overrides) -> STLMConfig:
    return STLMConfig(**{**SMALL, **overrides})


def build(cfg, seed=0, dtype=np.float64, device="cpu", jitter=0.3):
    """A model in float64 with its weights moved away from the tiny GPT-2 init, so that
    every parameter (gains included) visibly matters."""
    nt.manual_seed(seed)
    model = STLM(cfg).to(dtype)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + rng.normal(0.0, jitter, p.shape).astype(dtype)
    return model.to(device)


def untie_copy(model, cfg):
    """The same values as ``model`` in a model with NO ties: each use of a shared
    Parameter gets its own copy."""
    every = dict(model.named_parameters(remove_duplicate=False))
    copy = STLM(cfg).to(np.float64)
    state = {k: np.array(nt.backend.asnumpy(p.data)) for k, p in every.items()}
    state["__ties__"] = np.array([], dtype=np.str_)
    copy.load_state_dict(state)
    assert tied_parameters(copy) == {}
    return copy


# ------------------------------------------------------- 1. parameter accounting


def test_the_formula_reproduces_the_papers_figures_without_building():
    b = {name: parameter_budget(cfg) for name, cfg in paper_configs().items()}
    assert millions(b["tied"]["total"]) == PAPER_FIGURES["tied"]
    assert millions(b["untied"]["total"]) == PAPER_FIGURES["untied"]
    assert millions(b["tied + FFN sharing"]["total"]) == PAPER_FIGURES["tied + FFN sharing"]
    assert millions(b["tied"]["embedding+head"]) == PAPER_FIGURES["embedding (tied)"]
    byte = b["byte-level"]["embedding+head"]
    assert millions(byte) == PAPER_FIGURES["byte embedder + decoder"]
    tied, untied = b["tied"]["embedding+head"], b["untied"]["embedding+head"]
    assert f"{100 * (1 - byte / tied):.1f}%" == PAPER_FIGURES["fewer than tied"]
    assert f"{100 * (1 - byte / untied):.1f}%" == PAPER_FIGURES["fewer than untied"]
    # The relations behind the figures: untying adds one V x d table, sharing removes
    # (L - 1) FFNs, and the core is the same whatever the embedder.
    cfg = paper_configs()["tied"]
    assert b["untied"]["total"] - b["tied"]["total"] == cfg.vocab_size * cfg.d_model
    one_ffn = b["tied"]["ffn"] // cfg.n_layer
    assert b["tied"]["total"] - b["tied + FFN sharing"]["total"] == (cfg.n_layer - 1) * one_ffn
    assert b["byte-level"]["core"] == b["tied"]["core"]


def test_the_paper_config_builds_with_grouped_query_attention():
    """The paper's 16 query heads sharing 4 key/value heads, at a small width."""
    cfg = replace(paper_configs()["tied"], n_layer=2, vocab_size=50, d_model=64,
                  ffn_hidden=32, context=8)
    nt.manual_seed(0)
    model = STLM(cfg)
    assert model.blocks[0].attn.qkv.fused.weight.shape == (64 + 2 * 16, 64)
    assert count_parameters(model) == parameter_budget(cfg)["total"]
    assert model(np.zeros((1, 3), dtype=np.int64))[0].shape == (1, 3, 50)


def test_grouped_query_attention_is_attention_with_tied_key_value_heads():
    """GQA equals full attention whose key/value heads are copies (g(h) = h // 2 here),
    and a shared head's gradient is the sum of its copies' gradients."""
    gqa_cfg = small(n_head=4, n_kv_head=2, n_layer=1, tie_embeddings=False)
    gqa = build(gqa_cfg, seed=19)
    mha = build(replace(gqa_cfg, n_kv_head=None), seed=19)
    W = gqa.blocks[0].attn.qkv.fused.weight.data            # (d + 2 d_kv, d)
    d, hd = gqa_cfg.d_model, gqa_cfg.d_model // 4
    heads = np.arange(4) // 2                                # kv head of each query head
    rows = lambda base: np.concatenate([base + g * hd + np.arange(hd) for g in heads])
    full = np.concatenate([W[:d], W[rows(d)], W[rows(d + 2 * hd)]])   # (3 d, d)
    state = {k: np.array(p.data) for k, p in gqa.named_parameters()}
    del state["blocks.0.attn.qkv.fused.weight"]
    state["blocks.0.attn.qkv.weight"] = full
    state["__ties__"] = np.array([], dtype=np.str_)
    mha.load_state_dict(state)
    x, y = np.random.default_rng(20).integers(0, gqa_cfg.vocab_size, (2, 2, 6))
    lg, lm = gqa(x, y)[1], mha(x, y)[1]
    assert lg.item() == pytest.approx(lm.item(), rel=1e-12)
    lg.backward()
    lm.backward()
    g_gqa, g_mha = gqa.blocks[0].attn.qkv.fused.weight.grad, mha.blocks[0].attn.qkv.weight.grad
    np.testing.assert_allclose(g_gqa[:d], g_mha[:d], rtol=1e-9, atol=1e-12)
    for part in (1, 2):                                      # keys, then values
        for g in range(2):
            shared = g_gqa[d + (part - 1) * 2 * hd + g * hd:][:hd]
            copies = [g_mha[part * d + h * hd:][:hd] for h in range(4) if heads[h] == g]
            np.testing.assert_allclose(shared, sum(copies), rtol=1e-9, atol=1e-12)
            assert min(np.abs(c).max() for c in copies) > 1e-8


@pytest.mark.parametrize("overrides", [
    dict(TOKEN, tie_embeddings=True),
    dict(TOKEN, tie_embeddings=False),
    dict(TOKEN, share_ffn=True, ffn_hidden=24),
    dict(TOKEN, ffn="mlp", norm="layer", bias=True, learned_positions=False),
    dict(BYTE),
    dict(BYTE, share_ffn=True),
    dict(BYTE, ffn="mlp", norm="layer", bias=True, ffn_hidden=40, n_layer=2),
    dict(BYTE, learned_positions=False, share_ffn=True, ffn="swiglu", bias=True),
    dict(TOKEN, n_head=4, n_kv_head=2, bias=True),
    dict(TOKEN, d_model=24, n_head=2),          # 8d/3 = 64 already a multiple of 8
    dict(BYTE, n_head=4, n_kv_head=1, byte_head="softmax"),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_the_formula_equals_the_built_models_unique_count(overrides):
    cfg = small(**overrides)
    nt.manual_seed(0)
    model = STLM(cfg)
    budget, split = parameter_budget(cfg), measured_split(model)
    assert count_parameters(model) == budget["total"] == split["total"]
    assert split["embedding+head"] == budget["embedding+head"]
    assert split["core"] == budget["core"]
    unique = {id(p): p for _, p in model.named_parameters(remove_duplicate=False)}
    assert sum(p.numel() for p in unique.values()) == budget["total"]


def test_at_small_sizes_the_byte_path_can_be_larger_than_the_table():
    """The 90-95% saving is a large-vocabulary effect: the byte path's size does not
    depend on V, the table's grows with it."""
    byte = parameter_budget(small(**BYTE))["embedding+head"]
    tiny_vocab = parameter_budget(small(vocab_size=23))["embedding+head"]
    big_vocab = parameter_budget(small(vocab_size=50257))["embedding+head"]
    assert byte > tiny_vocab and byte < big_vocab / 10


# -------------------------------------------------- 2. embedding / head tying


@pytest.mark.parametrize("device", DEVICES)
def test_tied_embedding_is_one_array_whose_gradient_sums_both_uses(device):
    cfg = small()
    tied = build(cfg)
    assert tied.lm_head.weight is tied.wte.weight
    assert tied_parameters(tied)["wte.weight"] == ["wte.weight", "lm_head.weight"]
    untied = untie_copy(tied, replace(cfg, tie_embeddings=False)).to(device)
    tied = tied.to(device)
    assert tied.lm_head.weight is tied.wte.weight          # to() keeps the tie
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, cfg.vocab_size, (2, 2, cfg.context))
    tied(x, y)[1].backward()
    untied(x, y)[1].backward()
    as_np = nt.backend.asnumpy
    emb, head = as_np(untied.wte.weight.grad), as_np(untied.lm_head.weight.grad)
    np.testing.assert_allclose(as_np(tied.wte.weight.grad), emb + head, rtol=1e-9,
                               atol=1e-12)
    assert np.abs(emb).max() > 1e-6 and np.abs(head).max() > 1e-6   # both uses count


# ------------------------------------------------------------- 3. FFN sharing


@pytest.mark.parametrize("embedder", [TOKEN, BYTE], ids=["token", "byte"])
def test_ffn_sharing_is_one_object_and_drops_l_minus_one_ffns(embedder):
    cfg = small(**embedder)
    nt.manual_seed(0)
    plain, shared = STLM(cfg), STLM(replace(cfg, share_ffn=True))
    ffn = shared.blocks[0].mlp
    assert all(b.mlp is ffn for b in shared.blocks)
    attns = {id(b.attn) for b in shared.blocks} | {id(b.ln1) for b in shared.blocks}
    assert len(attns) == 2 * cfg.n_layer                   # attention, norms per layer
    one_ffn = sum(p.numel() for p in ffn.parameters())
    assert count_parameters(plain) - count_parameters(shared) == (cfg.n_layer - 1) * one_ffn


@pytest.mark.parametrize("device", DEVICES)
def test_the_shared_ffns_gradient_is_the_sum_over_layers(device):
    cfg = small(share_ffn=True, tie_embeddings=False)
    shared = build(cfg, seed=3)
    unshared = untie_copy(shared, replace(cfg, share_ffn=False)).to(device)
    shared = shared.to(device)
    x, y = np.random.default_rng(4).integers(0, cfg.vocab_size, (2, 2, cfg.context))
    shared(x, y)[1].backward()
    unshared(x, y)[1].backward()
    as_np = nt.backend.asnumpy
    for name, p in shared.blocks[0].mlp.named_parameters():
        per_layer = [as_np(dict(b.mlp.named_parameters())[name].grad)
                     for b in unshared.blocks]
        np.testing.assert_allclose(as_np(p.grad), sum(per_layer), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        assert min(np.abs(g).max() for g in per_layer) > 1e-8, name


# ------------------------------------------------------------ 4. pooling locality


def test_changing_one_tokens_bytes_changes_only_its_pooled_vector_and_later_outputs():
    cfg = small(**BYTE, learned_positions=True)
    model = build(cfg, seed=5)
    rng = np.random.default_rng(6)
    W, T, s = cfg.byte_window, cfg.context, 4
    x = rng.integers(0, 258, (2, T, W))
    x2 = x.copy()
    x2[:, s] = rng.integers(0, 256, (2, W))                # new bytes for token s only
    with nt.no_grad():
        pooled, pooled2 = model.byte_embedder(x).numpy(), model.byte_embedder(x2).numpy()
        out, out2 = model(x)[0].numpy(), model(x2)[0].numpy()
    changed = np.abs(pooled - pooled2).max(axis=(0, 2)) > 0          # per token
    assert changed.tolist() == [t == s for t in range(T)]
    np.testing.assert_array_equal(out[:, :s], out2[:, :s])            # causal: before s
    assert all(np.abs(out[:, t] - out2[:, t]).max() > 1e-9 for t in range(s, T))


def test_byte_attention_looks_both_ways_within_a_token():
    """Slot 0 of a token sees its last slot (non-causal), unlike the core."""
    cfg = small(**BYTE)
    model = build(cfg, seed=7)
    x = np.random.default_rng(8).integers(0, 256, (1, 1, cfg.byte_window))
    x2 = x.copy()
    x2[..., -1] = (x2[..., -1] + 1) % 256
    block = model.byte_embedder.blocks[0]
    emb = model.byte_embedder.byte_emb
    with nt.no_grad():
        h, h2 = (block.attn(emb(w).reshape(1, cfg.byte_window, cfg.byte_dim)).numpy()
                 for w in (x, x2))
    assert np.abs(h[0, 0] - h2[0, 0]).max() > 1e-9


def test_the_byte_model_passes_a_gradient_check():
    cfg = small(**BYTE, n_layer=1, context=3, byte_window=3, byte_dim=4, byte_heads=2,
                d_model=8, ffn_hidden=6)
    model = build(cfg, seed=9)
    rng = np.random.default_rng(10)
    x = rng.integers(0, 258, (2, 3, 3))
    y = np.where(rng.random((2, 3, 3)) < 0.3, PAD, rng.integers(0, 258, (2, 3, 3)))
    assert gradcheck_module(model, lambda: model(x, y)[1], max_elements=12,
                            name="STLM byte-level")


def test_init_weights_redraws_the_core_and_leaves_the_byte_path_as_its_layers_built_it():
    """GPT-2's small init would shrink the byte path's pooled vectors (STLM.init_weights),
    so calling it again redraws the core and keeps every byte-path array."""
    nt.manual_seed(0)
    model = STLM(small(**BYTE))
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    model.init_weights()
    after = dict(model.named_parameters())
    byte = [n for n in before if n.startswith(("byte_embedder.", "byte_decoder."))]
    core = [n for n in before if n not in byte and before[n].std() > 0]
    assert byte and core
    assert all(np.array_equal(before[n], after[n].data) for n in byte)
    assert not any(np.array_equal(before[n], after[n].data) for n in core)


# ---------------------------------------------------------- 5. byte round trip


@pytest.fixture(scope="module")
def windows():
    corpus = data.prose_corpus(60_000)
    return ByteWindows(data.BPETokenizer.train(corpus, 400), window=12), corpus


@pytest.mark.parametrize("text", ["Hello, world!", "The  quick brown fox\njumps.",
                                  "caf\u00e9 \u2014 na\u00efve \U0001f600", "", "a"])
def test_text_survives_tokens_to_windows_and_back(windows, text):
    bw, _ = windows
    wins = bw.encode(text)
    assert wins.shape == (len(bw.tokenizer.encode(text)), 12)
    assert bw.truncation_rate(bw.tokenizer.encode(text)) == 0
    assert bw.decode_bytes(wins).decode("utf-8") == text
    with_end = bw.encode(text, eot=True)
    assert with_end[-1, 0] == EOT and (with_end[-1, 1:] == PAD).all()
    assert bw.decode_bytes(np.concatenate([with_end, bw.encode("junk")])) == text.encode()


@pytest.mark.parametrize("width", [1, 3])
def test_truncation_loses_exactly_the_bytes_beyond_the_window(windows, width):
    bw, corpus = windows
    ids = bw.tokenizer.encode(corpus)
    narrow = ByteWindows(bw.tokenizer, window=width)
    long_tokens = narrow.full[ids] > width
    assert long_tokens.any()                  # so that something is cut
    lost = int((narrow.full[ids] - width)[long_tokens].sum())
    assert len(narrow.decode_bytes(narrow(ids))) == len(corpus) - lost
    assert narrow.lost_byte_rate(ids) == pytest.approx(lost / len(corpus))
    assert narrow.truncation_rate(ids) == pytest.approx(long_tokens.mean())
    assert narrow.lost_byte_rate(list(ids)) == narrow.lost_byte_rate(ids)     # a list too
    # A window wide enough for the longest token always round-trips.
    wide = ByteWindows(bw.tokenizer, window=int(bw.full.max()))
    assert wide.decode_bytes(wide(ids)) == corpus
    assert wide.truncation_rate(ids) == 0 and wide.lost_byte_rate(ids) == 0
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        ByteWindows(bw.tokenizer, window=0)


def test_windows_follow_the_ids_device_and_shape(windows):
    bw, _ = windows
    ids = np.array([[3, 100], [257 % bw.tokenizer.vocab_size, 5]])
    assert bw(ids).shape == (2, 2, 12)
    np.testing.assert_array_equal(bw(ids)[0, 1], bw.table[100])


# ------------------------------------------------------------- 6. pad ignored


def test_the_loss_ignores_the_pad_and_only_the_pad():
    rng = np.random.default_rng(11)
    B, T, W = 2, 3, 5
    targets = rng.integers(0, 256, (B, T, W))
    targets[..., 3:] = PAD                       # short tokens: two pad slots each
    targets[0, 0, 1] = EOT                       # an end of text must be scored
    logits = nt.tensor(rng.standard_normal((B, T, W, 258)), requires_grad=True)
    loss = byte_cross_entropy(logits, targets)
    loss.backward()
    pad = targets == PAD
    # The pad slots get no gradient; every other slot does.
    assert np.abs(logits.grad[pad]).max() == 0
    assert (np.abs(logits.grad[~pad]).max(axis=-1) > 0).all()
    # The loss is the mean over the non-pad slots alone.
    ref = F.cross_entropy(nt.tensor(logits.numpy()[~pad]), targets[~pad])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    # Changing the logits at pad slots changes nothing; at the EOT slot it does.
    moved = logits.numpy().copy()
    moved[pad] += rng.standard_normal(moved[pad].shape) * 5
    assert byte_cross_entropy(nt.tensor(moved), targets).item() == pytest.approx(
        loss.item(), rel=1e-12)
    moved[0, 0, 1, EOT] += 3.0                  # the target class at the EOT slot
    assert byte_cross_entropy(nt.tensor(moved), targets).item() != pytest.approx(
        loss.item(), rel=1e-9)
    # Ignoring EOT instead (the authors' id) would give another loss.
    wrong = F.cross_entropy(logits, targets, ignore_index=EOT)
    assert wrong.item() != pytest.approx(loss.item(), rel=1e-6)


# ----------------------------------------------------------------- config


@pytest.mark.parametrize("bad, field", [
    (dict(ffn="relu"), "ffn"), (dict(norm="batch"), "norm"), (dict(embedder="char"),
                                                              "embedder"),
    (dict(d_model=15), "d_model"), (dict(byte_dim=6, byte_heads=4), "byte_dim"),
    (dict(n_layer=0), "n_layer"), (dict(embedder="byte", tie_embeddings=True),
                                   "tie_embeddings"),
    (dict(n_kv_head=3, n_head=2), "n_kv_head"), (dict(ffn_hidden=0), "ffn_hidden")])
def test_bad_configs_name_the_field(bad, field):
    """Names and head counts are refused by the config; sizes by the layers they build."""
    with pytest.raises(ValueError, match=field):
        STLM(small(**bad))


def test_byte_model_rejects_token_ids_and_sampling():
    model = build(small(**BYTE))
    with pytest.raises(ValueError, match="byte windows"):
        model(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(NotImplementedError, match="pads"):
        model.generate(np.zeros((1, 1), dtype=np.int64), 2)


def test_a_sequence_past_the_context_and_a_byte_models_cache_are_refused():
    token = build(small(**TOKEN))                                   # context 8
    with pytest.raises(ValueError, match="sequence of 9 tokens.*context of 8"):
        token(np.zeros((1, 9), dtype=np.int64))
    byte = build(small(**BYTE))
    windows = np.zeros((1, 2, SMALL["byte_window"]), dtype=np.int64)
    with pytest.raises(ValueError, match="byte-level model has no KV cache"):
        byte(windows, cache=[])


# --------------------------------------- (f) and (g): the head and the loss


SOFTMAX = dict(BYTE, byte_head="softmax")


def test_variant_f_reads_byte_windows_and_predicts_tokens():
    """The byte embedder with an ordinary (d, V) softmax head: windows in, token
    logits out, the loss is the token cross-entropy, and the count formula knows it."""
    cfg = small(**SOFTMAX)
    model = build(cfg, seed=12)
    assert not hasattr(model, "byte_decoder") and model.predicts_tokens
    assert count_parameters(model) == parameter_budget(cfg)["total"]
    assert (parameter_budget(cfg)["head"] == cfg.vocab_size * cfg.d_model
            == model.lm_head.weight.numel())
    rng = np.random.default_rng(13)
    x = rng.integers(0, 258, (2, cfg.context, cfg.byte_window))
    y = rng.integers(0, cfg.vocab_size, (2, cfg.context))
    logits, loss = model(x, y)
    assert logits.shape == (2, cfg.context, cfg.vocab_size)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-12)
    loss.backward()                                   # the gradient reaches the bytes
    assert np.abs(model.byte_embedder.byte_emb.weight.grad).max() > 0
    with pytest.raises(NotImplementedError, match="byte window"):
        model.generate(np.zeros((1, 1, cfg.byte_window), dtype=np.int64), 2)


def test_variant_f_keeps_pooling_local_and_passes_a_gradient_check():
    cfg = small(**SOFTMAX, n_layer=1, context=3, byte_window=3, byte_dim=4, d_model=8,
                ffn_hidden=6, vocab_size=7)
    model = build(cfg, seed=14)
    rng = np.random.default_rng(15)
    x = rng.integers(0, 258, (2, 3, 3))
    x2 = x.copy()
    x2[:, 1] = rng.integers(0, 256, (2, 3))                 # token 1's bytes only
    with nt.no_grad():
        out, out2 = model(x)[0].numpy(), model(x2)[0].numpy()
    np.testing.assert_array_equal(out[:, :1], out2[:, :1])
    assert np.abs(out[:, 1:] - out2[:, 1:]).max() > 1e-9
    y = rng.integers(0, 7, (2, 3))
    assert gradcheck_module(model, lambda: model(x, y)[1], max_elements=10,
                            name="STLM variant (f)")


def test_the_authors_loss_scores_every_slot_pads_included():
    cfg = small(**BYTE, byte_loss="all_slots")
    model = build(cfg, seed=16)
    rng = np.random.default_rng(17)
    x = rng.integers(0, 258, (2, cfg.context, cfg.byte_window))
    y = rng.integers(0, 256, (2, cfg.context, cfg.byte_window))
    y[..., 2:] = PAD
    logits, loss = model(x, y)
    every = F.cross_entropy(logits.reshape(-1, 258), y.reshape(-1))
    assert loss.item() == pytest.approx(every.item(), rel=1e-12)
    assert loss.item() != pytest.approx(byte_cross_entropy(logits, y).item(), rel=1e-6)
    z = nt.tensor(logits.numpy(), requires_grad=True)
    byte_cross_entropy(z, y, ignore_pad=False).backward()
    assert (np.abs(z.grad[y == PAD]).max(axis=-1) > 0).all()   # pads are scored


@pytest.mark.parametrize("bad, field", [(dict(byte_head="tokens"), "byte_head"),
                                        (dict(byte_loss="eot"), "byte_loss")])
def test_bad_head_or_loss_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        small(**BYTE, **bad)


# ------------------------------------------------- the per-slot marginal ceiling


def test_target_marginals_sum_token_probabilities_into_distributions():
    rng = np.random.default_rng(18)
    V, W = 40, 4
    table = rng.integers(0, 6, (V, W))                 # few byte values: many collisions
    table[:10, 2:] = PAD
    p = rng.dirichlet(np.ones(V), size=5)              # (N, V)
    onehot = np.eye(258)[table]                        # (V, W, 258), brute force
    m = np.einsum("nv,vwb->nwb", p, onehot)            # every marginal m_j(b)
    targets = table[rng.integers(0, V, 5)]             # what a score reads
    np.testing.assert_allclose(experiment.target_marginals(p, table, targets),
                               np.take_along_axis(m, targets[..., None], -1)[..., 0],
                               rtol=1e-12)
    # Over every byte value b, m_j(b) sums to 1 at each slot.
    every = sum(experiment.target_marginals(p, table, np.full((5, W), b)) for b in range(258))
    np.testing.assert_allclose(every, 1.0, rtol=1e-12)
    # A point mass on one token puts probability 1 on each of its bytes.
    point = np.zeros((1, V))
    point[0, 17] = 1.0
    np.testing.assert_array_equal(experiment.target_marginals(point, table, table[17:18]), 1.0)


def test_the_ceiling_is_the_marginals_of_the_models_own_distribution(windows):
    """heldout_bpb's ceiling equals the per-slot score of the model's softmax pushed
    through the one-hot byte table, computed here by brute force."""
    bw, corpus = windows
    ids = bw.tokenizer.encode(corpus[:1500])
    cfg = small(vocab_size=bw.tokenizer.vocab_size, byte_window=bw.window, context=8)
    model = build(cfg, jitter=0.05)
    nats = experiment.length_code(bw, ids)
    got = experiment.heldout_bpb(model, ids, bw, nats, batch_size=4, ceiling=True)
    m_nats = lens = raw_all = 0.0
    n_bytes = 0
    onehot = np.eye(258)[bw.table]                     # (V, W, 258)
    with nt.no_grad():
        for x, y in data.iter_eval_batches(ids, cfg.context, 4):
            p = F.softmax(model(x)[0], dim=-1).numpy()                 # (B, T, V)
            m = np.einsum("btv,vwc->btwc", p, onehot)                  # (B, T, W, 258)
            target = bw.table[y]
            nll = -np.log(np.take_along_axis(m, target[..., None], -1)[..., 0])
            fit = bw.full[y] <= bw.window
            with np.errstate(divide="ignore", invalid="ignore"):    # all-pad slots
                cond = nll + np.log(1 - m[..., PAD])                   # pads ignored
            m_nats += cond[(target != PAD) & fit[..., None]].sum()
            raw_all += nll[fit].sum()
            lens += nats[bw.kept[y]][fit].sum()
            n_bytes += bw.full[y][fit].sum()
    ceiling = got["ceiling"]
    assert ceiling["bpb_bytes_only"] == pytest.approx(m_nats / (n_bytes * math.log(2)),
                                                      rel=1e-9)
    assert ceiling["bpb"] == pytest.approx((m_nats + lens) / (n_bytes * math.log(2)),
                                           rel=1e-9)
    assert ceiling["bpb_all_slots"] == pytest.approx(raw_all / (n_bytes * math.log(2)),
                                                     rel=1e-9)
    assert len(ceiling["bits_per_slot"]) == bw.window
    # Dropping the pad mass can only raise a byte's probability.
    assert all(c <= r + 1e-12 for c, r in zip(ceiling["bits_per_slot"],
                                              ceiling["bits_per_slot_pads_kept"])
               if c is not None)
    # A token head without the ceiling reports none; a byte decoder has per-slot bits.
    assert "ceiling" not in experiment.heldout_bpb(model, ids, bw, nats, 4)
    byte = build(replace(cfg, **BYTE), jitter=0.05)
    assert len(experiment.heldout_bpb(byte, ids, bw, nats, 4)["bits_per_slot"]) == bw.window


# ------------------------------------------------------------ the experiment


def test_the_length_code_is_a_distribution(windows):
    bw, corpus = windows
    nats = experiment.length_code(bw, bw.tokenizer.encode(corpus))
    assert nats.shape == (bw.window + 1,) and nats[0] == np.inf
    assert np.exp(-nats[1:]).sum() == pytest.approx(1.0)


def test_heldout_bpb_agrees_with_the_training_loop_and_scores_the_same_bytes(windows):
    bw, corpus = windows
    ids = bw.tokenizer.encode(corpus[:4000])
    wide = ByteWindows(bw.tokenizer, window=int(bw.full[ids].max()))   # truncates nothing
    cfg = small(vocab_size=bw.tokenizer.vocab_size, byte_window=wide.window)
    token_model, byte_model = build(cfg, jitter=0.0), build(replace(cfg, **BYTE), jitter=0.0)
    nats = experiment.length_code(wide, ids)
    t = experiment.heldout_bpb(token_model, ids, wide, nats, batch_size=8)
    b = experiment.heldout_bpb(byte_model, ids, wide, nats, batch_size=8)
    assert t["bpb"] == pytest.approx(t["bpb_all_tokens"], rel=1e-12)
    assert (t["tokens"], t["bytes"]) == (b["tokens"], b["bytes"])
    assert b["bpb"] > b["bpb_bytes_only"] and b["bpb_all_tokens"] is None
    n = (len(ids) - 1) // cfg.context * cfg.context          # the targets scored
    loss = evaluate(token_model, ids, cfg.context, 8)        # nats per token
    assert t["bytes"] == wide.full[ids[1:n + 1]].sum()
    assert t["bpb"] == pytest.approx(loss * n / (t["bytes"] * math.log(2)), rel=1e-9)
    # With the narrow window the truncated tokens drop out of the score.
    narrow = experiment.heldout_bpb(token_model, ids, bw, nats, batch_size=8)
    assert narrow["bytes"] < t["bytes"] or bw.truncation_rate(ids[1:n + 1]) == 0


TINY_PROFILE = experiment.Profile(
    STLMConfig(vocab_size=300, context=8, d_model=16, n_layer=2, n_head=2, ffn_hidden=24,
               byte_window=6, byte_dim=8, byte_heads=2),
    TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_interval=2, eval_batches=2),
    variants=tuple(experiment.VARIANTS), seeds=2,
    lrs={**{k: (4e-3,) for k in experiment.VARIANTS}, experiment.A: (2e-3, 8e-3)},
    max_bytes=40_000)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY_PROFILE)


def test_the_val_curve_divides_by_the_bytes_of_the_tokens_it_scores(monkeypatch):
    """The curve scores a prefix of val (eval_batches batches); its bits per byte divide
    by the bytes of those tokens, not by the whole split's mean bytes per token."""
    real, seen = experiment.train, {}

    def spy(model, *args, **kwargs):
        seen["model"], seen["history"] = model, real(model, *args, **kwargs)
        return seen["history"]

    monkeypatch.setattr(experiment, "train", spy)
    prof = TINY_PROFILE
    d = experiment.prepare_data(prof.model.vocab_size, prof.model.byte_window, prof.max_bytes)
    run = experiment.make_runs(replace(prof, variants=(experiment.A,), seeds=1), d["corpus"])[0]
    experiment.stlm_run(run.settings, run.seed, "cpu")
    model, T, B = seen["model"], prof.model.context, prof.train.batch_size
    nats = n_bytes = 0
    with model.evaluating():
        for x, y in data.iter_eval_batches(d["val_ids"], T, B, prof.train.eval_batches):
            nats += float(model(x, y)[1].item()) * y.size
            n_bytes += int(d["windows"].full[y].sum())
    assert seen["history"].val_bpb[-1] == pytest.approx(nats / (n_bytes * math.log(2)),
                                                        rel=1e-6)


def test_the_runs_are_every_variant_rate_and_seed_with_json_settings():
    runs = experiment.make_runs(TINY_PROFILE, "c0ffee", seed=5)
    n_rates = sum(len(TINY_PROFILE.lrs[k]) for k in TINY_PROFILE.variants)
    assert len(runs) == n_rates * TINY_PROFILE.seeds
    assert {r.seed for r in runs} == {5, 6}
    assert len({r.key() for r in runs}) == len(runs)               # none collide
    for r in runs:
        assert json.loads(json.dumps(r.settings)) == r.settings     # JSON-able
        assert r.settings["corpus"] == "c0ffee" and r.version == experiment.VERSION
        assert bool(r.settings["ceiling"]) == (r.settings["variant"] == experiment.A)
    tuned = experiment.make_runs(TINY_PROFILE, "c0ffee", tune=True)
    assert len(tuned) == len(experiment.VARIANTS) * len(experiment.LR_GRID) * 2


def test_a_run_refuses_another_corpus():
    run = experiment.make_runs(TINY_PROFILE, "not-this-corpus")[0]
    with pytest.raises(ValueError, match="corpus"):
        experiment.stlm_run(run.settings, run.seed, "cpu")


def test_the_splits_are_disjoint_and_the_tokenizer_sees_only_train():
    d = experiment.prepare_data(300, 6, 40_000)
    s = d["split_bytes"]
    assert len(s.train) + len(s.val) + len(s.test) == len(data.prose_corpus(40_000))
    assert s.train.tobytes() + s.val.tobytes() + s.test.tobytes() == data.prose_corpus(40_000)
    retrained = data.BPETokenizer.train(s.train.tobytes(), 300)
    assert retrained.vocab == d["tokenizer"].vocab
    assert d["tokenizer"].decode_bytes(d["test_ids"]) == s.test.tobytes()


def test_stlm_writes_results_report_and_plots_and_reuses_its_cache(tiny, tmp_path):
    res = experiment.run(quick=True, out_dir=tmp_path / "stlm")
    out = tmp_path / "stlm"
    for name in ("report.md", "results.json", "params_vs_bpb.png", "loss.png",
                 "bits_per_slot.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["variants"]) == list(experiment.VARIANTS)
    for name, v in saved["variants"].items():
        assert v["parameters"] == v["analytic_parameters"] == v["counted_parameters"], name
        assert v["test"]["bpb"]["n"] == 2 and len(v["test"]["bpb"]["values"]) == 2, name
        assert math.isfinite(v["test"]["bpb"]["mean"]) and v["test"]["bpb"]["mean"] > 0
        if "byte decoder" in name or name in (experiment.D, experiment.E, experiment.G):
            # the length code only adds bits; both losses' figures are reported
            assert v["test"]["bpb"]["mean"] > v["test"]["bpb_bytes_only"]["mean"], name
            assert "bpb_all_slots" in v["test"] and len(v["bits_per_slot_test"][0]) == 6
        else:
            assert v["test"]["bpb"]["mean"] == v["test"]["bpb_bytes_only"]["mean"], name
            assert "bpb_all_tokens" in v["test"]
    a, b, c, d, e, f, g = saved["variants"].values()
    assert a["parameters"] - b["parameters"] == 300 * 16
    assert b["parameters"] - c["parameters"] == d["parameters"] - e["parameters"] > 0
    assert f["embedding+head"] - a["embedding+head"] // 2 == (
        parameter_budget(replace(TINY_PROFILE.model, **experiment.VARIANTS[experiment.F_]))
        ["embedding"])
    # The tuning grid: (a) tried two rates, judged on val; the chosen one is reported.
    grid = saved["tuning"][experiment.A]["grid"]
    assert set(grid) == {"0.002", "0.008"}
    best = min(grid, key=lambda lr: grid[lr]["mean"])
    assert saved["tuning"][experiment.A]["best"] == float(best) == a["lr"]
    ceiling = saved["per_slot_marginal_ceiling"]
    assert ceiling["test_bpb"]["n"] == 2 and len(ceiling["bits_per_slot_test"][0]) == 6
    assert saved["paper_counts"]["formula"] == saved["paper_counts"]["paper"]
    assert res["headline"]["verdict"] == "holds"
    assert set(res["headline"]) == {"claim", "where", "verdict", "figure"}
    assert 3 <= len(res["summary"]) <= 4
    report = (out / "report.md").read_text()
    for words in ("no quality figure", "maintaining competitive performance",
                  "Differences from the paper", "per-slot marginals", "bits_per_slot.png",
                  "all slots", "Their later code"):
        assert words in report, words
    assert protocol_cache(tmp_path)
    again = experiment.run(quick=True, out_dir=out)           # every run from the cache
    assert again["variants"] == res["variants"]


def test_the_quick_sweep_flags_a_rate_within_the_chosen_rates_seed_range(monkeypatch,
                                                                          tmp_path):
    """The quick profile quotes the sweep that chose its rates, which kept only means: a
    swept rate is judged against the chosen rate's seed range, read from this run."""
    one_rate = replace(TINY_PROFILE, lrs={k: (4e-3,) for k in experiment.VARIANTS})
    monkeypatch.setitem(experiment.PROFILES, "quick", one_rate)
    out = tmp_path / "stlm"
    chosen = experiment.run(quick=True, out_dir=out)["tuning"][experiment.A]["grid"]["0.004"]
    assert chosen["max"] > chosen["min"]
    near, far = chosen["mean"] + (chosen["max"] - chosen["min"]) / 2, chosen["mean"] + 100
    monkeypatch.setitem(experiment.QUICK_SWEEP, experiment.A,
                        {2e-3: near, 4e-3: 99.0, 8e-3: far})
    experiment.run(quick=True, out_dir=out)                  # from the cache
    report = (out / "report.md").read_text()
    assert f"**0.004: {chosen['mean']:.4f}**" in report and "99.0000" not in report
    assert f"Within the seeds' noise of the choice: {experiment.A} (0.002)." in report


@pytest.mark.parametrize("d, blames_the_factorisation", [(5.1, True), (9.0, False)])
def test_the_factorisation_note_follows_where_d_lands(d, blames_the_factorisation):
    """(a) at 2.8 and its per-slot marginals at 5.0: a (d) near the marginals has lost its
    bits to the factorisation; a (d) far beyond them has lost most of them elsewhere."""
    note = experiment._factorisation_note(2.8, 5.0, d)
    assert "costs 2.20 bits per byte" in note and f"lands {d - 5.0:+.2f}" in note
    assert ("the factorisation would have to go" in note) == blames_the_factorisation
    assert ("a better-trained core might close" in note) != blames_the_factorisation


def protocol_cache(root) -> int:
    return len(list((root / "cache" / "runs").glob("stlm_run-*.json")))


@pytest.mark.slow
def test_quick_profile_byte_path_is_smaller_and_all_models_learn(tmp_path):
    res = experiment.run(quick=True, out_dir=tmp_path / "stlm")
    v = res["variants"]
    assert v[experiment.D]["embedding+head"] < v[experiment.B]["embedding+head"]
    assert v[experiment.B]["embedding+head"] < v[experiment.A]["embedding+head"]
    unigram = res["unigram_bpb_test"]                       # a context-free byte model
    for k in (experiment.A, experiment.B, experiment.C, experiment.F_):
        assert v[k]["test"]["bpb_all_tokens"]["mean"] < unigram - 1.0, k
    assert v[experiment.D]["test"]["bpb_bytes_only"]["mean"] < unigram
