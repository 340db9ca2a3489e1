"""Data: corpora, train/val split, byte and BPE tokenizers, and batch sampling.

The BPE tests train small vocabularies on slices of the prose corpus, so the whole file
runs in seconds. The fast trainer is checked against a brute-force reference that
recounts every pair at every step.
"""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanotie import data, protocol
from nanotie.data import (BatchSampler, BPETokenizer, ByteTokenizer, code_corpus,
                          iter_eval_batches, load_corpus, pretokenize, prose_corpus,
                          train_val_split)

PROSE = prose_corpus()
TRAIN_TEXT = PROSE[:60_000]            # what the small BPE learns from
HELD_OUT = PROSE[-40_000:]             # prose it never saw
N_MERGES = 64


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TRAIN_TEXT, 256 + N_MERGES)


# ------------------------------------------------------------------------ corpora


def test_prose_corpus_is_english_and_deterministic():
    assert len(PROSE) > 100_000
    assert PROSE == prose_corpus()
    text = PROSE.decode("utf-8")                     # valid UTF-8
    for word in (" the ", " and ", " of "):
        assert text.count(word) > 100, word
    ascii_share = sum(b < 128 for b in PROSE) / len(PROSE)
    assert ascii_share > 0.99


def test_prose_corpus_cap_is_a_prefix():
    assert prose_corpus(1000) == PROSE[:1000]


def test_prose_corpus_holds_each_paragraph_once():
    paragraphs = [" ".join(p.split()) for p in PROSE.decode("utf-8").split("\n\n")]
    long = [p for p in paragraphs if len(p) >= 40]
    assert len(long) > 1000 and len(set(long)) == len(long)


def test_prose_test_split_copies_little_of_train():
    """The help pages copy sections word for word; with every paragraph once, little
    of the test split lies inside 64-byte strings of train (with the copies: 13%)."""
    s = protocol.split(PROSE, val_fraction=0.1, test_fraction=0.1)
    train, test, w = s.train.tobytes(), s.test.tobytes(), 64
    grams = {train[i:i + w] for i in range(len(train) - w + 1)}
    covered = np.zeros(len(test), bool)
    for i in range(len(test) - w + 1):
        if test[i:i + w] in grams:
            covered[i:i + w] = True
    assert covered.mean() < 0.06


def test_without_repeats_keeps_the_first_of_each_long_paragraph_and_every_short_one():
    para = "a paragraph long enough to count as a repeat of another"
    text = f"{para}\n\nshort\n\n{para.replace(' ', '  ')}\n\nshort\n\nend"
    assert data._without_repeats(text) == f"{para}\n\nshort\n\nshort\n\nend"


def test_code_corpus_is_python_deterministic_and_capped():
    code = code_corpus(300_000)
    assert len(code) == 300_000
    assert code == code_corpus(300_000)
    assert b"def " in code and b"import " in code
    assert code.startswith(b"# file: ")
    # Headers name files in sorted order, and no excluded directory appears.
    names = [line[len(b"# file: "):].decode() for line in code.splitlines()
             if line.startswith(b"# file: ")]
    assert len(names) > 3
    assert names == sorted(names)
    assert not any(part in {"test", "tests", "site-packages", "idlelib", "__pycache__"}
                   for name in names for part in name.split("/")[:-1])
    assert code_corpus(1000) == code[:1000]


