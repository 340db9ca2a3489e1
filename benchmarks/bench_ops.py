"""How fast are nanotie's heavy ops, next to PyTorch on the same CPU?

Run it from the repository root (PyTorch must be installed; it is the yardstick):

    python benchmarks/bench_ops.py             # the full run, a few minutes
    python benchmarks/bench_ops.py --quick     # a short run, well under a minute
    python benchmarks/bench_ops.py --ops matmul,fftconv --json out.json

What is timed: ONE training-style step of each op, forward and backward, starting
from float32 leaves that require gradients and ending with their ``.grad`` filled
(the leaves' gradients are reset to None before each step, as ``zero_grad`` does):

* ``matmul``         A @ B, with a random upstream gradient; the batched case is a
                     (16, 128, 128) activation times a shared (128, 512) weight
* ``cross_entropy``  ``F.cross_entropy`` of (N, V) logits against integer targets
* ``layer_norm``     ``F.layer_norm`` over the last axis with weight and bias
* ``fftconv``        causal convolution of u (B, D, L) with h (D, L) by FFT;
                     PyTorch does the same with ``torch.fft.rfft``/``irfft`` and the
                     same padding n = next power of two >= 2L - 1, inside autograd

PyTorch runs in the same process, on the same float32 data, with as many threads
as NumPy's BLAS uses (found by threadpoolctl when it is installed, otherwise from
``$OPENBLAS_NUM_THREADS`` / ``$MKL_NUM_THREADS`` / ``$OMP_NUM_THREADS``, otherwise
the number of cores this process may use; ``--threads N`` overrides it, and is
applied to NumPy's BLAS too when threadpoolctl can do so). nanotie's CPU FFTs run on
scipy.fft with the thread count that ``nanotie.backend`` derives the same way; the
header line prints it. Before timing, each case checks that both libraries computed
the same output and gradients (a mismatch is flagged in the table and makes the exit
status 1).

The last table measures the engine's per-op Python overhead: a chain of tiny
(4, 4) ``mul`` and ``add`` ops, forward and backward, against raw NumPy doing the
same arithmetic by hand (forward and the chain rule, with no graph) and against
PyTorch's autograd.

Reading the output: times are the MEDIAN per-iteration time over interleaved
repeats (see ``benchmarks/_timing.py``); before each timed block the timer pauses
(``--settle``) so that the idle threads of the library timed just before have
stopped spinning, which on a 2-core machine would otherwise bill one library for
the other's threads. The machine may be shared and noisy, so trust the ratio
columns (nanotie / torch: below 1 means nanotie is faster), which compare runs made
side by side, more than the absolute milliseconds, and expect ratios to move by
10-20% from run to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # nanotie from a checkout

import nanotie as nt  # noqa: E402
from nanotie.nn import functional as F  # noqa: E402

from _timing import blas_threads, compare, markdown_table, match_torch_threads  # noqa: E402

OPS = ("matmul", "cross_entropy", "layer_norm", "fftconv")


def _import_torch():
    try:
        import torch
    except ImportError:
        print("bench_ops.py compares nanotie with PyTorch, which is not installed.\n"
              "Install the CPU build, e.g. `pip install -e .[torch]`, and run it again.",
              file=sys.stderr)
        sys.exit(2)
    return torch


# ------------------------------------------------------------------------ cases


@dataclass
class Case:
    """One row of the table: ``build(rng, torch)`` returns the two step functions
    and a ``check()`` that compares their results."""

    op: str
    size: str
    build: object


DEVICE = "cpu"   # set by --device; "cuda" runs nanotie on CuPy against torch on CUDA


def _on_device(a, torch):
    """The same float32 array for both libraries, on DEVICE."""
    return nt.backend.to_device(a, DEVICE), torch.from_numpy(a.copy()).to(DEVICE)


def _leaves(arrays, torch):
    """The same float32 values as nanotie leaves and as torch leaves."""
    pairs = [_on_device(a, torch) for a in arrays]
    ours = [nt.Tensor(mine.copy(), requires_grad=True) for mine, _ in pairs]
    theirs = [t.requires_grad_() for _, t in pairs]
    return ours, theirs


def _sync(torch):
    """GPU work is asynchronous: wait for it so the timer measures it."""
    if DEVICE == "cuda":
        nt.backend.synchronize("cuda")
        torch.cuda.synchronize()


def _step(loss_fn, leaves, grad=None, torch=None):
    """A step function: reset the leaves' gradients, forward, backward."""
    def step():
        for t in leaves:
            t.grad = None
        out = loss_fn()
        out.backward(grad)
        if torch is not None:
            _sync(torch)
        return out
    return step


