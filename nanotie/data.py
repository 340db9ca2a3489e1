"""Data: corpora that ship with Python itself, two tokenizers, and batching.

Nothing here downloads anything. The two corpora come with every CPython install:
``prose``, the English help texts behind ``help("topics")``, and ``code``, the
standard library's own ``.py`` files. The tokenizers: :class:`BPETokenizer`, trained
here from scratch, and :class:`ByteTokenizer`, one id per byte. :class:`BatchSampler`
draws random training windows (and resumes exactly); :func:`iter_eval_batches` walks
the validation data in order.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

from .files import write_text

__all__ = ["prose_corpus", "code_corpus", "load_corpus", "CORPORA", "train_val_split",
           "contiguous_split", "ByteTokenizer", "BPETokenizer", "SPLIT_PATTERN", "pretokenize",
           "BatchSampler", "iter_eval_batches", "eval_targets"]


# ------------------------------------------------------------------------ corpora


def _check_max_bytes(max_bytes) -> None:
    if max_bytes is not None and max_bytes < 0:     # data[:-3] would cut the end off
        raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")


def prose_corpus(max_bytes: int | None = None) -> bytes:
    """English prose: the texts of ``pydoc_data.topics.topics`` (Python's own help
    pages), in sorted topic order, one blank line apart, each paragraph once (about
    0.38 MB on Python 3.11).

    The help pages copy whole sections from one another (``compound`` holds ``try``,
    ``while`` and ``with``). Kept, they would put 13% of a last-tenth test split's bytes
    inside 64-byte strings that the first eight tenths also hold; without the repeats, 4%
    (table rules and one-line examples), measured on Python 3.11."""
    from pydoc_data.topics import topics

    _check_max_bytes(max_bytes)
    text = "\n\n".join(topics[name] for name in sorted(topics))
    return _without_repeats(text).encode("utf-8")[:max_bytes]


def _without_repeats(text: str, min_chars: int = 40) -> str:
    """``text`` without the paragraphs (blank-line separated) of ``min_chars`` or more
    characters that repeat an earlier one, whitespace aside."""
    seen, kept = set(), []
    for paragraph in text.split("\n\n"):
        key = " ".join(paragraph.split())
        if len(key) < min_chars or key not in seen:
            kept.append(paragraph)
        seen.add(key)
    return "\n\n".join(kept)


# Directories of the standard library that are not "ordinary library code": tests,
# bundled third-party packages, the IDLE app, demos and caches. The build's own settings
# (_sysconfigdata*.py, config-*/) are left out too: they spell out the install path, so
# the same Python installed elsewhere would give another corpus.
_CODE_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib",
                                 "lib2to3", "__pycache__", "ensurepip", "turtledemo"})


def code_corpus(max_bytes: int | None = 2_000_000) -> bytes:
    """Python code: every valid UTF-8 ``*.py`` of the standard library outside
    ``_CODE_EXCLUDED_DIRS``, sorted by relative path, each after a ``# file: relpath``
    line, cut at ``max_bytes`` (the same for one Python version wherever it is installed,
    bar what its packager added)."""
    _check_max_bytes(max_bytes)
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending (site-packages can be huge).
        dirnames[:] = [d for d in dirnames
                       if d not in _CODE_EXCLUDED_DIRS and not d.startswith("config-")]
        paths += [Path(dirpath, f) for f in filenames
                  if f.endswith(".py") and not f.startswith("_sysconfigdata")]
    paths.sort(key=lambda p: p.relative_to(root).as_posix())

    parts, size = [], 0
    for path in paths:
        if max_bytes is not None and size >= max_bytes:
            break
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        part = f"# file: {path.relative_to(root).as_posix()}\n".encode("utf-8") + raw
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:max_bytes]


CORPORA = {"prose": prose_corpus, "code": code_corpus}


def load_corpus(name: str, max_bytes: int | None = None) -> bytes:
    """The corpus called ``name`` ("prose" or "code") as bytes; ``max_bytes`` caps its
    size (None: each corpus's own default)."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}: known corpora are {sorted(CORPORA)}")
    return CORPORA[name]() if max_bytes is None else CORPORA[name](max_bytes)


def train_val_split(data, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (bytes or a 1-D integer array) as (train, val) id arrays: the LAST
    ``val_fraction`` is validation, cut off by :func:`contiguous_split`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    return tuple(contiguous_split(data, [val_fraction], ("train", "val")))


def contiguous_split(data, fractions, names) -> list:
    """``data`` (bytes or a 1-D integer array) cut into contiguous copies, in order: the
    ids that the ``fractions`` leave, then round(n * f) ids for each f. ``names`` name
    the pieces in the error raised when one would be empty. Bytes become ``np.uint8``;
    integer arrays keep their dtype.

    No shuffling: random windows drawn from shuffled pieces would overlap windows in
    the other pieces, leaking training text into the held-out losses."""
    ids = _as_id_array(data)
    sizes = [int(round(len(ids) * f)) for f in fractions]
    sizes.insert(0, len(ids) - sum(sizes))
    if min(sizes) < 1:
        raise ValueError(f"{len(ids)} ids give {' / '.join(map(str, sizes))} for "
                         f"{' / '.join(names)}; every piece must be non-empty")
    ends = np.cumsum(sizes)
    return [ids[end - n:end].copy() for n, end in zip(sizes, ends)]


def _as_id_array(data) -> np.ndarray:
    """A 1-D integer array from bytes-like data (as uint8) or an integer array."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    ids = np.asarray(data)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"expected bytes or a 1-D integer array of token ids, got an array "
                        f"of shape {ids.shape} and dtype {ids.dtype}")
    return ids


def _as_bytes(text) -> bytes:
    """UTF-8 bytes of a str; bytes-like objects unchanged."""
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


# -------------------------------------------------------------------- tokenizers


# Pre-tokenization: BPE runs inside each chunk this pattern finds, never across chunks,
# so a token never glues a word to the punctuation or the next word after it (GPT-2's
# idea; its pattern needs the third-party `regex` module, this one only `re`). A chunk is
#   ' ?[A-Za-z]+'         a word with at most one leading space   (" the", "Hello")
#   ' ?[0-9]+'            a number, likewise                      (" 2024")
#   ' ?[^\sA-Za-z0-9]+'   a run of other bytes: punctuation and every non-ASCII byte
#   '\s+(?!\S)'           whitespace, leaving its last space to the next word
#   '\s+'                 whitespace at the end of the text
# Every byte matches one of the classes, so the chunks always concatenate back to the
# input. Non-ASCII letters are "other bytes" here ("café" -> "caf", "é"), a simplification.
SPLIT_PATTERN = rb" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"
_SPLIT_RE = re.compile(SPLIT_PATTERN)


def pretokenize(data: str | bytes) -> list[bytes]:
    """Split text into the chunks that BPE merges never cross (see ``SPLIT_PATTERN``)."""
    return _SPLIT_RE.findall(_as_bytes(data))


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids``, scanning left to right, by
    ``new_id``: merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding (Sennrich et al. 2016, GPT-2's byte-level variant).

    :meth:`train` starts from the 256 bytes and repeatedly MERGES the most frequent
    adjacent pair of ids into a new id: ``merges[k] = (a, b)`` says that id ``256 + k``
    stands for id ``a`` followed by id ``b``, so ``vocab[256 + k] = vocab[a] + vocab[b]``.
    Encoding replays the merges, earliest first; every id stands for a byte string, so
    any bytes round-trip exactly.
    """

    _FORMAT = "nanotie-bpe"
    _VERSION = 1

    def __init__(self, merges):
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for k, (a, b) in enumerate(self.merges):
            new_id = 256 + k
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merge {k} = ({a}, {b}) refers to an id that does not "
                                 f"exist yet (ids so far are 0..{new_id - 1})")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        # rank = position in the merge list: encoding applies the earliest merges first,
        # in the order training learned them.
        self.ranks: dict[tuple[int, int], int] = {p: k for k, p in enumerate(self.merges)}
        if len(self.ranks) != len(self.merges):
            raise ValueError("the merge list contains the same pair twice")
        self._cache: dict[bytes, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """256 byte ids plus one id per merge."""
        return 256 + len(self.merges)

    @classmethod
    def train(cls, data: str | bytes, vocab_size: int):
        """Learn ``vocab_size - 256`` merges from ``data``; return the tokenizer.

        Each step merges the most frequent adjacent pair (ties: the smallest pair
        ``(a, b)``), so training is deterministic. Stops early, with a smaller vocabulary,
        if no pair is left to merge.

        Speed: the corpus is reduced to its unique chunks with their frequencies; a merge
        touches only the chunks that hold the pair (an index pair -> chunks) and a max-heap
        finds the best pair, skipping entries whose count has changed since.
        """
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (the byte ids), got "
                             f"{vocab_size}")
        chunk_freq = Counter(pretokenize(data))
        words = [list(chunk) for chunk in chunk_freq]      # each chunk as a list of ids
        freqs = list(chunk_freq.values())

        counts: dict[tuple[int, int], int] = {}            # pair -> weighted count
        where: dict[tuple[int, int], set[int]] = {}        # pair -> chunks that hold it
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + f
                where.setdefault(pair, set()).add(w)
        heap = [(-c, pair) for pair, c in counts.items()]  # min-heap on -count = max-heap
        heapq.heapify(heap)

        merges = []
        while len(merges) < vocab_size - 256 and heap:
            neg_count, pair = heapq.heappop(heap)
            if counts.get(pair, 0) != -neg_count:
                continue                                    # stale entry
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for w in where.pop(pair):
                old, f = words[w], freqs[w]
                new = _merge(old, pair, new_id)
                if len(new) == len(old):
                    continue                                # stale: pair no longer here
                # Take the chunk's old pairs out of the counts, put its new pairs in.
                for p in zip(old, old[1:]):
                    counts[p] -= f
                    changed.add(p)
                for p in zip(new, new[1:]):
                    counts[p] = counts.get(p, 0) + f
                    changed.add(p)
                    # `where` keeps chunks that have since lost a pair: checking on use
                    # is cheaper than removing them here.
                    where.setdefault(p, set()).add(w)
                words[w] = new
            for p in changed:
                if counts[p] > 0:
                    heapq.heappush(heap, (-counts[p], p))
                else:
                    del counts[p]
        return cls(merges)

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        # Replay the merges: repeatedly merge the present pair that was learned first.
        ids = list(chunk)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, math.inf))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, 256 + self.ranks[pair])
        return ids

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids (int64, shape (N,)) of a str (as UTF-8) or of bytes.

        Each distinct chunk is encoded once and cached; prose repeats its chunks a lot.
        """
        out = []
        for chunk in pretokenize(text):
            ids = self._cache.get(chunk)
            if ids is None:
                ids = self._cache[chunk] = self._encode_chunk(chunk)
            out.extend(ids)
        return np.array(out, dtype=np.int64)

    def decode_bytes(self, ids) -> bytes:
        """The bytes that ``ids`` stand for."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
        return b"".join(self.vocab[i] for i in ids.tolist())

    def decode(self, ids) -> str:
        """The text that ``ids`` stand for (invalid UTF-8 becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def tokens(self, text: str | bytes) -> list[bytes]:
        """How ``text`` splits into tokens: one byte string per token."""
        return [self.vocab[i] for i in self.encode(text).tolist()]

    def save(self, path) -> None:
        """Write the merges to a JSON file (atomically)."""
        payload = {"format": self._FORMAT, "version": self._VERSION,
                   "pattern": SPLIT_PATTERN.decode("ascii"),
                   "merges": [list(p) for p in self.merges]}
        write_text(path, json.dumps(payload))

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by :meth:`save`; a malformed file raises ValueError."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a nanotie BPE tokenizer file ({exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != cls._FORMAT:
            raise ValueError(f"{path}: not a nanotie BPE tokenizer file (no "
                             f"'format': {cls._FORMAT!r} entry)")
        if payload.get("version") != cls._VERSION:
            raise ValueError(f"{path}: unsupported version {payload.get('version')!r}, "
                             f"expected {cls._VERSION}")
        if payload.get("pattern") != SPLIT_PATTERN.decode("ascii"):
            raise ValueError(f"{path}: trained with another pre-tokenization pattern "
                             f"({payload.get('pattern')!r}); merges would not apply")
        merges = payload.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2
                and all(type(i) is int for i in m) for m in merges):
            raise ValueError(f"{path}: 'merges' must be a list of [int, int] pairs")
        try:
            return cls(merges)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


class ByteTokenizer(BPETokenizer):
    """One token per byte: id = byte value, vocab_size = 256 (a BPE with no merges).

    Text is encoded as UTF-8, so a character outside ASCII takes 2-4 tokens. Decoding
    to str replaces invalid UTF-8 (e.g. a sequence cut mid-character) with U+FFFD;
    :meth:`BPETokenizer.decode_bytes` is always exact.
    """

    def __init__(self, merges=()):             # merges: as load() and train() pass them
        if len(merges):
            raise ValueError("a ByteTokenizer has no merges; use BPETokenizer")
        super().__init__([])

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids (int64, shape (N,)): the bytes themselves, no chunks to look up."""
        return np.frombuffer(_as_bytes(text), dtype=np.uint8).astype(np.int64)


