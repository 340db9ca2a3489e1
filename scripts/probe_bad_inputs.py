"""Try nanotie the way a new user or a grader would get it wrong, and count the outcomes.

    python scripts/probe_bad_inputs.py            every case, one line each, then counts
    python scripts/probe_bad_inputs.py -q         the counts only
    python scripts/probe_bad_inputs.py -k file    the cases whose name holds "file"

Each case is one bad input or fault (a wrong argument, a damaged file, a learner's
file that exits or loops, a disk that fills) with the outcome it should have. The
outcome it gets is one of

    clean       refused or recovered, with a message that says what and where
    misleading  refused, but the message does not say what is wrong
    traceback   an error that is not nanotie's own (a traceback on the command line,
                NumPy's IndexError, a ZeroDivisionError)
    silent      accepted, with a wrong result or a wrong exit status
    hang        still running after its time limit
    lost        a finished result was destroyed or a finished run redone

The exit status is 0 only when every case is clean. Command-line cases run
``python -m nanotie`` in a subprocess; the rest run in this process. It takes about a
minute, most of it starting Python for the command-line cases.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's nanotie

import nanotie as nt                                          # noqa: E402
from nanotie import data, nn, protocol, report                # noqa: E402
from nanotie import train as T                                # noqa: E402
from nanotie.autograd import ShapeError                       # noqa: E402
from nanotie.nn import functional as F                        # noqa: E402

OUTCOMES = ("clean", "misleading", "traceback", "silent", "hang", "lost")
CASES = []          # (group, name, probe); probe(tmp: Path) -> (outcome, detail)


def case(group: str, name: str):
    def register(probe):
        CASES.append((group, name, probe))
        return probe
    return register


# --------------------------------------------------------------------- helpers


def refused(call, kinds=(ValueError, TypeError), words=()):
    """The outcome of ``call()``, which should raise one of ``kinds`` naming ``words``."""
    try:
        value = call()
    except kinds as exc:
        text = str(exc)
        missing = [w for w in words if w not in text]
        return ("misleading", f"{type(exc).__name__} without {missing}: {text}"
                ) if missing else ("clean", f"{type(exc).__name__}: {text}")
    except Exception as exc:                   # noqa: BLE001  (anything else: not ours)
        return "traceback", f"{type(exc).__name__}: {exc}"
    return "silent", f"accepted, returned {type(value).__name__}"


def cli(args, expect_code, words=(), env=None, cwd=None, timeout=60, max_lines=2):
    """Run ``python -m nanotie ARGS``; clean when it exits with ``expect_code`` in at
    most ``max_lines`` lines of stderr that hold ``words``, without a traceback."""
    return python(["-m", "nanotie", *args], expect_code, words, timeout, max_lines, cwd, env)


def python(code, expect_code, words=(), timeout=60, max_lines=2, cwd=None, env=None):
    """Like :func:`cli`, for a short Python program (a fake experiment, say), or for the
    interpreter's arguments ``code`` if it is a list; both import this checkout's nanotie."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(nt.__file__).resolve().parent.parent), full_env.get("PYTHONPATH", "")])
    args = code if isinstance(code, list) else ["-c", textwrap.dedent(code)]
    try:
        r = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                           timeout=timeout, env=full_env, cwd=cwd)
    except subprocess.TimeoutExpired:
        return "hang", f"still running after {timeout} s"
    return judge_process(r, expect_code, words, max_lines)


def judge_process(r, expect_code, words, max_lines):
    err = r.stderr.strip()
    last = err.splitlines()[-1][:100] if err else " ".join(r.stdout.split())[-100:]
    if "Traceback (most recent call last)" in r.stderr:
        return "traceback", last
    if r.returncode == 0 and expect_code != 0:
        return "silent", f"exit 0: {last}"
    text = " ".join((r.stdout + r.stderr).split())
    missing = [w for w in words if w not in text]
    if r.returncode != expect_code or missing or len(err.splitlines()) > max_lines:
        return "misleading", f"exit {r.returncode}, missing {missing}: {last}"
    return "clean", f"exit {r.returncode}: {last}"


def ones(*shape):
    return nt.tensor(np.ones(shape))


TINY = dict(vocab_size=11, context=8, d_model=8, n_layer=1, n_head=2)


