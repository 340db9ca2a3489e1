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

PyTorch runs in the same process, on the same float32 data, with as many threads as
NumPy's BLAS uses (``_timing.blas_threads``; ``--threads N`` sets both, and nanotie's
scipy.fft workers). Before timing, each case checks that both libraries computed the
same output and gradients (a mismatch is flagged and makes the exit status 1).

The last table measures the engine's per-op Python overhead: a chain of tiny
(4, 4) ``mul`` and ``add`` ops, forward and backward, against raw NumPy doing the
same arithmetic by hand (forward and the chain rule, with no graph) and against
PyTorch's autograd.

Times are medians over interleaved repeats (``benchmarks/_timing.py``), each timed
block after a pause (``--settle``) so that the idle threads of the library timed just
before have stopped spinning. Trust the ratio columns (nanotie / torch: below 1 means
nanotie is faster) more than the milliseconds; expect them to move by 10-20%.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
from _timing import (blas_threads, compare, import_torch, machine, markdown_table,  # noqa: E402,I001
                     match_torch_threads, parser, timer_options, write_json)

import nanotie as nt  # noqa: E402
from nanotie.nn import functional as F  # noqa: E402

OPS = ("matmul", "cross_entropy", "layer_norm", "fftconv")


# ------------------------------------------------------------------------ cases

DEVICE = "cpu"   # set by --device; "cuda" runs nanotie on CuPy against torch on CUDA


@dataclass
class Case:
    """One row of the table: ``arrays(rng)`` draws the inputs (float32 ones become
    leaves that require a gradient, integer ones stay data); ``ours(*inputs)`` and
    ``theirs(torch, *inputs)`` compute the op. With ``upstream`` the backward starts
    from a random gradient shaped like the output, else from the scalar output."""

    op: str
    size: str
    arrays: object
    ours: object
    theirs: object
    upstream: bool = True

    def build(self, rng, torch):
        """The two step functions and a ``check()`` that compares their results."""
        mine, yours = zip(*(_on_device(a, torch) for a in self.arrays(rng)))
        mine = [nt.Tensor(a.copy(), requires_grad=a.dtype.kind == "f") for a in mine]
        yours = [t.requires_grad_() if t.is_floating_point() else t for t in yours]
        g = tg = None
        if self.upstream:
            shape = self.ours(*mine).shape
            g, tg = _on_device(rng.standard_normal(shape, dtype=np.float32), torch)
        leaves = [t for t in mine if t.requires_grad]
        tleaves = [t for t in yours if t.requires_grad]
        step_ours = _step(lambda: self.ours(*mine), leaves, g, torch)
        step_theirs = _step(lambda: self.theirs(torch, *yours), tleaves, tg, torch)
        return step_ours, step_theirs, _checker(leaves, tleaves, step_ours, step_theirs)


def _on_device(a, torch):
    """The same array for both libraries, on DEVICE."""
    return nt.backend.to_device(a, DEVICE), torch.from_numpy(a.copy()).to(DEVICE)


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


def _randn(rng, *shape, scale=1.0, shift=0.0):
    return rng.standard_normal(shape, dtype=np.float32) * scale + shift


def _torch_fftconv(torch, u, h):
    """The same causal FFT convolution as nanotie's ``F.fftconv``, in PyTorch."""
    length = u.shape[-1]
    n = 1 << (2 * length - 2).bit_length()   # next power of two >= 2L - 1
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(h, n=n), n=n)
    return y[..., :length]


def _matmul(a_shape, b_shape):
    return Case("matmul", "x".join(map(str, a_shape)) + " @ " + "x".join(map(str, b_shape)),
                lambda rng: [_randn(rng, *a_shape), _randn(rng, *b_shape)],
                lambda a, b: a @ b, lambda torch, a, b: a @ b)


def _cross_entropy(n, v):
    # The functions are bound here, not looked up inside the timed step.
    return Case("cross_entropy", f"N={n} V={v}",
                lambda rng: [_randn(rng, n, v, scale=3), rng.integers(0, v, size=n)],
                F.cross_entropy, lambda torch, z, y: torch.nn.functional.cross_entropy(z, y),
                upstream=False)