def _checker(ours, theirs, step_ours, step_theirs, rtol=2e-3):
    """Compare the outputs and every leaf gradient, relative to each array's size."""
    def check():
        pairs = [(step_ours().numpy(), step_theirs().detach().cpu().numpy())]
        pairs += [(nt.backend.asnumpy(a.grad), b.grad.cpu().numpy())
                  for a, b in zip(ours, theirs)]
        for i, (x, y) in enumerate(pairs):
            scale = max(float(np.abs(y).max()), 1e-6)
            err = float(np.abs(np.asarray(x) - y).max()) / scale
            if not err < rtol:
                what = "output" if i == 0 else f"gradient of input {i - 1}"
                return f"MISMATCH in {what}: max relative error {err:.2e}"
        return "ok"
    return check


def _matmul_case(a_shape, b_shape):
    def build(rng, torch):
        arrays = [rng.standard_normal(s, dtype=np.float32) for s in (a_shape, b_shape)]
        g = rng.standard_normal(np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
                                + (a_shape[-2], b_shape[-1]), dtype=np.float32)
        (a, b), (ta, tb) = _leaves(arrays, torch)
        g, tg = _on_device(g, torch)
        ours = _step(lambda: a @ b, (a, b), g, torch)
        theirs = _step(lambda: ta @ tb, (ta, tb), tg, torch)
        return ours, theirs, _checker((a, b), (ta, tb), ours, theirs)
    size = "x".join(map(str, a_shape)) + " @ " + "x".join(map(str, b_shape))
    return Case("matmul", size, build)


def _cross_entropy_case(n, v):
    def build(rng, torch):
        z = rng.standard_normal((n, v), dtype=np.float32) * 3
        y = rng.integers(0, v, size=n)
        (a,), (ta,) = _leaves([z], torch)
        y_ours, y_theirs = _on_device(y, torch)
        y_ours = nt.Tensor(y_ours)
        cross_entropy = F.cross_entropy   # looked up once, outside the timed step
        ours = _step(lambda: cross_entropy(a, y_ours), (a,), None, torch)
        theirs = _step(lambda: torch.nn.functional.cross_entropy(ta, y_theirs), (ta,), None,
                       torch)
        return ours, theirs, _checker((a,), (ta,), ours, theirs)
    return Case("cross_entropy", f"N={n} V={v}", build)


def _layer_norm_case(rows, width):
    def build(rng, torch):
        arrays = [rng.standard_normal((rows, width), dtype=np.float32) * 2 + 0.5,
                  1 + 0.1 * rng.standard_normal(width, dtype=np.float32),
                  0.1 * rng.standard_normal(width, dtype=np.float32)]
        g = rng.standard_normal((rows, width), dtype=np.float32)
        (x, w, b), (tx, tw, tb) = _leaves(arrays, torch)
        g, tg = _on_device(g, torch)
        layer_norm = F.layer_norm
        ours = _step(lambda: layer_norm(x, (width,), w, b), (x, w, b), g, torch)
        theirs = _step(lambda: torch.nn.functional.layer_norm(tx, (width,), tw, tb),
                       (tx, tw, tb), tg, torch)
        return ours, theirs, _checker((x, w, b), (tx, tw, tb), ours, theirs)
    return Case("layer_norm", f"({rows}, {width})", build)


def _torch_fftconv(torch, u, h):
    """The same causal FFT convolution as nanotie's ``F.fftconv``, in PyTorch."""
    length = u.shape[-1]
    n = 1 << (2 * length - 2).bit_length()   # next power of two >= 2L - 1
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(h, n=n), n=n)
    return y[..., :length]