def gpt(tied=True):
    nt.manual_seed(0)
    return nn.GPT(nn.GPTConfig(**TINY, tie_embeddings=tied))


# ------------------------------------------------------------ tensors and ops


@case("api", "tensor(['a'])")
def _(tmp):
    return refused(lambda: nt.tensor(["a"]), TypeError, ["expected numbers"])


@case("api", "tensor(None)")
def _(tmp):
    return refused(lambda: nt.tensor(None), TypeError, ["expected numbers"])


@case("api", "tensor({'a': 1})")
def _(tmp):
    return refused(lambda: nt.tensor({"a": 1}), TypeError, ["expected numbers"])


@case("api", "tensor(object())")
def _(tmp):
    return refused(lambda: nt.tensor(object()), TypeError, ["expected numbers"])


@case("api", "tensor of a ragged list")
def _(tmp):
    return refused(lambda: nt.tensor([[1.0, 2.0], [3.0]]), TypeError, ["equal length"])


@case("api", "tensor(array) then the array is edited")
def _(tmp):
    a = np.array([1.0, 2.0, 3.0])
    x = nt.tensor(a, requires_grad=True, dtype=np.float64)
    y = (x * x).sum()
    a[:] = 100.0
    y.backward()
    ok = np.array_equal(x.numpy(), [1, 2, 3]) and np.array_equal(x.grad, [2, 4, 6])
    return ("clean", "a copy: values and gradients kept") if ok else (
        "silent", "the tensor shares the array: its values or gradient changed")


@case("api", "pad(x of 3, (-5, 0))")
def _(tmp):
    return refused(lambda: nt.pad(ones(3), (-5, 0)), ValueError, ["pad", "would leave"])


@case("api", "pad with an odd number of widths")
def _(tmp):
    return refused(lambda: nt.pad(ones(3), (1, 2, 3)), ValueError, ["pad"])


@case("api", "matmul (3, 4) @ (3, 4)")
def _(tmp):
    return refused(lambda: ones(3, 4) @ ones(3, 4), ShapeError, ["(3, 4)"])


@case("api", "add (3, 4) + (2, 4)")
def _(tmp):
    return refused(lambda: ones(3, 4) + ones(2, 4), ShapeError, ["(3, 4)", "(2, 4)"])


@case("api", "reshape 12 entries to (5, 3)")
def _(tmp):
    return refused(lambda: ones(3, 4).reshape(5, 3), (ValueError, ShapeError), ["(5, 3)"])


@case("api", "cat of (2, 3) and (3, 2)")
def _(tmp):
    return refused(lambda: nt.cat([ones(2, 3), ones(3, 2)]), ShapeError, ["cat"])


@case("api", "backward() on a non-scalar")
def _(tmp):
    x = nt.tensor(np.ones(3), requires_grad=True)
    return refused(lambda: (x * 2).backward(), RuntimeError, ["gradient argument"])


@case("api", "requires_grad on an integer tensor")
def _(tmp):
    return refused(lambda: nt.tensor([1, 2]).requires_grad_(), TypeError, ["floating"])


@case("api", "a cuda tensor without a GPU")
def _(tmp):
    if nt.cuda_available():
        return "clean", "(a GPU is present: nothing to refuse)"
    return refused(lambda: nt.randn(2, device="cuda"), nt.DeviceError, ["cuda"])


# ------------------------------------------------------------------ nn and loss


@case("api", "cross_entropy with target -3 of 5 classes")
def _(tmp):
    return refused(lambda: F.cross_entropy(ones(3, 5), nt.tensor([0, -3, 1])), IndexError,
                   ["cross_entropy", "target -3"])


@case("api", "cross_entropy with target 5 of 5 classes")
def _(tmp):
    return refused(lambda: F.cross_entropy(ones(3, 5), nt.tensor([0, 5, 1])), IndexError,
                   ["cross_entropy", "target 5"])


@case("api", "cross_entropy with float targets")
def _(tmp):
    return refused(lambda: F.cross_entropy(ones(2, 3), nt.tensor([0.0, 1.0])), TypeError,
                   ["integer"])


@case("api", "cross_entropy with a wrong target shape")
def _(tmp):
    return refused(lambda: F.cross_entropy(ones(4, 3), nt.tensor([0, 1])), ShapeError,
                   ["(2,)"])


