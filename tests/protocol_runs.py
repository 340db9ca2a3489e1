"""Tiny runs for tests/test_protocol.py, importable by worker processes."""

import os
import time
from pathlib import Path

import numpy as np


def fit(settings, seed, device):
    """A few steps of gradient descent on a small least-squares problem (BLAS-bound),
    scored on a 'val' and a 'test' half. Appends a line to settings['log'] if given, so
    a test can count how often the run really executed."""
    if settings.get("log"):
        with open(settings["log"], "a") as f:
            f.write(f"{seed} {settings.get('lr')}\n")
    stop = settings.get("stop_at_seed_2_while")       # a file: "Ctrl-C" while it exists
    if stop and seed == 2 and os.path.exists(stop):
        raise KeyboardInterrupt("interrupted in the middle of the sweep")
    time.sleep(settings.get("sleep", 0))              # a long run, to be interrupted
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((256, 64))
    w_true = rng.standard_normal(64)
    y = X @ w_true + 0.1 * rng.standard_normal(256)
    w = np.zeros(64)
    for _ in range(settings.get("steps", 20)):
        g = X[:128].T @ (X[:128] @ w - y[:128]) / 128
        w -= settings["lr"] * g
    val = float(np.mean((X[128:192] @ w - y[128:192]) ** 2))
    test = float(np.mean((X[192:] @ w - y[192:]) ** 2))
    return {"val": {"mse": val}, "test": {"mse": test}, "pid": os.getpid(),
            "w": w}


def not_a_dict(settings, seed, device):
    return 3.0


def blas_threads(settings, seed, device):
    """How many threads BLAS may use inside a run; and a NaN figure, which the cache
    must keep as NaN."""
    from threadpoolctl import threadpool_info
    return {"val": {}, "test": {}, "nan": float("nan"),
            "blas_threads": max(i["num_threads"] for i in threadpool_info()
                                if i["user_api"] == "blas")}