def _fftconv_case(batch, channels, length):
    def build(rng, torch):
        arrays = [rng.standard_normal((batch, channels, length), dtype=np.float32),
                  rng.standard_normal((channels, length), dtype=np.float32) / length]
        g = rng.standard_normal((batch, channels, length), dtype=np.float32)
        (u, h), (tu, th) = _leaves(arrays, torch)
        g, tg = _on_device(g, torch)
        fftconv = F.fftconv
        ours = _step(lambda: fftconv(u, h), (u, h), g, torch)
        theirs = _step(lambda: _torch_fftconv(torch, tu, th), (tu, th), tg, torch)
        return ours, theirs, _checker((u, h), (tu, th), ours, theirs)
    return Case("fftconv", f"B={batch} D={channels} L={length}", build)


def cases() -> list:
    return [
        _matmul_case((256, 256), (256, 256)),
        _matmul_case((1024, 1024), (1024, 1024)),
        _matmul_case((16, 128, 128), (128, 512)),
        _cross_entropy_case(2048, 256),
        _cross_entropy_case(4096, 4096),
        _layer_norm_case(16 * 128, 128),
        _layer_norm_case(8 * 512, 1024),
        _fftconv_case(8, 64, 256),
        _fftconv_case(4, 256, 2048),
    ]


# ---------------------------------------------------------------- per-op overhead


def overhead_steps(torch, n_pairs: int = 8, shape=(4, 4)):
    """Step functions for a chain of ``n_pairs`` (mul, add) pairs on tiny arrays:

        x_0 = a,  x_{k+1} = x_k * b + a,  loss gradient g at the end

    so 2 * n_pairs ops, each with a gradient for both inputs. Returns
    ``(n_ops, {"nanotie": fn, "numpy": fn, "torch": fn})``.
    """
    rng = np.random.default_rng(0)
    A, B, G = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    a, b = nt.Tensor(A.copy(), requires_grad=True), nt.Tensor(B.copy(), requires_grad=True)
    ta, tb = (torch.from_numpy(v.copy()).requires_grad_() for v in (A, B))
    tg = torch.from_numpy(G)

    def chain(a, b, grad):
        """The same code for both libraries: their tensors share these names."""
        a.grad = b.grad = None
        x = a
        for _ in range(n_pairs):
            x = x * b + a
        x.backward(grad)

    def ours():
        chain(a, b, G)

    def theirs():
        chain(ta, tb, tg)

    def by_hand():
        # The same arithmetic with no graph: keep the inputs of each mul for the
        # backward, then apply the chain rule from the end.
        xs = []
        x = A
        for _ in range(n_pairs):
            xs.append(x)
            x = x * B + A
        ga, gb, g = np.zeros_like(A), np.zeros_like(B), G
        for x in reversed(xs):       # d(x*B + A): dA += g, dB += g*x, dx = g*B
            ga = ga + g
            gb = gb + g * x
            g = g * B
        ga = ga + g                  # x_0 = a
        return ga, gb

    return 2 * n_pairs, {"nanotie": ours, "numpy": by_hand, "torch": theirs}