def test_code_corpus_walks_the_library_skipping_what_it_says(tmp_path, monkeypatch):
    """On a small stand-in library: .py files only, valid UTF-8 only, none under the
    excluded folders, in sorted order, each after its header."""
    for rel, raw in {"a.py": b"x = 1\n", "pkg/b.py": b"y = 2\n", "bad.py": b"\xff\xfe no",
                     "notes.txt": b"text", "test/c.py": b"t = 0\n",
                     "site-packages/d.py": b"s = 0\n", "pkg/__pycache__/e.py": b"e = 0\n",
                     "_sysconfigdata__linux.py": b"p = '/opt/py'\n",     # the install path
                     "config-3.11-x86_64-linux-gnu/python-config.py": b"q = 0\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(raw)
    monkeypatch.setattr(data.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    want = b"# file: a.py\nx = 1\n# file: pkg/b.py\ny = 2\n"
    assert code_corpus(None) == want and code_corpus(20) == want[:20]


def test_load_corpus_by_name():
    assert load_corpus("prose") == PROSE
    assert load_corpus("code", max_bytes=5000) == code_corpus(5000)
    with pytest.raises(ValueError, match="code.*prose"):
        load_corpus("wikipedia")


# -------------------------------------------------------------------------- split


@pytest.mark.parametrize("source", [b"abcdefghijklmnopqrst", np.arange(20, dtype=np.int32)])
def test_train_val_split_is_contiguous_and_complete(source):
    train, val = train_val_split(source, val_fraction=0.25)
    ids = np.frombuffer(source, np.uint8) if isinstance(source, bytes) else source
    assert len(train) == 15 and len(val) == 5
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    assert train.dtype == ids.dtype and val.dtype == ids.dtype
    train2, val2 = train_val_split(source, val_fraction=0.25)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(b"abcdefghij", fraction)


def test_train_val_split_rejects_an_empty_side():
    with pytest.raises(ValueError, match="non-empty"):
        train_val_split(b"abc", 0.01)


# ---------------------------------------------------------------- byte tokenizer


@given(st.text())
def test_byte_tokenizer_round_trips_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int64
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


@given(st.binary())
def test_byte_tokenizer_round_trips_bytes(raw):
    tok = ByteTokenizer()
    ids = tok.encode(raw)
    assert ids.tolist() == list(raw)
    assert tok.decode_bytes(ids) == raw
    assert b"".join(tok.tokens(raw)) == raw


def test_byte_tokenizer_saves_loads_and_refuses_merges(tmp_path):
    ByteTokenizer().save(tmp_path / "byte.json")
    loaded = ByteTokenizer.load(tmp_path / "byte.json")
    assert type(loaded) is ByteTokenizer and loaded.vocab_size == 256
    with pytest.raises(ValueError, match="no merges"):
        ByteTokenizer([(97, 98)])


@pytest.mark.parametrize("corpus", [data.prose_corpus, data.code_corpus])
def test_a_negative_max_bytes_is_refused_not_cut_from_the_end(corpus):
    with pytest.raises(ValueError, match="max_bytes"):
        corpus(-3)
    assert corpus(0) == b""                                   # 0 is a size, not an error


def test_byte_tokenizer_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="256"):
        ByteTokenizer().decode_bytes([65, 256])


# ------------------------------------------------------------------ pre-tokenizer


@given(st.binary())
def test_pretokenize_covers_every_byte(raw):
    assert b"".join(pretokenize(raw)) == raw


def test_pretokenize_splits_words_from_punctuation():
    assert pretokenize("Hello, world  42!\n") == [
        b"Hello", b",", b" world", b" ", b" 42", b"!", b"\n"]


# ------------------------------------------------------------------ BPE tokenizer


def reference_bpe_merges(text: bytes, n_merges: int):
    """Brute force: recount every pair of every chunk occurrence at every step."""
    words = [list(chunk) for chunk in pretokenize(text)]
    merges = []
    for k in range(n_merges):
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        merges.append(best)
        words = [merge_pair(w, best, 256 + k) for w in words]
    return merges


def merge_pair(ids, pair, new_id):
    # Written differently from the library's: a merged id never equals pair[0], so
    # checking the last output id gives the same left-to-right, non-overlapping merge.
    out = []
    for i in ids:
        if out and out[-1] == pair[0] and i == pair[1]:
            out[-1] = new_id
        else:
            out.append(i)
    return out


def test_bpe_training_matches_brute_force_reference(bpe):
    assert bpe.merges == reference_bpe_merges(TRAIN_TEXT, N_MERGES)


def test_bpe_training_is_deterministic(bpe):
    assert BPETokenizer.train(TRAIN_TEXT, 256 + N_MERGES).merges == bpe.merges


def test_bpe_vocab_is_consistent(bpe):
    assert bpe.vocab_size == 256 + N_MERGES == len(bpe.vocab)
    for k, (a, b) in enumerate(bpe.merges):
        assert bpe.vocab[256 + k] == bpe.vocab[a] + bpe.vocab[b]
    assert len(set(bpe.vocab.values())) == bpe.vocab_size     # no token learned twice


@settings(max_examples=200)
@given(st.text())
def test_bpe_round_trips_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=200)
@given(st.binary())
def test_bpe_round_trips_any_bytes(bpe, raw):
    ids = bpe.encode(raw)
    assert ids.dtype == np.int64
    assert bpe.decode_bytes(ids) == raw