def _layer_norm(rows, width):
    return Case("layer_norm", f"({rows}, {width})",
                lambda rng: [_randn(rng, rows, width, scale=2, shift=0.5),
                             _randn(rng, width, scale=0.1, shift=1.0),
                             _randn(rng, width, scale=0.1)],
                lambda x, w, b, ln=F.layer_norm: ln(x, (width,), w, b),
                lambda torch, x, w, b: torch.nn.functional.layer_norm(x, (width,), w, b))


def _fftconv(batch, channels, length):
    return Case("fftconv", f"B={batch} D={channels} L={length}",
                lambda rng: [_randn(rng, batch, channels, length),
                             _randn(rng, channels, length, scale=1 / length)],
                F.fftconv, _torch_fftconv)


def cases() -> list:
    return [_matmul((256, 256), (256, 256)), _matmul((1024, 1024), (1024, 1024)),
            _matmul((16, 128, 128), (128, 512)),
            _cross_entropy(2048, 256), _cross_entropy(4096, 4096),
            _layer_norm(16 * 128, 128), _layer_norm(8 * 512, 1024),
            _fftconv(8, 64, 256), _fftconv(4, 256, 2048)]


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
    p = parser(__doc__, dict(repeats=(9, 3), warmup=(3, 1), min_time=(0.1, 0.02),
                             settle=(0.2, 0.05)),
               device="cuda: nanotie on CuPy against PyTorch on CUDA (no overhead table; "
                      "threads do not apply)")
    p.add_argument("--ops", default=",".join(OPS),
                   help=f"comma-separated subset of {', '.join(OPS)}, or 'none' "
                        "(default: all)")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the per-op overhead measurement")
    args = p.parse_args(argv)

    global DEVICE
    DEVICE = args.device
    torch = import_torch("bench_ops.py")
    if DEVICE == "cuda":
        if not nt.cuda_available() or not torch.cuda.is_available():
            p.error("--device cuda needs CuPy and a CUDA build of PyTorch on a machine "
                    "with a GPU")
        args.no_overhead = True
    wanted = [] if args.ops == "none" else [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = sorted(set(wanted) - set(OPS))
    if unknown:
        p.error(f"unknown op(s) {unknown}; choose from {list(OPS)}")

    threads, how = blas_threads(limit=args.threads)
    torch_threads = match_torch_threads(torch, threads)
    if args.threads is not None:
        nt.backend._FFT_WORKERS = args.threads   # nanotie's CPU FFTs, to match
    timer = timer_options(args)
    meta = machine()
    print(f"nanotie {meta['nanotie']} (NumPy {meta['numpy']}) vs PyTorch {torch.__version__}, "
          f"float32, Python {meta['python']}, device {DEVICE}")
    print(f"threads: {threads} for NumPy's BLAS ({how}), torch.get_num_threads() = "
          f"{torch_threads}, scipy.fft workers = {nt.backend._FFT_WORKERS}")
    print(f"timer: median of {timer['repeats']} interleaved repeats, each >= "
          f"{timer['min_time']} s, after a {timer['settle']} s pause\n")

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
        print(markdown_table(["contender", "what", "us per op", "nanotie / this"], [
            ("nanotie", "Tensor ops, engine backward", f"{us['nanotie']:.2f}", "1.00"),
            ("numpy", "same arithmetic by hand, no graph", f"{us['numpy']:.2f}",
             f"{overhead['ratio_vs_numpy']:.2f}"),
            ("torch", "autograd", f"{us['torch']:.2f}", f"{overhead['ratio_vs_torch']:.2f}"),
        ], text_columns=2))
        print(f"nanotie/numpy = {overhead['ratio_vs_numpy']:.1f}x, "
              f"nanotie/torch = {overhead['ratio_vs_torch']:.2f}x")

    if args.json:
        meta.update(torch=torch.__version__, threads=threads, threads_how=how,
                    torch_threads=torch_threads, dtype="float32", device=DEVICE,
                    quick=args.quick, timer=timer,
                    statistic="median per-iteration time over interleaved repeats")
        write_json(args.json, dict(meta=meta, results=results, overhead=overhead))
    return 1 if any(r["check"] != "ok" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