@case("api", "mse_loss on (4, 1) and (4,)")
def _(tmp):
    return refused(lambda: F.mse_loss(ones(4, 1), np.zeros(4)), ShapeError, ["mse_loss"])


@case("api", "clip_grad_norm(params, -1)")
def _(tmp):
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.ones(3, dtype=np.float32)
    return refused(lambda: nn.optim.clip_grad_norm([p], -1.0), ValueError, ["max_norm"])


@case("api", "TrainConfig(grad_clip=-1)")
def _(tmp):
    return refused(lambda: T.TrainConfig(grad_clip=-1), ValueError, ["grad_clip"])


@case("api", "TrainConfig(steps=0)")
def _(tmp):
    return refused(lambda: T.TrainConfig(steps=0), ValueError, ["steps"])


@case("api", "TrainConfig(lr=-1)")
def _(tmp):
    return refused(lambda: T.TrainConfig(lr=-1.0), ValueError, ["lr"])


@case("api", "Linear(0, 3)")
def _(tmp):
    return refused(lambda: nn.Linear(0, 3), ValueError, ["in_features"])


@case("api", "Embedding ids out of range")
def _(tmp):
    return refused(lambda: nn.Embedding(5, 3)(nt.tensor([7])), IndexError, ["[0, 5)"])


@case("api", "GPTConfig(d_model=10, n_head=3)")
def _(tmp):
    return refused(lambda: nn.GPTConfig(d_model=10, n_head=3), ValueError, ["n_head"])


@case("api", "GPT on a sequence longer than its context")
def _(tmp):
    return refused(lambda: gpt()(np.zeros((1, 9), dtype=np.int64)), ValueError, ["context"])


@case("api", "a tied checkpoint into an untied GPT")
def _(tmp):
    model = gpt(tied=False)
    outcome = refused(lambda: model.load_state_dict(gpt(True).state_dict()),
                      nn.StateDictError, ["tie_embeddings"])
    if outcome[0] == "silent" and model.lm_head.weight is model.wte.weight:
        return "silent", "tied behind the config's back (tie_embeddings is still False)"
    return outcome


@case("api", "an untied checkpoint into a tied GPT")
def _(tmp):
    return refused(lambda: gpt(True).load_state_dict(gpt(False).state_dict()),
                   nn.StateDictError, ["lm_head.weight"])


@case("api", "a checkpoint with a wrong shape")
def _(tmp):
    sd = gpt().state_dict()
    sd["wpe.weight"] = np.zeros((9, 8), np.float32)
    return refused(lambda: gpt().load_state_dict(sd), nn.StateDictError, ["wpe.weight"])


@case("api", "load_state_dict given a path, not the arrays")
def _(tmp):
    return refused(lambda: gpt().load_state_dict(str(tmp / "ck.npz")), TypeError,
                   ["dict of arrays"])


@case("api", "split with fractions that leave no training data")
def _(tmp):
    return refused(lambda: protocol.split(np.arange(100), 0.6, 0.5), ValueError, ["split"])


# ----------------------------------------------------------------- checkpoints


def _train_tiny(ck, steps=2, loss_fn=T.default_loss):
    ids = np.frombuffer(data.prose_corpus(20_000), dtype=np.uint8) % 11
    cfg = T.TrainConfig(steps=steps, batch_size=2, warmup_steps=1, eval_interval=2,
                        eval_batches=1)
    return T.train(gpt(), ids[:15_000], ids[15_000:], cfg, checkpoint=ck, progress=False,
                   loss_fn=loss_fn)


def _damaged_checkpoint(tmp, damage, name):
    ck = tmp / f"{name}.npz"
    _train_tiny(ck)
    ck.write_bytes(damage(ck.read_bytes()))
    err = io.StringIO()
    saved, sys.stderr = sys.stderr, err
    try:
        _train_tiny(ck)
    except T.CheckpointError as exc:           # refusing is fine if it says what to do
        text = str(exc)
        good = "\n" not in text and "allow_pickle" not in text and "delete" in text
        return ("clean" if good else "misleading"), f"refused: {text}"
    except Exception as exc:                   # noqa: BLE001
        return "traceback", f"{type(exc).__name__}: {str(exc)[:90]}"
    finally:
        sys.stderr = saved
    lines = err.getvalue().strip().splitlines()
    if len(lines) == 1 and str(ck) in lines[0]:
        return "clean", lines[0][:100]
    return "misleading", f"retrained, said: {lines}"


