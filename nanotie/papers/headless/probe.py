"""A downstream probe standing in for GLUE: which help topic does a passage come from?

The paper fine-tunes its encoders on GLUE; here a LINEAR classifier is trained on
FROZEN features, so the score measures what pretraining put into the
representations and nothing else. The task is built from the prose corpus itself:
passages of ``window`` BPE tokens cut from eight of Python's help topics (pages that
do not copy text from one another), labelled with their topic. A passage's features
are the model's final normalised hidden states averaged over its positions.

The classifier is multinomial logistic regression, z = W f + b on standardised
features f, trained full-batch with AdamW on the cross-entropy (with weight decay as
the only regulariser); the score is the accuracy on held-out passages.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...nn import Linear
from ...nn import functional as F
from ...nn.optim import AdamW

__all__ = ["PROBE_TOPICS", "topic_passages", "pooled_features", "linear_probe",
           "effective_rank"]

# Eight help topics with no shared passages (checked with 80-byte shingles: pages
# such as "customization" or "try" are copied inside "specialnames" or "compound",
# and are left out for that reason).
PROBE_TOPICS = ("specialnames", "compound", "types", "formatstrings", "string-methods",
                "typesseq", "debugger", "typesmapping")


def topic_passages(tokenizer, window: int = 32, per_class: int = 96,
                   topics=PROBE_TOPICS, test_fraction: float = 0.5, seed: int = 0):
    """Labelled passages: non-overlapping windows of ``window`` token ids from each
    topic, up to ``per_class`` per topic (a random subset when there are more), split
    into train and test within each topic. Windows that occur more than once in the
    chosen topics are left out, so no passage is both a training and a test example.

    Returns ``(x_train, y_train, x_test, y_test)``: int64 arrays of shapes (N, window)
    and (N,)."""
    from pydoc_data.topics import topics as texts

    rng = np.random.default_rng(seed)
    windows = {}
    for name in topics:
        ids = tokenizer.encode(texts[name])
        n = len(ids) // window
        windows[name] = ids[:n * window].reshape(n, window)               # (n, window)
    # Help pages repeat some passages word for word (boilerplate, tables): a window
    # that occurs twice could land in train AND test, or in two topics. Drop them all.
    seen = Counter(row.tobytes() for w in windows.values() for row in w)
    splits = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(topics):
        unique = np.array([seen[row.tobytes()] == 1 for row in windows[name]], dtype=bool)
        rows = windows[name][unique]
        keep = rng.permutation(len(rows))[:per_class]
        n_test = max(1, int(round(len(keep) * test_fraction)))
        for part, pick in (("test", keep[:n_test]), ("train", keep[n_test:])):
            splits[part][0].append(rows[pick])
            splits[part][1].append(np.full(len(pick), label, dtype=np.int64))
    return tuple(np.concatenate(a) for part in ("train", "test") for a in splits[part])


def pooled_features(model, ids, batch_size: int = 64) -> np.ndarray:
    """Mean over positions of the final hidden states ln_f(x), through the GPT hooks (a
    GPT, a HeadlessGPT and a MaskedLM alike): (N, T) ids -> (N, d) float64."""
    device = model.wte.weight.device
    out = []
    with model.evaluating():
        for b in range(0, len(ids), batch_size):
            idx = Tensor(backend.to_device(np.asarray(ids[b:b + batch_size]), device))
            x = model.embed(idx)
            for i in range(model.config.n_layer):
                x = model.block(i, x)
            out.append(backend.asnumpy(model.ln_f(x).data).mean(axis=1))   # (B, T, d) -> (B, d)
    return np.concatenate(out).astype(np.float64)


def linear_probe(f_train, y_train, f_test, y_test, steps: int = 300, lr: float = 0.05,
                 weight_decay: float = 0.01, seed: int = 0) -> dict:
    """Fit a linear softmax classifier on frozen features; return train and test
    accuracy. Features are standardised with the TRAINING set's mean and std."""
    mu, sd = f_train.mean(axis=0), f_train.std(axis=0) + 1e-8
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    n_class = int(max(y_train.max(), y_test.max())) + 1
    backend.manual_seed(seed)
    clf = Linear(f_train.shape[1], n_class).to(np.float64)
    opt = AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    x = Tensor(f_train)
    for _ in range(steps):
        loss = F.cross_entropy(clf(x), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with no_grad():
        acc_train = float((clf(x).data.argmax(axis=1) == y_train).mean())
        acc_test = float((clf(Tensor(f_test)).data.argmax(axis=1) == y_test).mean())
    return {"train_accuracy": acc_train, "test_accuracy": acc_test}


def effective_rank(features) -> float:
    """exp(entropy) of the centred features' normalised squared singular values:
    about r when the variance is spread evenly over r directions, 1 when one
    direction holds it all (a "collapsed", anisotropic representation)."""
    f = np.asarray(features, dtype=np.float64)
    s = np.linalg.svd(f - f.mean(axis=0), compute_uv=False)
    p = s ** 2 / np.sum(s ** 2)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