def test_bpe_round_trips_invalid_utf8_and_prose(bpe):
    raw = b"\xff\xfe caf\xc3 the \x80\x80 end"
    assert bpe.decode_bytes(bpe.encode(raw)) == raw
    assert bpe.decode_bytes(bpe.encode(HELD_OUT)) == HELD_OUT


def test_bpe_compresses_held_out_prose(bpe):
    ids = bpe.encode(HELD_OUT)
    assert len(ids) < 0.8 * len(HELD_OUT)
    # A bigger vocabulary compresses at least as well on the same held-out text.
    bigger = BPETokenizer.train(TRAIN_TEXT, 256 + 4 * N_MERGES)
    assert len(bigger.encode(HELD_OUT)) <= len(ids)


def test_bpe_tokens_never_cross_chunk_boundaries(bpe):
    # Each token lies inside one pre-token chunk, so the chunks' boundaries are a subset
    # of the tokens' boundaries.
    text = HELD_OUT[:5000]
    token_ends = set(np.cumsum([len(t) for t in bpe.tokens(text)]).tolist())
    chunk_ends = set(np.cumsum([len(c) for c in pretokenize(text)]).tolist())
    assert chunk_ends <= token_ends
    for token in bpe.vocab.values():
        assert len(pretokenize(token)) == 1, token


def test_bpe_save_load_round_trip(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == bpe.merges
    np.testing.assert_array_equal(loaded.encode(HELD_OUT), bpe.encode(HELD_OUT))
    assert [p.name for p in tmp_path.iterdir()] == ["bpe.json"]   # no temp file left


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a nanotie BPE"),
    (json.dumps([1, 2]), "not a nanotie BPE"),
    (json.dumps({"format": "nanotie-bpe", "version": 99}), "version"),
    (json.dumps({"format": "nanotie-bpe", "version": 1,
                 "pattern": data.SPLIT_PATTERN.decode(), "merges": [[1, "x"]]}), "merges"),
    (json.dumps({"format": "nanotie-bpe", "version": 1,
                 "pattern": data.SPLIT_PATTERN.decode(), "merges": [[1, 300]]}),
     "does not exist"),
    (json.dumps({"format": "nanotie-bpe", "version": 1, "pattern": "x",
                 "merges": []}), "pattern"),
])
def test_bpe_load_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_bpe_merges_may_use_any_id_made_before_them_and_no_other():
    """Merge k makes id 256 + k from two ids below it: bytes 0..255 (0 included) and the
    ids of earlier merges. Encoding replays them down to a single id, even for a chunk
    of two bytes."""
    tok = BPETokenizer([(0, 0), (104, 105), (256, 257)])
    assert tok.encode(b"hi").tolist() == [257]
    assert tok.encode(b"\x00\x00").tolist() == [256]
    assert tok.decode_bytes([258]) == b"\x00\x00hi"
    for merges, ids in [([(97, 256)], "0..255"), ([(97, 98), (257, 97)], "0..256"),
                        ([(-1, 97)], "0..255")]:
        with pytest.raises(ValueError, match=f"does not exist yet \\(ids so far are {ids}\\)"):
            BPETokenizer(merges)


def test_bpe_rejects_a_vocab_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train(TRAIN_TEXT, 200)


