"""How long does one training step of nanotie's GPT take, next to PyTorch on the same CPU?

Run it from the repository root (PyTorch must be installed; it is the yardstick):

    python benchmarks/bench_train_step.py              # the full run, 1-2 minutes
    python benchmarks/bench_train_step.py --quick      # a short smoke run
    python benchmarks/bench_train_step.py --profile    # ... and where nanotie's time goes
    python benchmarks/bench_train_step.py --threads 1 --profile --profile-clock cpu
                                                       # the same on a busy machine
    python benchmarks/bench_train_step.py --threads 1 --json out.json

What is timed: ONE training step of a small GPT, of the papers' miniature
reproductions' scale (none of them uses exactly this shape),

    GPT(GPTConfig(vocab_size=256, context=128, d_model=128, n_layer=4, n_head=4,
                  dropout=0.0, tie_embeddings=True)),  float32, batch 16 x 128 tokens

that is: forward, mean cross-entropy, backward, an AdamW step (lr 3e-4, weight decay
0.1 on matrices only, via ``nanotie.nn.optim.param_groups``) and ``zero_grad``.

The yardstick is the SAME architecture written in PyTorch, in the same process, on
the same float32 weights and batch: learned positions, pre-LN blocks with LayerNorm
(with bias), one fused qkv Linear d -> 3d, a 4d MLP with GELU(approximate="tanh"), the
head tied to the token embedding (``lm_head.weight = wte.weight``) and
``torch.optim.AdamW`` (its default CPU implementation) with the same two groups.
Two PyTorch attentions are timed:

* ``torch``       (the headline) explicit attention doing nanotie's math:
                  softmax((q / sqrt(hd)) @ k^T + mask) @ v with an additive causal mask
* ``torch-sdpa``  ``F.scaled_dot_product_attention(q, k, v, is_causal=True)``, the
                  fused kernel a PyTorch user would reach for

and one more nanotie:

* ``nanotie-switch`` nanotie with its CPU speed switch on (``backend.set_cpu_threads(N)``
                  for N threads, or ``NANOTIE_THREADS=N`` for a whole process; off by
                  default): ``backend.parallel_rows`` splits large passes over a thread
                  pool. It helps on a busy machine and not on an idle one; timed
                  only with more than one thread. ``--no-switch`` skips it.

Before timing, one step of each model from identical weights is compared: the loss,
every gradient and every weight after the AdamW step must agree (a mismatch is
printed and makes the exit status 1), and every nanotie array must still be float32.

Threads: PyTorch gets as many as NumPy's BLAS uses; ``--threads N`` sets both (before
NumPy loads, by ``$OPENBLAS_NUM_THREADS``). Memory: like nanotie's training loop, the
script asks glibc to keep freed memory for reuse (``backend.keep_freed_memory``), which
PyTorch then runs under too; ``NANOTIE_KEEP_FREED_MEMORY=0`` turns it off for both.

Times are medians over interleaved repeats (``benchmarks/_timing.py``); nanotie / torch
below 1 means nanotie is faster. On a busy machine the wall clock of a multi-threaded
step measures the neighbours more than the step, so each row also has the median CPU
time (user + sys of all threads: no waiting for a core, but spinning counts).

``--profile`` then runs a few nanotie steps under cProfile and prints the functions
with the most own time and the most cumulative time, and the time per primitive op,
forward and backward, next to the engine's and the optimizer's share. cProfile adds
a cost to every Python call, so read the shares, not the absolute times.

"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _preset_threads(argv) -> None:
    """Apply ``--threads N`` to NumPy's BLAS by the environment, before NumPy loads."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            os.environ["OPENBLAS_NUM_THREADS"] = value
            os.environ["MKL_NUM_THREADS"] = value


if __name__ == "__main__":
    _preset_threads(sys.argv[1:])

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))        # for _timing
from _timing import (at_least, blas_threads, compare, import_torch, machine,  # noqa: E402,I001
                     match_torch_threads, parser, timer_options, write_json)