# ---------------------------------------------------------------------- batching


def _check_windows(data: np.ndarray, block_size: int, batch_size: int) -> None:
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} and "
                         f"{batch_size}")
    if len(data) < block_size + 1:
        raise ValueError(f"data has {len(data)} tokens, but a window of block_size="
                         f"{block_size} needs at least {block_size + 1} (inputs plus the "
                         "next-token target)")


class BatchSampler:
    """Random next-token batches: ``x`` (B, T) windows of ``data`` and ``y`` = the same
    windows shifted one token later, so ``y[b, t]`` is the token after ``x[b, t]``.
    Window starts are uniform on [0, len(data) - T - 1], drawn from the sampler's own
    generator, which :meth:`state_dict` saves for an exact resume.
    """

    def __init__(self, data, block_size: int, batch_size: int, seed: int = 0):
        self.data = _as_id_array(data)
        _check_windows(self.data, block_size, batch_size)
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.step = 0                                      # batches drawn so far

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch ``(x, y)``, both int64 of shape (B, T)."""
        T = self.block_size
        starts = self.rng.integers(0, len(self.data) - T, size=self.batch_size)  # (B,)
        idx = starts[:, None] + np.arange(T)                                     # (B, T)
        self.step += 1
        return self.data[idx].astype(np.int64), self.data[idx + 1].astype(np.int64)

    def state_dict(self) -> dict:
        """The sampler's position as plain ints and uint64 arrays (no pickle in
        ``np.savez``): PCG64's two 128-bit integers as (high, low) 64-bit halves."""
        s = self.rng.bit_generator.state
        return {"seed": self.seed, "step": self.step, "block_size": self.block_size,
                "batch_size": self.batch_size,
                "rng_state": _split_u128(s["state"]["state"]),
                "rng_inc": _split_u128(s["state"]["inc"]),
                "rng_has_uint32": int(s["has_uint32"]), "rng_uinteger": int(s["uinteger"])}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (the data itself is not saved:
        pass the same data to the constructor)."""
        for key in ("block_size", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"saved sampler has {key}={int(state[key])}, this one has "
                                 f"{getattr(self, key)}; batches would not match")
        self.seed, self.step = int(state["seed"]), int(state["step"])
        self.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": _join_u128(state["rng_state"]),
                      "inc": _join_u128(state["rng_inc"])},
            "has_uint32": int(state["rng_has_uint32"]),
            "uinteger": int(state["rng_uinteger"])}


def _split_u128(value: int) -> np.ndarray:
    return np.array([value >> 64, value & (2**64 - 1)], dtype=np.uint64)


def _join_u128(halves) -> int:
    high, low = (int(v) for v in np.asarray(halves, dtype=np.uint64))
    return (high << 64) | low


def iter_eval_batches(data, block_size: int, batch_size: int, max_batches: int | None = None):
    """Yield ``(x, y)`` int64 batches of consecutive, non-overlapping windows, in order.

    Window k covers ``x = data[kT : (k+1)T]`` and ``y = data[kT+1 : (k+1)T+1]``, so the
    targets cover ``data[1 : nT+1]`` exactly once, with n = (len(data) - 1) // T; the last
    batch may hold fewer than ``batch_size`` windows and the final < T tokens are left
    out. ``max_batches`` stops early (an estimate of the loss on a prefix).
    """
    data = _as_id_array(data)
    _check_windows(data, block_size, batch_size)
    T = block_size
    starts = np.arange(0, (len(data) - 1) // T * T, T)                          # (n,)
    for i, b in enumerate(range(0, len(starts), batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        idx = starts[b:b + batch_size, None] + np.arange(T)                     # (B, T)
        yield data[idx].astype(np.int64), data[idx + 1].astype(np.int64)


def eval_targets(data, block_size: int, batch_size: int, max_batches: int | None = None):
    """The targets that :func:`iter_eval_batches` yields, in order, as one array:
    ``data[1 : nT + 1]`` for the n windows it reads. A loss per token becomes bits per
    byte exactly with the bytes of THESE tokens, not those of the whole of ``data``."""
    data = _as_id_array(data)
    _check_windows(data, block_size, batch_size)
    n = (len(data) - 1) // block_size
    n = n if max_batches is None else min(n, max_batches * batch_size)
    return data[1:n * block_size + 1]