def test_bpe_with_no_merges_is_the_byte_tokenizer():
    tok = BPETokenizer.train(TRAIN_TEXT, 256)
    assert tok.vocab_size == 256
    np.testing.assert_array_equal(tok.encode(HELD_OUT), ByteTokenizer().encode(HELD_OUT))


# ------------------------------------------------------------------------ batches


SEQ = np.arange(1000, dtype=np.int64) * 7 % 1009          # distinct values, not sorted


def test_sampler_same_seed_same_batches_and_shifted_targets():
    a, b = BatchSampler(SEQ, 16, 4, seed=3), BatchSampler(SEQ, 16, 4, seed=3)
    other = BatchSampler(SEQ, 16, 4, seed=4)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.sample(), b.sample()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.sample()[0], other.sample()[0])
    x, y = a.sample()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == np.int64
    position = {int(v): i for i, v in enumerate(SEQ)}
    for row_x, row_y in zip(x, y):
        start = position[int(row_x[0])]
        np.testing.assert_array_equal(row_x, SEQ[start:start + 16])
        np.testing.assert_array_equal(row_y, SEQ[start + 1:start + 17])


def test_sampler_reaches_both_ends_of_the_data():
    sampler = BatchSampler(np.arange(12), block_size=10, batch_size=64, seed=0)
    x, y = sampler.sample()
    assert set(x[:, 0].tolist()) == {0, 1}            # the only valid starts
    assert y.max() == 11


def test_sampler_state_resumes_exactly_through_npz(tmp_path):
    sampler = BatchSampler(SEQ, 8, 3, seed=11)
    for _ in range(3):
        sampler.sample()
    path = tmp_path / "sampler.npz"
    np.savez(path, **sampler.state_dict())
    expected = [sampler.sample() for _ in range(4)]

    resumed = BatchSampler(SEQ, 8, 3, seed=0)          # a different seed, then overwritten
    with np.load(path, allow_pickle=False) as saved:
        resumed.load_state_dict(dict(saved))
    assert resumed.step == 3
    for x, y in expected:
        rx, ry = resumed.sample()
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)


def test_sampler_refuses_a_state_for_another_shape():
    state = BatchSampler(SEQ, 8, 3).state_dict()
    with pytest.raises(ValueError, match="block_size"):
        BatchSampler(SEQ, 9, 3).load_state_dict(state)


def test_sampler_rejects_too_short_data():
    with pytest.raises(ValueError, match="at least 17"):
        BatchSampler(np.arange(16), block_size=16, batch_size=2)
    BatchSampler(np.arange(17), block_size=16, batch_size=2).sample()   # just enough
    x, y = BatchSampler(np.arange(2), block_size=1, batch_size=1).sample()   # the smallest
    assert x.tolist() == [[0]] and y.tolist() == [[1]]


def test_eval_batches_cover_the_data_in_order():
    T, B = 7, 3
    batches = list(iter_eval_batches(SEQ, T, B))
    again = list(iter_eval_batches(SEQ, T, B))
    assert len(again) == len(batches)
    assert all(np.array_equal(x, x2) and np.array_equal(y, y2)
               for (x, y), (x2, y2) in zip(batches, again))
    xs = np.concatenate([x for x, _ in batches]).reshape(-1)
    ys = np.concatenate([y for _, y in batches]).reshape(-1)
    n = (len(SEQ) - 1) // T * T
    np.testing.assert_array_equal(xs, SEQ[:n])
    np.testing.assert_array_equal(ys, SEQ[1:n + 1])
    assert all(x.shape[0] == B for x, _ in batches[:-1])
    assert len(list(iter_eval_batches(SEQ, T, B, max_batches=2))) == 2
    for k in (None, 1, 2, 10**6):           # eval_targets: the y's, in order, as one array
        ys = [y for _, y in iter_eval_batches(SEQ, T, B, k)]
        np.testing.assert_array_equal(data.eval_targets(SEQ, T, B, k),
                                      np.concatenate(ys).reshape(-1))
    with pytest.raises(ValueError, match="at least"):
        list(iter_eval_batches(np.arange(5), 5, 1))