import nanotie as nt  # noqa: E402
from nanotie import nn  # noqa: E402

CONFIG = dict(vocab_size=256, context=128, d_model=128, n_layer=4, n_head=4, dropout=0.0,
              tie_embeddings=True)
BATCH, LR, WEIGHT_DECAY = 16, 3e-4, 0.1


# ---------------------------------------------------------------- the two models


def nanotie_setup(device: str, seed: int = 0):
    """The nanotie GPT, its AdamW, and one fixed batch of token ids and targets."""
    nt.manual_seed(seed)
    model = nn.GPT(nn.GPTConfig(**CONFIG)).to(device)
    opt = nn.optim.AdamW(nn.optim.param_groups(model, WEIGHT_DECAY), lr=LR)
    rng = np.random.default_rng(seed)
    T, V = CONFIG["context"], CONFIG["vocab_size"]
    idx = rng.integers(0, V, size=(BATCH, T))
    targets = rng.integers(0, V, size=(BATCH, T))
    return model, opt, idx, targets


def nanotie_step_fn(model, opt, idx, targets, device: str):
    """forward, loss, backward, AdamW step, zero_grad: one training step."""
    idx = nt.tensor(nt.backend.to_device(idx, device))
    targets = nt.tensor(nt.backend.to_device(targets, device))

    def step():
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            nt.backend.synchronize("cuda")
        return loss

    return step


def with_switch(step, threads: int):
    """``step`` with nanotie's CPU speed switch on at ``threads`` threads
    (``backend.set_cpu_threads``; off by default). The same process and weights, so the
    switch's gain or loss is measured side by side with the rest."""
    def switched_step():
        nt.backend.set_cpu_threads(threads)
        try:
            return step()
        finally:
            nt.backend.set_cpu_threads(None)

    return switched_step


def torch_gpt(torch, sdpa: bool):
    """The same GPT in PyTorch; parameter names match nanotie's one for one."""
    tnn, F = torch.nn, torch.nn.functional
    d, H, V, T = CONFIG["d_model"], CONFIG["n_head"], CONFIG["vocab_size"], CONFIG["context"]

    class Attention(tnn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = tnn.Linear(d, 3 * d)
            self.proj = tnn.Linear(d, d)
            mask = torch.full((T, T), float("-inf")).triu(1)   # additive, as nanotie's
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):
            B, T, C = x.shape
            hd = C // H
            q, k, v = self.qkv(x).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
            if sdpa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                scores = (q * (1.0 / hd ** 0.5)) @ k.transpose(-2, -1)        # (B, H, T, T)
                y = torch.softmax(scores + self.mask[:T, :T], dim=-1) @ v
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class MLP(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc = tnn.Linear(d, 4 * d)
            self.proj = tnn.Linear(4 * d, d)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x), approximate="tanh"))

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = tnn.LayerNorm(d), Attention()
            self.ln2, self.mlp = tnn.LayerNorm(d), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(V, d), tnn.Embedding(T, d)
            self.blocks = tnn.ModuleList(Block() for _ in range(CONFIG["n_layer"]))
            self.ln_f = tnn.LayerNorm(d)
            self.lm_head = tnn.Linear(d, V, bias=False)
            self.lm_head.weight = self.wte.weight                   # the tie

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.blocks:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return logits, F.cross_entropy(logits.view(-1, V), targets.view(-1))

    return GPT()


def torch_setup(torch, ours, idx, targets, device: str, sdpa: bool):
    """A PyTorch twin of nanotie's ``ours`` (same weights), its AdamW, and the batch."""
    model = torch_gpt(torch, sdpa)
    theirs = dict(model.named_parameters())
    mine = dict(ours.named_parameters())
    if set(theirs) != set(mine):
        raise RuntimeError(f"parameter names differ: {sorted(set(theirs) ^ set(mine))}")
    with torch.no_grad():
        for name, p in theirs.items():
            p.copy_(torch.from_numpy(np.array(mine[name].numpy())))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR)
    return model, opt, torch.from_numpy(idx).to(device), torch.from_numpy(targets).to(device)


