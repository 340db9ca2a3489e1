"""Subword tokens as fixed windows of bytes: what the byte-level embedder reads.

A BPE tokenizer still decides WHERE tokens begin and end (the pooling boundaries),
but the model never looks a token id up in a (V, d) table. Each token becomes its
byte string, cut or padded to a fixed window of W slots:

    " the"          -> [32, 116, 104, 101, PAD, PAD, ..., PAD]         (W slots)
    " implementation" (15 bytes, W = 12) -> its first 12 bytes: TRUNCATED

The byte vocabulary is 256 bytes + PAD (256) + EOT (257, end of text) = 258 ids.
A token longer than W loses its tail, so the round trip tokens -> windows -> bytes
is exact only when no token exceeds the window; :meth:`ByteWindows.truncation_rate`
says how often that happens.
"""

from __future__ import annotations

import numpy as np

from ... import backend

PAD = 256            # fills a window after the token's last byte; ignored by the loss
EOT = 257            # end of text: a window [EOT, PAD, ...] closes a document
BYTE_VOCAB = 258     # 256 bytes + PAD + EOT


class ByteWindows:
    """The window of every token of a tokenizer, as one (V, W) lookup table.

    ``table[i]`` is token i's window, ``kept[i]`` the number of its bytes that fit
    (min(len, W)) and ``full[i]`` its true length. Turning a (B, T) array of token ids
    into (B, T, W) windows is then one gather, ``table[ids]``, on any device.
    """

    def __init__(self, tokenizer, window: int = 12):
        if window < 1:
            raise ValueError(f"ByteWindows: window must be >= 1, got {window}")
        self.tokenizer, self.window = tokenizer, window
        V = tokenizer.vocab_size
        self.table = np.full((V, window), PAD, dtype=np.int64)          # (V, W)
        self.full = np.zeros(V, dtype=np.int64)                         # (V,)
        for i in range(V):
            raw = tokenizer.decode_bytes([i])
            self.full[i] = len(raw)
            cut = raw[:window]                                          # truncate
            self.table[i, :len(cut)] = np.frombuffer(cut, dtype=np.uint8)
        self.kept = np.minimum(self.full, window)                       # (V,)
        self._device_tables = {}

    def __call__(self, ids):
        """Windows of token ids: (...) -> (..., W), on the device of ``ids``."""
        xp = backend.xp_of(ids)
        if xp.__name__ not in self._device_tables:     # one copy of the table per device
            self._device_tables[xp.__name__] = xp.asarray(self.table)
        return self._device_tables[xp.__name__][ids]

    def encode(self, text, eot: bool = False) -> np.ndarray:
        """Text -> token windows (N, W); ``eot`` appends an end-of-text window."""
        windows = self.table[self.tokenizer.encode(text)]
        end = np.array([[EOT] + [PAD] * (self.window - 1)], dtype=np.int64)
        return np.concatenate([windows, end]) if eot else windows

    @staticmethod
    def decode_bytes(windows) -> bytes:
        """Windows (N, W) -> bytes: drop the pads, stop at the first end of text."""
        flat = np.asarray(backend.asnumpy(windows), dtype=np.int64).reshape(-1)
        if (flat == EOT).any():
            flat = flat[:np.argmax(flat == EOT)]
        return flat[flat != PAD].astype(np.uint8).tobytes()

    def truncation_rate(self, ids) -> float:
        """The fraction of the tokens in ``ids`` longer than the window (0 if none)."""
        ids = np.asarray(ids)
        return float((self.full[ids] > self.window).mean()) if ids.size else 0.0

    def lost_byte_rate(self, ids) -> float:
        """The fraction of the text's bytes that the windows of ``ids`` cut off."""
        ids = np.asarray(ids)
        return float(1.0 - self.kept[ids].sum() / self.full[ids].sum()) if ids.size else 0.0