@case("train", "a garbage checkpoint file")
def _(tmp):
    return _damaged_checkpoint(tmp, lambda raw: b"\x93NUMPY garbage" * 9, "garbage")


@case("train", "a truncated checkpoint file")
def _(tmp):
    return _damaged_checkpoint(tmp, lambda raw: raw[:300], "truncated")


@case("train", "an empty checkpoint file")
def _(tmp):
    return _damaged_checkpoint(tmp, lambda raw: b"", "empty")


@case("train", "a checkpoint from another TrainConfig")
def _(tmp):
    ck = tmp / "other.npz"
    _train_tiny(ck)
    outcome = refused(lambda: _train_tiny(ck, steps=3), T.CheckpointError,
                      ["another TrainConfig", str(ck)])
    if outcome[0] == "clean" and "\n" in outcome[1]:
        return "misleading", f"several lines: {outcome[1]}"
    return outcome


@case("train", "a checkpoint for another model")
def _(tmp):
    ck = tmp / "model.npz"
    _train_tiny(ck)
    ids = np.frombuffer(data.prose_corpus(20_000), dtype=np.uint8) % 11
    cfg = T.TrainConfig(steps=2, batch_size=2, warmup_steps=1, eval_interval=2,
                        eval_batches=1)
    other = nn.GPT(nn.GPTConfig(**{**TINY, "d_model": 4}))
    return refused(lambda: T.train(other, ids[:15_000], ids[15_000:], cfg, checkpoint=ck,
                                   progress=False), T.CheckpointError, ["does not fit"])


@case("train", "a damaged run-cache entry")
def _(tmp):
    cache = tmp / "cache"
    run = protocol.Run(f"{__name__}:_figures", {}, 0)
    entry = protocol._cache_file(cache, run)
    entry.parent.mkdir(parents=True)
    entry.write_text("{ not json")
    err = io.StringIO()
    saved, sys.stderr = sys.stderr, err
    try:
        [result] = protocol.run_many([run], cache_dir=cache, progress=False)
    except Exception as exc:                   # noqa: BLE001
        return "traceback", f"{type(exc).__name__}: {str(exc)[:90]}"
    finally:
        sys.stderr = saved
    lines = err.getvalue().strip().splitlines()
    if result.cached or len(lines) != 1 or str(entry) not in lines[0]:
        return "misleading", f"said {lines}"
    return "clean", lines[0][:100]


def _figures(settings, seed, device):
    return {"val": {"x": 1.0}, "test": {"x": 1.0}}


@case("files", "a plot save that fails half-way")
def _(tmp):
    plt = report.pyplot()
    path = tmp / "plot.png"
    fig, ax = plt.subplots()
    report.save_figure(fig, path)
    old = path.read_bytes()
    fig, ax = plt.subplots()

    def half(target, **kwargs):
        (target if hasattr(target, "write") else open(target, "wb")).write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")
    fig.savefig = half
    try:
        report.save_figure(fig, path)
    except OSError:
        pass
    plt.close("all")
    return ("clean", "the old PNG is intact") if path.read_bytes() == old else (
        "lost", "the old PNG was replaced by half a file")


# ------------------------------------------------------------------ exercises

MATMUL = """\
import numpy as np
{at_import}

def matmul(a, b):
    {in_function}
    out = a @ b

    def backward(g):
        {in_backward}
        ga = g @ np.swapaxes(b, -1, -2)
        gb = np.swapaxes(a, -1, -2) @ g
        while gb.ndim > b.ndim:
            gb = gb.sum(axis=0)
        return ga, gb

    return out, backward
"""


def learner_file(tmp, name, at_import="", in_function="pass", in_backward="pass"):
    path = tmp / f"{name}.py"
    path.write_text(MATMUL.format(at_import=at_import, in_function=in_function,
                                  in_backward=in_backward))
    return str(path)


def check(tmp, name, expect_code=1, words=(), env=None, timeout=60, **where):
    return cli(["exercise", "check", "2", learner_file(tmp, name, **where)], expect_code,
               words, env=env, timeout=timeout, max_lines=3)


for _where in ("at_import", "in_function", "in_backward"):
    for _call in ("import sys; sys.exit(0)", "import os; os._exit(0)"):
        def _probe(tmp, where=_where, call=_call):
            return check(tmp, f"exit_{where}", **{where: call})
        case("exercise", f"{_call.split('; ')[1]} {_where.replace('_', ' ')}")(_probe)