def torch_step_fn(torch, model, opt, idx, targets, device: str):
    def step():
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


# ---------------------------------------------------------------------- checks


def _max_rel_err(x, y) -> float:
    scale = max(float(np.abs(y).max()), 1e-6)
    return float(np.abs(np.asarray(x, np.float64) - y).max()) / scale


def check_one_step(torch, device: str, sdpa: bool, rtol: float = 2e-3) -> str:
    """From identical weights: same loss, same gradients, same weights after AdamW,
    and nanotie's arrays all still float32."""
    model, opt, idx, targets = nanotie_setup(device)
    tmodel, topt, tidx, ttargets = torch_setup(torch, model, idx, targets, device, sdpa)
    ti, tt = nt.tensor(nt.backend.to_device(idx, device)), nt.tensor(
        nt.backend.to_device(targets, device))
    logits, loss = model(ti, tt)
    loss.backward()
    _, tloss = tmodel(tidx, ttargets)
    tloss.backward()
    problems = []
    if abs(loss.item() - tloss.item()) > 1e-4 * abs(tloss.item()):
        problems.append(f"loss {loss.item():.6f} != {tloss.item():.6f}")
    theirs = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        err = _max_rel_err(nt.backend.asnumpy(p.grad), theirs[name].grad.cpu().numpy())
        if not err < rtol:
            problems.append(f"gradient of {name}: max relative error {err:.1e}")
    opt.step()
    topt.step()
    for name, p in model.named_parameters():
        err = _max_rel_err(p.numpy(), theirs[name].detach().cpu().numpy())
        if not err < rtol:
            problems.append(f"{name} after AdamW: max relative error {err:.1e}")
    arrays = [("loss", loss.data), ("logits", logits.data)]
    arrays += [(f"{n}.grad", p.grad) for n, p in model.named_parameters()]
    arrays += [(f"{n}.data", p.data) for n, p in model.named_parameters()]
    for state in opt.state.values():
        arrays += [("AdamW state", state["m"]), ("AdamW state", state["v"])]
    upcast = sorted({name for name, a in arrays if a.dtype != np.float32})
    if upcast:
        problems.append(f"not float32: {', '.join(upcast)}")
    return "ok" if not problems else "MISMATCH: " + "; ".join(problems)


# --------------------------------------------------------------------- profile


def _primitive_code_table() -> dict:
    """pstats key (file, line, name) -> (op, "forward" | "backward").

    A primitive is a function of ``nanotie.ops`` or ``nanotie.nn.functional`` that
    calls ``make_result``; its backward is the closure (``def backward`` or a
    ``lambda g: ...``) defined inside it. Primitives do not call one another, so
    their cumulative times do not overlap."""
    import inspect

    from nanotie.nn import functional
    from nanotie.ops import elementwise, indexing, linalg, movement, reduction

    table = {}

    def key(code):
        return (code.co_filename, code.co_firstlineno, code.co_name)

    def nested(code):
        for c in code.co_consts:
            if inspect.iscode(c):
                yield c
                yield from nested(c)

    for module in (elementwise, indexing, linalg, movement, reduction, functional):
        for name, fn in vars(module).items():
            if not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            code = fn.__code__
            if "make_result" not in code.co_names:
                continue
            # ops made by one factory share its code object
            op = {"select": "maximum/minimum", "_extreme": "amax/amin"}.get(code.co_name, name)
            table[key(code)] = (op, "forward")
            for inner in nested(code):
                if inner.co_name == "backward" or (
                        inner.co_name == "<lambda>" and inner.co_varnames[:1] == ("g",)):
                    table[key(inner)] = (op, "backward")
    return table