# --------------------------------------------------------------------- reporting


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter repeats (a smoke run; noisier ratios)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--ops", default=",".join(OPS),
                        help=f"comma-separated subset of {', '.join(OPS)}, or 'none' "
                             "(default: all)")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the per-op overhead measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="thread count for both libraries (default: NumPy's BLAS's)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per case (default 9, or 3 with --quick)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds to pause before each timed block so that the other "
                             "library's worker threads stop spinning (default 0.2, or 0.05 "
                             "with --quick; 0 turns it off)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: nanotie on CuPy against PyTorch on CUDA (no overhead "
                             "table; threads do not apply)")
    args = parser.parse_args(argv)

    global DEVICE
    DEVICE = args.device
    torch = _import_torch()
    if DEVICE == "cuda":
        if not nt.cuda_available() or not torch.cuda.is_available():
            print("--device cuda needs CuPy and a CUDA build of PyTorch on a machine with "
                  "a GPU", file=sys.stderr)
            return 2
        args.no_overhead = True
    wanted = [] if args.ops == "none" else [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = sorted(set(wanted) - set(OPS))
    if unknown:
        parser.error(f"unknown op(s) {unknown}; choose from {list(OPS)}")

    threads, how = blas_threads(limit=args.threads)
    if args.threads is not None and not how.startswith("threadpoolctl"):
        how = "--threads (NumPy's BLAS left as configured: threadpoolctl is not installed)"
        threads = args.threads
    torch_threads = match_torch_threads(torch, threads)
    if args.threads is not None and hasattr(nt.backend, "_FFT_WORKERS"):
        nt.backend._FFT_WORKERS = args.threads   # nanotie's CPU FFTs, to match
    repeats = args.repeats or (3 if args.quick else 9)
    settle = args.settle if args.settle is not None else (0.05 if args.quick else 0.2)
    timer = dict(repeats=repeats, warmup=1 if args.quick else 3,
                 min_time=0.02 if args.quick else 0.1, settle=settle)

    print(f"nanotie {nt.__version__} (NumPy {np.__version__}) vs PyTorch {torch.__version__}, "
          f"float32, Python {platform.python_version()}, device {DEVICE}")
    print(f"threads: {threads} for NumPy's BLAS ({how}), torch.get_num_threads() = "
          f"{torch_threads}, scipy.fft workers = {getattr(nt.backend, '_FFT_WORKERS', '?')}")
    print(f"timer: median of {repeats} interleaved repeats, each >= {timer['min_time']} s, "
          f"after a {settle} s pause\n")

    rng = np.random.default_rng(0)
    results = []
    for case in cases():
        if case.op not in wanted:
            continue
        ours, theirs, check = case.build(rng, torch)
        verdict = check()
        t = compare({"nanotie": ours, "torch": theirs}, **timer)
        row = dict(op=case.op, size=case.size, check=verdict,
                   nanotie_ms=t["nanotie"]["median"] * 1e3, torch_ms=t["torch"]["median"] * 1e3,
                   nanotie_min_ms=t["nanotie"]["min"] * 1e3, torch_min_ms=t["torch"]["min"] * 1e3)
        row["ratio"] = row["nanotie_ms"] / row["torch_ms"]
        results.append(row)
        print(f"  {case.op:14s} {case.size:28s} ratio {row['ratio']:5.2f}  ({verdict})",
              file=sys.stderr, flush=True)

    if results:
        print(markdown_table(["op", "size", "nanotie ms", "torch ms", "ratio nanotie/torch"],
                             [(r["op"], r["size"], f"{r['nanotie_ms']:.3f}",
                               f"{r['torch_ms']:.3f}",
                               f"{r['ratio']:.2f}" + ("" if r["check"] == "ok" else " (!)"))
                              for r in results], text_columns=2))
        bad = [r for r in results if r["check"] != "ok"]
        for r in bad:
            print(f"(!) {r['op']} {r['size']}: {r['check']}")

    overhead = None
    if not args.no_overhead:
        n_ops, steps = overhead_steps(torch)
        t = compare(steps, **timer)
        us = {k: v["median"] * 1e6 / n_ops for k, v in t.items()}
        overhead = dict(n_ops=n_ops, shape=[4, 4], us_per_op=us,
                        ratio_vs_numpy=us["nanotie"] / us["numpy"],
                        ratio_vs_torch=us["nanotie"] / us["torch"])
        print(f"\nPer-op overhead: a chain of {n_ops} tiny (4, 4) mul/add ops, forward + "
              "backward, time per op")
        print(markdown_table(["contender", "what", "us per op", "ratio to nanotie"], [
            ("nanotie", "Tensor ops, engine backward", f"{us['nanotie']:.2f}", "1.00"),
            ("numpy", "same arithmetic by hand, no graph", f"{us['numpy']:.2f}",
             f"{us['numpy'] / us['nanotie']:.2f}"),
            ("torch", "autograd", f"{us['torch']:.2f}", f"{us['torch'] / us['nanotie']:.2f}"),
        ], text_columns=2))
        print(f"nanotie/numpy = {overhead['ratio_vs_numpy']:.1f}x, "
              f"nanotie/torch = {overhead['ratio_vs_torch']:.2f}x")

    if args.json:
        report = dict(
            meta=dict(nanotie=nt.__version__, numpy=np.__version__, torch=torch.__version__,
                      python=platform.python_version(), machine=platform.machine(),
                      threads=threads, threads_how=how, torch_threads=torch_threads,
                      dtype="float32", device=DEVICE, quick=args.quick, timer=timer,
                      statistic="median per-iteration time over interleaved repeats"),
            results=results, overhead=overhead)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any(r["check"] != "ok" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