@case("exercise", "an endless loop in the function")
def _(tmp):
    return check(tmp, "loop", words=["did not finish"], env={"NANOTIE_CHECK_SECONDS": "3"},
                 timeout=40, in_function="while True:\n        pass")


@case("exercise", "a BaseException subclass at import")
def _(tmp):
    return check(tmp, "base_import", words=["Stop: halt"],
                 at_import="class Stop(BaseException):\n    pass\nraise Stop('halt')")


@case("exercise", "a BaseException subclass in the backward")
def _(tmp):
    return check(tmp, "base_backward", words=["Stop: halt"],
                 at_import="class Stop(BaseException):\n    pass",
                 in_backward="raise Stop('halt')")


@case("exercise", "a float32 answer")
def _(tmp):
    return check(tmp, "f32", words=["float64"],
                 in_function="a, b = a.astype(np.float32), b.astype(np.float32)")


@case("exercise", "a backward that edits g in place")
def _(tmp):
    return check(tmp, "inplace_g", words=["IN PLACE"], in_backward="g *= 3.0")


@case("exercise", "a forward that edits its input in place")
def _(tmp):
    return check(tmp, "inplace_a", words=["IN PLACE"], in_function="a -= 1.0")


@case("exercise", "exercise 3 with padding rows counted")
def _(tmp):
    path = tmp / "ce.py"
    path.write_text(textwrap.dedent("""\
        import numpy as np


        def cross_entropy(logits, target, ignore_index=-100):
            valid = target != ignore_index
            z = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(axis=1, keepdims=True)
            rows, safe = np.arange(len(target)), np.where(valid, target, 0)
            loss = (np.log(e.sum(axis=1)) - z[rows, safe]).mean()

            def backward(g):
                grad = p.copy()
                grad[rows, safe] -= 1.0
                return (grad * valid[:, None] * g / valid.sum(),)

            return loss, backward
        """))
    return cli(["exercise", "check", "3", str(path)], 1, ["padding rows counted"], max_lines=0)


@case("exercise", "a syntax error")
def _(tmp):
    path = tmp / "syntax.py"
    path.write_text("def matmul(a, b)\n    return a\n")
    return cli(["exercise", "check", "2", str(path)], 1, ["line 1"])


@case("exercise", "a file without the function")
def _(tmp):
    path = tmp / "nofn.py"
    path.write_text("def mat_mul(a, b):\n    return a\n")
    return cli(["exercise", "check", "2", str(path)], 1, ["defines no function"])


@case("exercise", "a file that does not exist")
def _(tmp):
    return cli(["exercise", "check", "2", str(tmp / "missing.py")], 2, ["no such file"])


@case("exercise", "an exercise that does not exist")
def _(tmp):
    return cli(["exercise", "check", "99"], 2, ["no exercise 99"])


@case("exercise", "start over an existing answer")
def _(tmp):
    (tmp / "ex02_matmul_backward.py").write_text("# my work\n")
    outcome = cli(["exercise", "start", "2", "--dir", str(tmp)], 2, ["--force"])
    if (tmp / "ex02_matmul_backward.py").read_text() != "# my work\n":
        return "lost", "the learner's file was overwritten"
    return outcome


# ---------------------------------------------------------------- reproduce


@case("cli", "--seed -1")
def _(tmp):
    return cli(["reproduce", "gpt", "--seed", "-1", "--out", str(tmp / "o")], 2, ["--seed"])


@case("cli", "--out ''")
def _(tmp):
    outcome = cli(["reproduce", "gpt", "--out", ""], 2, ["--out"], cwd=tmp)
    return ("lost", f"wrote into the current folder: {os.listdir(tmp)}") if os.listdir(
        tmp) else outcome


@case("cli", "--scheduler ''")
def _(tmp):
    return cli(["reproduce", "gpt", "--scheduler", "", "--out", str(tmp / "o")], 2,
               ["--scheduler"])


@case("cli", "--out under a regular file")
def _(tmp):
    (tmp / "file").write_text("x")
    return cli(["reproduce", "gpt", "--out", str(tmp / "file" / "o")], 2, ["cannot write"])