def matmul_floor(repeats: int = 5, timer=time.perf_counter) -> float:
    """Seconds for the matrix products of one step alone, in raw NumPy on the CPU.

    The same products as nanotie's step makes, with the same shapes and memory layouts:
    per Linear, x W^T forward and G W, G^T x backward (rows flattened to N = B T); per
    attention layer, q k^T and P v forward and P^T G, G v^T, dS k, dS^T q backward, batched
    over (B, H). Whatever a NumPy engine does, it cannot beat this; the rest of the step
    is elementwise work, reductions and Python."""
    rng = np.random.default_rng(0)
    d, H, V, T, L = (CONFIG[k] for k in ("d_model", "n_head", "vocab_size", "context",
                                         "n_layer"))
    N, hd = BATCH * T, d // H

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)] * L + [(d, V)]   # (in, out)
    linears = [(rand(N, n_in), rand(n_out, n_in), rand(N, n_out)) for n_in, n_out in shapes]
    qkv = rand(BATCH, T, 3, H, hd).transpose(2, 0, 3, 1, 4)               # as the model's
    q, k, v = qkv[0], qkv[1], qkv[2]
    p, g = rand(BATCH, H, T, T), rand(BATCH, H, T, hd)

    def products():
        for x, w, gy in linears:
            x @ w.T, gy @ w, gy.T @ x
        for _ in range(L):
            q @ k.swapaxes(-1, -2), p @ v
            p.swapaxes(-1, -2) @ g, g @ v.swapaxes(-1, -2), p @ k, p.swapaxes(-1, -2) @ q

    products()
    best = float("inf")
    for _ in range(repeats):
        t0 = timer()
        products()
        best = min(best, timer() - t0)
    return best


def profile_steps(step, n_steps: int, top: int = 25, device: str = "cpu",
                  clock: str = "wall") -> dict:
    """Run ``n_steps`` nanotie steps under cProfile; print and return the breakdown.

    ``clock="cpu"`` times with the process's CPU time instead of the wall clock: on a
    busy machine that leaves out the time spent waiting for a core, but with several
    threads a function is charged for what the other threads did meanwhile, so use it
    with one thread (``--threads 1``)."""
    import cProfile
    import io
    import pstats

    timer = time.process_time if clock == "cpu" else time.perf_counter
    step()                                   # warm: optimizer state, caches
    t0 = timer()
    for _ in range(n_steps):
        step()
    plain = (timer() - t0) / n_steps
    profiler = cProfile.Profile(timer)
    profiler.enable()
    t0 = timer()
    for _ in range(n_steps):
        step()
    profiled = (timer() - t0) / n_steps
    profiler.disable()

    stats = pstats.Stats(profiler)
    print(f"\n## Profile: {n_steps} nanotie steps under cProfile, {clock} clock")
    print(f"step time {plain * 1e3:.1f} ms without the profiler, {profiled * 1e3:.1f} ms "
          "with it (the difference is the profiler's per-call cost)")
    for order, what in (("tottime", "own time"), ("cumulative", "cumulative time")):
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats(order).print_stats(top)
        body = out.getvalue()
        body = body[body.find("   ncalls"):]          # drop pstats' preamble
        print(f"\nTop {top} functions by {what} (seconds for all {n_steps} steps):\n{body}")

    # Time per primitive op, forward and backward (cumulative: NumPy calls included).
    table = _primitive_code_table()
    per_op = {}
    for func, (_, ncalls, _, cumtime, _) in stats.stats.items():
        if func in table:
            op, phase = table[func]
            row = per_op.setdefault(op, {"forward": 0.0, "backward": 0.0, "calls": 0})
            row[phase] += cumtime / n_steps
            row["calls"] += ncalls if phase == "forward" else 0

    def cum(name, filename_end):
        return sum(v[3] for k, v in stats.stats.items()
                   if k[2] == name and k[0].endswith(filename_end)) / n_steps

    total = profiled
    backward_total = cum("_run_backward", "autograd.py")
    backward_ops = sum(r["backward"] for r in per_op.values())
    optimizer = cum("step", "optim.py") + cum("zero_grad", "optim.py")
    forward_ops = sum(r["forward"] for r in per_op.values())
    rows = sorted(per_op.items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"]))
    print(f"Time per primitive op, per step (ms; share of the profiled step of "
          f"{total * 1e3:.1f} ms):\n")
    print("| op | calls | forward ms | backward ms | total ms | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for op, r in rows:
        t = r["forward"] + r["backward"]
        print(f"| {op} | {r['calls'] // n_steps} | {r['forward'] * 1e3:.1f} | "
              f"{r['backward'] * 1e3:.1f} | {t * 1e3:.1f} | {t / total:.1%} |")
    engine = backward_total - backward_ops
    glue = total - forward_ops - backward_total - optimizer
    print("\nWhere the step goes:\n")
    print("| part | ms | share |")
    print("|---|---:|---:|")
    parts = {
        "primitive ops, forward": forward_ops,
        "primitive ops, backward rules": backward_ops,
        "engine (graph walk, un-broadcast sums, gradient accumulation)": engine,
        "AdamW step + zero_grad": optimizer,
        "the rest (modules, composites, graph recording outside ops)": glue,
    }
    for part, t in parts.items():
        print(f"| {part} | {t * 1e3:.1f} | {t / total:.1%} |")
    floor = matmul_floor(timer=timer) if device == "cpu" else None
    if floor is not None:
        print(f"\nThe step's matrix products alone (raw NumPy, same shapes and layouts): "
              f"{floor * 1e3:.1f} ms, {floor / plain:.0%} of the {plain * 1e3:.1f} ms step; "
              "the rest is elementwise work, reductions and Python.")
    return dict(step_ms=plain * 1e3, profiled_step_ms=profiled * 1e3,
                matmul_floor_ms=None if floor is None else floor * 1e3,
                per_op_ms={op: {"forward": r["forward"] * 1e3, "backward": r["backward"] * 1e3,
                                "calls": r["calls"] // n_steps} for op, r in rows},
                parts_ms={k: v * 1e3 for k, v in parts.items()})


# --------------------------------------------------------------------- reporting


def main(argv=None) -> int:
    p = parser(__doc__, dict(repeats=(15, 3), warmup=(3, 1), min_time=(0.2, 0.05),
                             settle=(0.2, 0.2)),
               device="cuda: nanotie on CuPy, against PyTorch on CUDA if it can, else "
                      "against nanotie on NumPy")
    p.add_argument("--no-sdpa", action="store_true",
                   help="skip the PyTorch model with scaled_dot_product_attention")
    p.add_argument("--no-switch", "--no-plain", dest="no_switch", action="store_true",
                   help="skip nanotie-switch, nanotie with the CPU speed switch on "
                        "(nanotie.backend.set_cpu_threads(N))")
    p.add_argument("--profile", action="store_true",
                   help="also profile nanotie's step and print where the time goes")
    p.add_argument("--profile-steps", type=at_least(1), default=5,
                   help="steps to run under the profiler (default 5)")
    p.add_argument("--profile-clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: the profile counts CPU time, not waiting for a core "
                        "(for a busy machine; meant for --threads 1)")
    args = p.parse_args(argv)

    torch = import_torch("bench_train_step.py")
    device = torch_device = args.device
    if device == "cuda":
        if not nt.cuda_available():
            p.error("--device cuda needs CuPy on a machine with a GPU")
        if not torch.cuda.is_available():
            torch_device = None      # compare against nanotie on the CPU instead

    threads, how = blas_threads(limit=args.threads)
    torch_threads = match_torch_threads(torch, threads)
    timer = timer_options(args)
    meta = machine()
    load = meta["load_average"]
    print(f"nanotie {meta['nanotie']} (NumPy {meta['numpy']}) vs PyTorch {torch.__version__}, "
          f"float32, Python {meta['python']}, device {device}")
    print(f"CPU: {meta['cpu']}, {meta['logical_cores']} logical cores; load average "
          f"{'n/a' if load is None else ', '.join(f'{x:.2f}' for x in load)}")
    print(f"threads: {threads} for NumPy's BLAS ({how}), torch.get_num_threads() = "
          f"{torch_threads}, nanotie.backend.cpu_threads() = {nt.backend.cpu_threads()}")
    print(f"glibc keeps freed memory for reuse (nanotie.backend.keep_freed_memory): "
          f"{nt.backend.keep_freed_memory()}")
    print(f"model: GPT {CONFIG}, batch {BATCH} x {CONFIG['context']}, AdamW lr {LR}, "
          f"weight decay {WEIGHT_DECAY} on matrices")
    print(f"timer: median of {timer['repeats']} interleaved repeats, each >= "
          f"{timer['min_time']} s, after a {timer['settle']} s pause\n")

    contenders, checks = {}, {}
    model, opt, idx, targets = nanotie_setup(device)
    contenders["nanotie"] = nanotie_step_fn(model, opt, idx, targets, device)
    if device == "cpu" and not args.no_switch and threads > 1:
        sw_model, sw_opt, _, _ = nanotie_setup(device)
        contenders["nanotie-switch"] = with_switch(
            nanotie_step_fn(sw_model, sw_opt, idx, targets, device), threads)
    if torch_device is not None:
        variants = [("torch", False)] + ([] if args.no_sdpa else [("torch-sdpa", True)])
        for name, sdpa in variants:
            checks[name] = check_one_step(torch, device, sdpa)
            print(f"  check {name:11s}: {checks[name]}", file=sys.stderr, flush=True)
            tm, to, ti, tt = torch_setup(torch, model, idx, targets, torch_device, sdpa)
            contenders[name] = torch_step_fn(torch, tm, to, ti, tt, torch_device)
    else:
        cpu_model, cpu_opt, _, _ = nanotie_setup("cpu")
        contenders["nanotie-numpy"] = nanotie_step_fn(cpu_model, cpu_opt, idx, targets, "cpu")

    t = compare(contenders, **timer)
    base = "torch" if "torch" in t else "nanotie-numpy"
    rows = []
    for name, timing in t.items():
        rows.append(dict(contender=name, median_ms=timing["median"] * 1e3,
                         min_ms=timing["min"] * 1e3,
                         ratio=t["nanotie"]["median"] / timing["median"],
                         cpu_median_ms=timing["cpu_median"] * 1e3,
                         cpu_ratio=t["nanotie"]["cpu_median"] / timing["cpu_median"],
                         steps_per_repeat=timing["number"],
                         times_ms=[x * 1e3 for x in timing["times"]],
                         cpu_times_ms=[x * 1e3 for x in timing["cpu_times"]]))
    print("| contender | median ms/step | min ms/step | nanotie / this | median CPU ms/step "
          "| nanotie / this (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['contender']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['ratio']:.2f} | {r['cpu_median_ms']:.1f} | {r['cpu_ratio']:.2f} |")
    headline = t["nanotie"]["median"] / t[base]["median"]
    print(f"\nnanotie / {base} = {headline:.2f}x per training step (wall clock; CPU time "
          f"{t['nanotie']['cpu_median'] / t[base]['cpu_median']:.2f}x)")
    for name, verdict in checks.items():
        if verdict != "ok":
            print(f"(!) {name}: {verdict}")

    profile = None
    if args.profile:
        profile = profile_steps(contenders["nanotie"], args.profile_steps, device=device,
                                clock=args.profile_clock)

    if args.json:
        meta.update(load_average_start=meta.pop("load_average"),
                    load_average_end=machine()["load_average"], torch=torch.__version__,
                    nanotie_cpu_threads=nt.backend.cpu_threads(), threads=threads,
                    threads_how=how, torch_threads=torch_threads,
                    kept_freed_memory=nt.backend.KEPT_FREED_MEMORY, dtype="float32",
                    device=device, config=CONFIG, batch=BATCH, lr=LR,
                    weight_decay=WEIGHT_DECAY, quick=args.quick, timer=timer,
                    statistic="median per-step time over interleaved repeats")
        write_json(args.json, dict(meta=meta, results=rows,
                                   headline=dict(baseline=base, ratio=headline),
                                   checks=checks, profile=profile))
    return 1 if any(v != "ok" for v in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