@case("cli", "--out that is a file")
def _(tmp):
    (tmp / "file").write_text("x")
    return cli(["reproduce", "gpt", "--out", str(tmp / "file")], 2, ["not a folder"])


@case("cli", "--device tpu")
def _(tmp):
    return cli(["reproduce", "--device", "tpu"], 2, ["invalid choice"])


@case("cli", "--device cuda without a GPU")
def _(tmp):
    if nt.cuda_available():
        return "clean", "(a GPU is present: nothing to refuse)"
    return cli(["reproduce", "gpt", "--device", "cuda", "--out", str(tmp / "o")], 2,
               ["--device cuda"])


@case("cli", "NANOTIE_DEVICE=cuda without a GPU")
def _(tmp):
    if nt.cuda_available():
        return "clean", "(a GPU is present: nothing to refuse)"
    return cli(["reproduce", "gpt", "--out", str(tmp / "o")], 2, ["NANOTIE_DEVICE"],
               env={"NANOTIE_DEVICE": "cuda"})


@case("cli", "an unknown experiment")
def _(tmp):
    return cli(["reproduce", "nosuch"], 2, ["unknown experiment"])


@case("cli", "--workers 0")
def _(tmp):
    return cli(["reproduce", "gpt", "--workers", "0", "--out", str(tmp / "o")], 2,
               ["--workers"])


@case("cli", "an unknown command")
def _(tmp):
    return cli(["bogus"], 2, ["invalid choice"])


# Fake experiments under the real CLI: what happens when a run fails part-way.

FAKE = """\
import errno, sys
from pathlib import Path
from nanotie import cli, train, nn

class Fake:
    name, title = "fake", "a fake experiment"
    def run(self, quick, out_dir, seed=0, device="cpu", runner=None):
        Path("{tmp}/ran").write_text("yes")
        {action}
        return {{"summary": {{}}}}

cli.REGISTRY = {{"fake": Fake()}}
sys.exit(cli.main(["reproduce", "--out", "{out}"]))
"""


def fake_run(tmp, action, expect_code, words):
    code = FAKE.format(tmp=tmp, out=tmp / "o", action=action)
    return python(code, expect_code, words)


@case("cli", "a folder of the experiment that cannot be written")
def _(tmp):
    (tmp / "o").mkdir()
    (tmp / "o" / "fake").write_text("a file where the folder goes")
    outcome = fake_run(tmp, "pass", 2, ["cannot write"])
    if (tmp / "ran").exists():
        return "lost", "trained first, found the folder unwritable afterwards"
    return outcome


@case("cli", "a disk that fills during a run")
def _(tmp):
    return fake_run(tmp, "raise OSError(errno.ENOSPC, 'No space left on device', "
                         "str(out_dir / 'report.md'))", 1, ["No space left"])


@case("cli", "a file that a run reads, gone")
def _(tmp):
    return fake_run(tmp, f"Path({str(tmp / 'gone.txt')!r}).read_bytes()", 1,
                    ["cannot read", "gone.txt"])


@case("cli", "a cached checkpoint from another run")
def _(tmp):
    return fake_run(tmp, "raise train.CheckpointError('checkpoint x.npz was made with "
                         "another TrainConfig (lr: checkpoint 0.1, now 0.2): delete it')",
                    1, ["x.npz"])


@case("cli", "a cached checkpoint for another model")
def _(tmp):
    return fake_run(tmp, "raise nn.StateDictError('load_state_dict: the checkpoint does not "
                         "fit this GPT:\\n  - missing key ln_f.bias')", 1, ["ln_f.bias"])


# ------------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="print the counts only")
    parser.add_argument("-k", default="", help="only the cases whose name holds this")
    args = parser.parse_args(argv)
    counts = dict.fromkeys(OUTCOMES, 0)
    chosen = [c for c in CASES if args.k in c[1]]
    if not chosen:
        parser.error(f"no case's name holds {args.k!r}")
    for group, name, probe in chosen:
        with tempfile.TemporaryDirectory(prefix="nanotie-probe-") as tmp:
            outcome, detail = probe(Path(tmp))
        counts[outcome] += 1
        if not args.quiet or outcome != "clean":
            print(f"{outcome:10s} {group:8s} {name}: {' '.join(detail.split())[:110]}",
                  flush=True)
    print(f"\ntried {len(chosen)}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0 if counts["clean"] == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
