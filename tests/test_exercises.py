"""The exercises: every checker passes its reference, fails the wrong answers learners
write with a message that names the mistake, and the CLI round trip works.

The tests run over the registry, so an exercise added later is covered as soon as
its ``register(...)`` line exists (including its MISTAKES).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

import nanotie as nt
from nanotie import cli, exercises
from nanotie.autograd import unbroadcast
from nanotie.exercises import Planted, files
from nanotie.exercises.checking import ExerciseFailed, wrong_backward
from nanotie.exercises.diagnose import explain_causality, explain_shape, explain_values
from nanotie.exercises.files import LearnerFileError, check_file, load_function, stub_text
from nanotie.papers.stlm import STLMConfig, ffn_width

EXERCISES = list(exercises.REGISTRY.values())
IDS = [f"{ex.number}-{ex.name}" for ex in EXERCISES]
PLANTED = [(ex, m) for ex in EXERCISES for m in ex.module.MISTAKES]
PLANTED_IDS = [f"{ex.number}-{m.fn.__name__.strip('_')}" for ex, m in PLANTED]


NUMPY_REPR = re.compile(r"\bnp\.(u?int|float|complex|bool|str)\w*\(")


def flat(text: str) -> str:
    """The report with its line wrapping undone, to search for phrases. Under NumPy 2 a
    NumPy number inside a list or tuple prints as np.int64(2): never to a learner."""
    assert not NUMPY_REPR.search(text), text
    return " ".join(text.split())


def solution_source(ex) -> str:
    """The reference solution's source, renamed to the function the stub asks for."""
    src = textwrap.dedent(inspect.getsource(ex.reference))
    return src.replace("def reference(", f"def {ex.function}(", 1)


# ------------------------------------------------------------- the exercises


def test_every_exercise_module_is_registered_once():
    """The registry is what the CLI and these tests see: a ``register(...)`` line that
    reuses a number replaces an exercise, and a missing one hides its module."""
    folder = os.path.dirname(exercises.__file__)
    modules = {f[:-3] for f in os.listdir(folder) if f.endswith(".py")}
    machinery = {"__init__", "checking", "diagnose", "files"}   # not exercises
    assert sorted(ex.name for ex in EXERCISES) == sorted(modules - machinery)


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_module_provides_the_exercise_api(ex):
    mod = ex.module
    for attr in ("TITLE", "GOAL", "FUNCTION", "STUB", "reference", "check", "MISTAKES"):
        assert hasattr(mod, attr), f"{mod.__name__} lacks {attr}"
    assert f"def {mod.FUNCTION}(" in mod.STUB
    assert len(mod.MISTAKES) >= 2, f"{mod.__name__}: plant at least two wrong answers"
    assert all(isinstance(m, Planted) and m.expect for m in mod.MISTAKES)
    assert (list(inspect.signature(mod.reference).parameters)
            == list(inspect.signature(_stub_function(ex)).parameters))
    text = stub_text(ex)                      # PEP 8, so that a linter starts out quiet
    assert f"\n\n\ndef {mod.FUNCTION}(" in text and "\n\n\n\n" not in text


def _stub_function(ex):
    namespace = {}
    exec(compile(stub_text(ex), ex.stub_filename, "exec"), namespace)
    return namespace[ex.function]


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_checker_passes_the_reference(ex):
    result = ex.check(ex.reference)
    assert result.passed, result.report()
    assert result.passed_steps and result.failed_step is None
    assert result.report().endswith(f"Passed: all {len(result.passed_steps)} checks.")


@pytest.mark.parametrize("ex, mistake", PLANTED, ids=PLANTED_IDS)
def test_checker_fails_a_planted_mistake_and_names_it(ex, mistake):
    result = ex.check(mistake.fn)
    assert not result.passed, f"{mistake.description}: passed the check"
    assert not result.unwritten, f"{mistake.description}: taken for an unwritten answer"
    said, _, inputs = result.message.partition("\n(checked on: ")
    assert inputs, f"{mistake.description}: the message does not say what it was checked on"
    for words in mistake.expect:
        assert words in said, (f"{mistake.description}: the message should say "
                               f"{words!r}:\n{result.report()}")
    assert "FAIL" in flat(result.report()) and "Traceback" not in result.report()


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_the_stub_is_unsolved_and_says_so(ex):
    result = ex.check(_stub_function(ex))
    assert not result.passed and result.unwritten
    assert "not written yet" in result.message
    assert solution_source(ex).split('"""')[-1].strip() not in ex.module.STUB


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_engine_exercises_end_with_a_gradient_check(number):
    steps = exercises.get(number).check(exercises.get(number).reference).passed_steps
    assert "nanotie.gradcheck" in steps[-1]


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_a_function_a_step_names_by_its_dotted_path_exists(ex):
    """A step that says "as nanotie.x.f" (or names nanotie.x.f anywhere) sends the
    learner to read f there: the path must be the whole one, and f must be there."""
    for step in ex.check(ex.reference).passed_steps:
        for path in re.findall(r"\bas ([a-z_]+(?:\.\w+)+)|\b(nanotie(?:\.\w+)+)", step):
            path = "".join(path)
            module, _, attr = path.rpartition(".")
            assert path.startswith("nanotie.") and hasattr(
                importlib.import_module(module), attr), f"{step}: no {path}"


@pytest.mark.parametrize("number", [12, 13])     # these checkers build seeded models
def test_a_check_leaves_the_random_stream_where_it_was(number):
    ex = exercises.get(number)
    nt.manual_seed(7)
    nt.randn(3)                                   # the stream has moved once
    expected = nt.randn(5).numpy()
    nt.manual_seed(7)
    nt.randn(3)
    assert ex.check(ex.reference).passed
    assert np.array_equal(nt.randn(5).numpy(), expected)


def test_raise_if_failed_carries_the_report():
    ex = exercises.get(2)
    bad = ex.module.MISTAKES[0].fn
    with pytest.raises(ExerciseFailed, match="transpose"):
        ex.check(bad).raise_if_failed()
    assert ex.check(ex.reference).raise_if_failed().passed


def test_check_in_notebook_reports_an_unwritten_answer_and_stands_in_the_reference(capsys):
    ex = exercises.get(1)

    def my_unbroadcast(grad, shape):
        raise NotImplementedError

    assert ex.check_in_notebook(my_unbroadcast) is ex.reference
    out = flat(capsys.readouterr().out)
    assert "not written yet" in out and "the cells below use the reference solution" in out
    assert "`my_unbroadcast(grad, shape)`" in out      # the notebook's name for it
    assert ex.check_in_notebook(ex.reference) is ex.reference
    assert "Passed" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="keepdims=True"):
        ex.check_in_notebook(ex.mistake("keepdims"))


def test_an_answer_is_unwritten_by_what_it_does_not_by_its_message_words(capsys):
    ex = exercises.get(2)

    def half_written(a, b):              # the forward written, the backward still `...`
        return a @ b, lambda g: (..., ...)

    result = ex.check(half_written)
    assert result.unwritten and "not written yet" in result.message
    assert ex.check_in_notebook(half_written) is ex.reference

    def says_the_words(a, b):            # a wrong answer whose error quotes the words
        raise ValueError("not written yet")

    result = ex.check(says_the_words)
    assert not result.passed and not result.unwritten
    assert "not written yet" in result.message
    with pytest.raises(ExerciseFailed, match="ValueError"):
        ex.check_in_notebook(says_the_words)


def test_skip_if_unwritten_stops_only_an_unwritten_answer(capsys):
    with exercises.skip_if_unwritten("share_first_block"):
        raise NotImplementedError
    assert "`share_first_block` is not written yet" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        with exercises.skip_if_unwritten("share_first_block"):
            raise AssertionError("a wrong answer still fails")


# A few mistakes written the way a learner would, in a file, not in the library.

def test_a_mean_over_tied_uses_is_reported_as_a_factor_of_the_uses():
    ex = exercises.get(5)

    def tied_lm(E, ids, targets):
        loss, backward = ex.reference(E, ids, targets)
        return loss, lambda g: (backward(g)[0] * 0.5,)

    msg = ex.check(tied_lm).message
    assert "factor of 2" in msg and "number of times `E` is used" in msg


@pytest.mark.parametrize("number, core_axes", [(2, 2), (4, 1), (8, 1)],
                         ids=["matmul-b", "layer_norm-weight", "fftconv-h"])
def test_a_weight_shared_by_a_batch_averaged_over_it_is_named(number, core_axes):
    """The second input is shared by every row (matrix) of the first: a gradient
    averaged over those rows, not summed, is named as a factor of its uses."""
    ex = exercises.get(number)

    def averaged(*args):
        core = (0,) * core_axes                   # one entry per row of the batch
        rows = args[0][(..., *core)].size // args[1][(..., *core)].size
        out, backward = ex.reference(*args)
        return out, lambda g: tuple(gr / rows if i == 1 else gr
                                    for i, gr in enumerate(backward(g)))

    msg = flat(ex.check(averaged).message)
    assert "off by a factor of" in msg and "SUMMED over those" in msg, msg


def test_an_error_in_learner_code_points_at_their_line(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import numpy as np\n\n\ndef matmul(a, b):\n"
                    "    out = a @ b\n\n    def backward(g):\n"
                    "        return g @ b, a.T @ g\n\n    return out, backward\n")
    result = exercises.get(2).check(load_function(path, "matmul"))
    assert not result.passed
    assert "mine.py, line 8" in result.message and "transpose" in result.message


def test_wrong_return_forms_are_named():
    ex = exercises.get(2)

    def only_grad_a(a, b):
        return a @ b, lambda g: g @ b.T               # forgot grad_b

    assert "tuple of 2 gradient(s)" in ex.check(only_grad_a).message

    def just_the_output(a, b):
        return a @ b

    assert "(out, backward)" in ex.check(just_the_output).message

    def a_number_for_backward(a, b):
        return a @ b, 3

    assert "backward a function of the upstream gradient g; the second item is a int" in \
        flat(ex.check(a_number_for_backward).message)

    def a_tensor_out(a, b):
        return nt.tensor(a @ b), lambda g: (g @ b.T, a.T @ g)

    assert "is a nanotie Tensor; this exercise works on plain NumPy arrays" in \
        flat(ex.check(a_tensor_out).message)

    def numpy_not_imported(a, b):
        return numpyy.matmul(a, b), None   # noqa: F821  (a name the file never imported)

    assert "is an import missing" in ex.check(numpy_not_imported).message


@pytest.mark.parametrize("number", [3, 5])
def test_ignoring_upstream_gradient_is_named(number):
    ex = exercises.get(number)

    def without_g(*args, **kwargs):
        loss, backward = ex.reference(*args, **kwargs)
        return loss, lambda g: backward(1.0)

    assert "you ignored the upstream gradient g" in ex.check(without_g).message


def test_a_wrong_loss_in_the_tied_lm_is_caught_before_its_gradient():
    ex = exercises.get(5)

    def doubled(E, ids, targets):
        loss, backward = ex.reference(E, ids, targets)
        return 2 * loss, backward

    result = ex.check(doubled)
    assert result.failed_step.startswith("the loss matches")
    assert re.search(r"`tied_lm\(E, ids, targets\)` is ([\d.]+); the correct value is "
                     r"([\d.]+)\.", result.message), result.message


def test_layer_norm_with_the_sample_variance_is_named():
    ex = exercises.get(4)

    def unbiased(x, weight, bias):
        mu = x.mean(axis=-1, keepdims=True)
        xhat = (x - mu) / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + 1e-5)
        return xhat * weight + bias, ex.reference(x, weight, bias)[1]

    assert "the variance divides by D - 1" in ex.check(unbiased).message


def test_layer_norm_backward_without_the_weight_is_named():
    ex = exercises.get(4)

    def no_weight(x, weight, bias):
        out, backward = ex.reference(x, weight, bias)
        unweighted = ex.reference(x, np.ones_like(weight), bias)[1]
        return out, lambda g: (unweighted(g)[0], *backward(g)[1:])

    assert "the weight is missing: start from dxhat = g * weight" in ex.check(no_weight).message


@pytest.mark.parametrize("left_out, words", [("var", "the variance's term is missing"),
                                              ("mu", "the mean's term is missing")])
def test_layer_norm_backward_without_one_term_is_named(left_out, words):
    ex = exercises.get(4)

    def one_term(x, weight, bias):
        out, backward = ex.reference(x, weight, bias)
        mu = x.mean(axis=-1, keepdims=True)
        rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
        xhat = (x - mu) * rstd

        def one_term_backward(g):
            dxhat = g * weight
            kept = (dxhat.mean(axis=-1, keepdims=True) if left_out == "var"
                    else xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
            return ((dxhat - kept) * rstd, *backward(g)[1:])
        return out, one_term_backward

    assert words in flat(ex.check(one_term).message)


def _fftconv_answer(forward_scale=1.0, grad_u=None, grad_h=None):
    """Exercise 8's reference, its output scaled, and either gradient replaced by a
    formula of (u, h, g) (un-broadcast to its input's shape)."""
    ex = exercises.get(8)

    def fftconv(u, h):
        out, backward = ex.reference(u, h)

        def wrong(g):
            gu, gh = backward(g)
            return (gu if grad_u is None else unbroadcast(grad_u(u, h, g), u.shape),
                    gh if grad_h is None else unbroadcast(grad_h(u, h, g), h.shape))
        return forward_scale * out, wrong
    return fftconv


def _wrapped_grad_u(u, h, g):          # a correlation without zero padding: n = L
    L = u.shape[-1]
    return np.fft.irfft(np.fft.rfft(g, L) * np.conj(np.fft.rfft(h, L)), L)


def _convolved_grad_h(u, h, g):        # G * U instead of G * conj(U)
    n = u.shape[-1] + h.shape[-1] - 1
    return np.fft.irfft(np.fft.rfft(g, n) * np.fft.rfft(u, n), n)[..., :h.shape[-1]]


@pytest.mark.parametrize("answer, step, words", [
    (_fftconv_answer(forward_scale=2.0), "the forward equals",
     "`fftconv(u, h)` is 2 times the correct one"),
    (_fftconv_answer(grad_u=_wrapped_grad_u), "the backward matches",
     "your gradient for `u` is wrong: the backward wraps around"),
    (_fftconv_answer(grad_h=_convolved_grad_h), "the backward matches",
     "your gradient for `h` is wrong: the backward CONVOLVES"),
], ids=["forward-doubled", "grad-u-wraps", "grad-h-convolves"])
def test_fftconv_slips_beyond_the_planted_ones_are_named(answer, step, words):
    result = exercises.get(8).check(answer)
    assert result.failed_step.startswith(step) and words in result.message, result.report()


def _dS_transposed_in_grad_O(O, T, tau, g, right):
    K = len(O)
    S = O @ T.T / tau
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dS = g * (P - np.eye(K)) / K                    # dL/dS
    return dS.T @ T / tau, right[1]                 # should be dS @ T / tau


def _softmax_over_axis_0(O, T, tau, g, right):
    S = O @ T.T / tau
    P = np.exp(S - S.max(axis=0, keepdims=True))
    P /= P.sum(axis=0, keepdims=True)               # should be over each row, axis=1
    dS = g * (P - np.eye(len(O))) / len(O)
    return dS @ T / tau, dS.T @ O / tau


@pytest.mark.parametrize("backward_of, words", [
    (lambda O, T, tau, g, right: right[:1], "backward must return a tuple of 2 gradient(s)"),
    (_softmax_over_axis_0,
     "your gradient for `O` is wrong: the score matrix is used the wrong way round"),
    (_dS_transposed_in_grad_O,
     "your gradient for `O` is wrong: the score matrix is used the wrong way round"),
    (lambda O, T, tau, g, right: tuple(r / g for r in right),
     "you ignored the upstream gradient g"),
    (lambda O, T, tau, g, right: tuple(r * len(O) for r in right),
     "you summed over the K = 7 positions; the loss is their MEAN, so the gradient has a 1/K"),
    (lambda O, T, tau, g, right: tuple(r * tau for r in right),
     "is 0.5 times the correct one: the 1/temperature is missing: S = O E^T / tau, so both "
     "gradients carry a 1/tau (tau = 0.5 here). (checked on: O (6, 4)"),
], ids=["one-gradient", "softmax-axis-0", "dS-transposed", "no-g", "no-1/K", "no-1/tau"])
def test_cwt_slips_beyond_the_planted_ones_are_named(backward_of, words):
    ex = exercises.get(7)     # backward_of(O, T, tau, g, right): the answer's gradients
    message = flat(ex.check(wrong_backward(ex.reference)(backward_of)).message)
    assert words in message, message


def test_cwt_large_scores_case_is_described_and_checked():
    """The third case's scores overflow a naive exp (exp(710) is inf); its description
    says how large they are, and a loss wrong there alone fails on it."""
    ex = exercises.get(7)

    def cwt_loss(O, E_targets, temperature=1.0):
        loss, backward = ex.reference(O, E_targets, temperature)
        return loss + (temperature == 0.05), backward

    _, _, inputs = ex.check(cwt_loss).message.partition("\n(checked on: ")
    top = re.search(r"temperature=0\.05, scores up to (\d+)\)$", flat(inputs))
    assert top and int(top.group(1)) > 710, inputs


@pytest.mark.parametrize("extra, words", [
    (lambda n, copied: -4 * n, "one of weights, gradients or Adam's moments is missing"),
    (lambda n, copied: 4 * copied, "it counts the copies' weights, but a copy computes"),
    (lambda n, copied: 8 * copied, "it counts the copies' weights and gradients; a copy "
                                   "shares its root's array"),
], ids=["no-gradients", "copies-weights", "copies-weights-and-gradients"])
def test_tying_memory_names_a_wrong_training_total(extra, words):
    """Right counts and Adam bytes, and a training total off by what a slip adds."""
    ex = exercises.get(13)

    def tying_memory(config, state, mode):
        trainable, adam_bytes, training_bytes = ex.reference(config, state, mode)
        d = config.d_model
        block = 12 * d * d + (13 * d if config.bias else 2 * d)          # one layer's
        copied = sum(1 for i, s in enumerate(state) if s != i) * block   # copies' scalars
        return trainable, adam_bytes, training_bytes + extra(trainable, copied)

    result = ex.check(tying_memory)
    assert result.failed_step.startswith("training_bytes") and words in result.message, \
        result.report()


def test_tying_memory_names_float64_moments():
    ex = exercises.get(13)

    def tying_memory(config, state, mode):
        trainable, _, training_bytes = ex.reference(config, state, mode)
        return trainable, 2 * 8 * trainable, training_bytes

    result = ex.check(tying_memory)
    assert result.failed_step.startswith("adam_bytes") and \
        "the moments are float32 here, 4 bytes each, not 8" in result.message, result.report()


def test_a_number_returned_as_text_is_refused():
    """str(n) used to pass: NumPy reads "1234" as 1234.0."""
    ex = exercises.get(13)

    def tying_memory(config, state, mode):
        return tuple(str(n) for n in ex.reference(config, state, mode))

    result = ex.check(tying_memory)
    assert not result.passed and "`trainable` is a str" in flat(result.message), \
        result.report()


def test_the_tied_lms_head_part_transposed_is_named():
    """On the square E, where a transposed (V, D) part has the right shape."""
    ex = exercises.get(5)

    def head_transposed(E, ids, targets):
        loss, backward = ex.reference(E, ids, targets)

        def wrong(g):
            (grad,) = backward(g)
            if E.shape[0] != E.shape[1]:
                return (grad,)
            h = np.tanh(E[ids])                                   # (N, D)
            p = np.exp(h @ E.T)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(ids)), targets] -= 1.0
            head = (p * g / len(ids)).T @ h                       # dL/dE through the head
            return (grad - head + head.T,)
        return loss, wrong

    assert "the head's part is transposed" in ex.check(head_transposed).message


def test_the_tied_lm_without_tanhs_derivative_is_named():
    ex = exercises.get(5)

    def no_tanh_derivative(E, ids, targets):
        def backward(g):
            h = np.tanh(E[ids])                                   # (N, D)
            p = np.exp(h @ E.T)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(ids)), targets] -= 1.0
            p *= g / len(ids)
            grad = p.T @ h
            np.add.at(grad, ids, p @ E)                           # dx = dh
            return (grad,)
        return ex.reference(E, ids, targets)[0], backward

    assert "misses tanh's derivative" in ex.check(no_tanh_derivative).message


# ------------------------------------------------------------ the diagnoses


@pytest.mark.parametrize("got, want, words", [
    ((5, 4), (4, 5), "shape of w.T"),
    ((2, 3, 5, 4), (2, 3, 4, 5), "shape of w.T"),
    ((8, 3), (3,), "leading axes (8,)"),
    ((2, 4, 3), (1, 3), "stretched size-1 axes"),
    ((4, 3), (4, 1), "axis 1 has size 1"),
    ((4,), (4, 1), "drop an axis? Pass keepdims=True (or reshape to (4, 1))"),
    ((1, 6), (6,), "keep an axis (keepdims=True) that should go? Drop it"),
    ((1, 4, 3), (4, 1, 3), "in other places: reshape to (4, 1, 3)"),
    ((7,), (3,), "always has the shape of its input"),
])
def test_explain_shape_names_the_cause(got, want, words):
    msg = explain_shape("w", got, want)
    assert msg and words in msg
    assert explain_shape("w", want, want) is None


def test_explain_values_scale_transpose_and_parts():
    rng = np.random.default_rng(0)
    want = rng.standard_normal((3, 3))
    assert explain_values("w", want, want) is None
    assert "TRANSPOSE" in explain_values("w", want.T, want)
    assert "factor of 3" in explain_values("w", want / 3, want, uses=3)
    assert "wrong sign" in explain_values("w", -want, want)
    parts = {"use A": rng.standard_normal((3, 3)), "use B": rng.standard_normal((3, 3))}
    msg = explain_values("w", parts["use B"], parts["use A"] + parts["use B"], parts=parts)
    assert "misses use A" in msg and "SUM" in msg
    worst = want.copy()
    worst[1, 2] += 1.0
    assert "index (1, 2)" in explain_values("w", worst, want)


def _conv(x, shift):
    """out[t] = sum_k h[k] x[t - k - shift]: causal for shift >= 0; shift = -1 leaks."""
    h = np.array([0.5, -1.0, 0.25])
    out = np.zeros_like(x)
    for t in range(len(x)):
        for k in range(len(h)):
            s = t - k - shift
            if 0 <= s < len(x):
                out[t] += h[k] * x[s]
    return out


def test_trellis_weights_names_a_gate_order_and_a_stray_value_it_has_no_mistake_for():
    """Beyond the planted mistakes: a gate permutation that is not PyTorch's, and a value
    that is just wrong, which the check locates by array, gate and tap."""
    ex = exercises.get(12)
    reorder, reference = ex.module.reorder, ex.module.reference

    def o_and_i_swapped(w_ih, w_hh, b):
        return [reorder(a, (1, 0, 2, 3)) for a in reference(w_ih, w_hh, b)]

    message = flat(ex.check(o_and_i_swapped).message)
    assert ("the row blocks of `weight_x`, `weight_h` and `bias` come out in the gate order "
            "o, i, g, f") in message, message

    def one_wrong_value(w_ih, w_hh, b):
        weight_x, weight_h, bias = reference(w_ih, w_hh, b)
        weight_h = weight_h.copy()
        weight_h[2, 1] += 0.5                      # gate i, the z_{t-1} tap
        return weight_x, weight_h, bias

    message = flat(ex.check(one_wrong_value).message)
    assert "`weight_h` at index (2, 1) (gate i, the t-1 tap of z)" in message, message
    assert "With M = 1 it matched" in message        # W_hh first acts at two levels


def _trellis_answer(edit):
    """Exercise 12's reference weights passed through ``edit(weight_x, weight_h, bias, H)``."""
    def trellis_weights(w_ih, w_hh, b):
        return edit(*(a.copy() for a in exercises.get(12).reference(w_ih, w_hh, b)),
                    w_hh.shape[1])
    return trellis_weights


def _torch_order_bias(x, h, b, H):
    return x, h, np.concatenate([b[:H], b[3 * H:], b[2 * H:3 * H], b[H:2 * H]])


def _x_past_tap_value(x, h, b, H):
    x[7, 1] += 0.5                   # gate g (rows 6-8 at H = 3), the x_{t-1} tap (I = 2)
    return x, h, b


def _bias_value(x, h, b, H):
    b[4] -= 0.25
    return x, h, b


@pytest.mark.parametrize("edit, words, absent", [
    (_torch_order_bias, ["the rows of `bias` are still in PyTorch's gate order"], "`weight_"),
    (lambda x, h, b, H: (x, h, 0 * b),
     ["`bias`: the bias is zero: the LSTM's b must be carried over"], "gate order"),
    (_x_past_tap_value,
     ["with M = 1 level, your TrellisNet's output differs from the 1-truncated LSTM: first "
      "at t = 1,", "`weight_x` at index (7, 1) (gate g, the t-1 tap of x) is"], "M = 1 it"),
    (_bias_value, ["`bias` at index (4,) is"], "tap of"),
    (lambda x, h, b, H: (x[:, 2:], h, b),
     ["`weight_x` has shape (12, 2): one tap only", "2 x 2 columns"], "transpose"),
    (lambda x, h, b, H: (x, h.T, b), ["`weight_h` has shape (6, 12), the transpose of (12, 6)"],
     "one tap"),
    (lambda x, h, b, H: (x, h, b[:, None]),
     ["`bias` has shape (12, 1)", "keep an axis (keepdims=True) that should go"], "drop an"),
], ids=["bias-order", "zero-bias", "past-tap", "bias-value", "one-tap", "transposed",
        "column-bias"])
def test_trellis_weights_names_what_is_wrong(edit, words, absent):
    message = flat(exercises.get(12).check(_trellis_answer(edit)).message)
    for w in words:
        assert w in message, message
    assert absent not in message and message.count("the bias is zero") <= 1, message


def test_trellis_weights_every_entry_matters():
    """The check compares outputs, not weights: a change of 1e-6 to any one entry of the
    right weights must still fail it (the exercise's docstring says so)."""
    ex = exercises.get(12)
    shapes = [a.shape for a in ex.reference(*ex.module.case("I = 2, H = 3")["torch"])]
    for k, shape in enumerate(shapes):
        for index in np.ndindex(shape):
            def nudged(x, h, b, H):
                arrays = [x, h, b]
                arrays[k][index] += 1e-6 if arrays[k].shape == shape else 0.0  # this case's
                return arrays
            assert not ex.check(_trellis_answer(nudged)).passed, (k, index)


def _lora_forward(out):
    """Exercise 6's reference backward under the output ``out(X, A, B, u, v)``."""
    reference = exercises.get(6).reference
    return lambda *inputs: (out(*inputs), reference(*inputs)[1])


def _lora_grad(index, value):
    """Exercise 6's reference with gradient ``index`` replaced by ``value(grads, X, A, B,
    u, v, g)``."""
    def change(*args):                                    # X, A, B, u, v, g, grads
        grads = list(args[-1])
        grads[index] = value(grads, *args[:-1])
        return grads
    return wrong_backward(exercises.get(6).reference)(change)


# Gradients with a scale left out of the chain, written out: dY = g * v, dH = dY B,
# dP = dH * u, dX = dP A, grad_u = sum over rows of dH * (X A^T).
_X_WITHOUT_V = _lora_grad(0, lambda gr, X, A, B, u, v, g: ((g @ B) * u[:, None, :]) @ A)
_X_WITHOUT_U = _lora_grad(0, lambda gr, X, A, B, u, v, g: ((g * v[:, None, :]) @ B) @ A)
_U_WITHOUT_V = _lora_grad(3, lambda gr, X, A, B, u, v, g: ((g @ B) * (X @ A.T)).sum(axis=1))


@pytest.mark.parametrize("answer, words", [
    (_lora_forward(lambda X, A, B, u, v: ((X @ A.T) @ B.T) * v[:, None, :]),
     ["u is left out. u_l has r entries", "(checked on: L=3 layers, N=5 rows each, d=4, r=2"]),
    (_lora_forward(lambda X, A, B, u, v: ((X @ A.T) * u[:, None, :]) @ B.T),
     ["v is left out."]),
    (_lora_forward(lambda X, A, B, u, v: ((X @ A.T) * u) @ B.T * v[:, None, :]),
     ["operands could not be broadcast", "Hint: u_l has r entries and scales"]),
    (_X_WITHOUT_V, ["gradient for `X`", "v is left out of the chain"]),
    (_X_WITHOUT_U, ["gradient for `X`", "u is left out of the chain"]),
    (_lora_grad(3, lambda gr, *_: gr[3].sum(axis=0)),
     ["gradient for `u` has shape (2,)", "It equals the SUM over the layers of the right one"]),
    (_lora_grad(3, lambda gr, *_: gr[3].sum(axis=0, keepdims=True)),
     ["gradient for `u` has shape (1, 2)", "It equals the SUM over the layers"]),
    (_U_WITHOUT_V, ["gradient for `u`", "v is left out of the chain"]),
    (_lora_grad(4, lambda gr, *_: np.broadcast_to(gr[4].sum(axis=0), gr[4].shape)),
     ["gradient for `v`", "it gives every layer the SUM over all layers"]),
    (_lora_grad(1, lambda gr, X, *_: gr[1] / X.shape[1]),
     ["gradient for `A`", "each of a layer's N = 5 rows is a use of `A` too; SUM its gradient "
                          "over the rows, don't average."]),
    (_lora_grad(2, lambda gr, X, *_: gr[2] / X.shape[1] / X.shape[0]),
     ["gradient for `B`", "don't average. (And over the layers.)"]),
    (wrong_backward(exercises.get(6).reference)(lambda *args: args[-1][:4]),
     ["backward must return a tuple of 5 gradient(s), one per input (X, A, B, u, v); it "
      "returned 4."]),
    (_lora_grad(0, lambda gr, X, *_: gr[0] * (2.0 if len(X) == 4 else 1.0)),
     ["gradient for `X`", "(checked on: L=4 layers, N=1 rows each"]),
], ids=["no-u", "no-v", "u-unbroadcast", "grad-X-no-v", "grad-X-no-u", "grad-u-summed",
        "grad-u-summed-kept", "grad-u-no-v", "grad-v-sum-each", "grad-A-row-mean",
        "grad-B-mean", "four-grads", "second-case"])
def test_tied_lora_names_what_is_wrong(answer, words):
    """Exercise 6's diagnoses beyond the planted mistakes, each on the first place it shows."""
    message = flat(exercises.get(6).check(answer).message)
    for w in words:
        assert w in message, message


def _byte(delta):
    """A (total, embedding_head) slip made on byte-level configs only."""
    return lambda c: (delta(c),) * 2 if c.embedder == "byte" else (0, 0)


def _norm_width(c):
    return 2 if c.norm == "layer" and c.bias else 1


@pytest.mark.parametrize("slip, words", [
    (_byte(lambda c: c.vocab_size * c.d_model), "counts a (V, d) token table, but the "
                                                "byte-level model has none"),
    (_byte(lambda c: -10 * c.byte_dim * _norm_width(c)), "the byte blocks' norms are missing"),
    (_byte(lambda c: -c.byte_window * c.byte_dim), "a slot-position table is missing"),
    (lambda c: (c.d_model * (2 * c.n_layer + 1) * (c.norm == "rms"), 0),
     "counts an offset in every norm, but RMSNorm has a gain only"),
    (lambda c: ((c.vocab_size - c.context * c.learned_positions) * c.d_model, 0),
     "Two slips: (1) it counts the LM head separately"),
    (lambda c: (1, 0), "(+1). It is not one of the usual slips; compare your parts"),
], ids=["byte-token-table", "byte-norms", "slot-table", "rms-offsets", "two-slips",
        "unknown"])
def test_stlm_budget_names_slips_beyond_the_planted_ones(slip, words):
    """The learner's count is the right one plus ``slip(config)``: the check must say
    which slip (or two) that difference is, or give the right parts to compare with."""
    ex = exercises.get(11)

    def stlm_budget(config):
        (total, embedding_head), (dt, de) = ex.reference(config), slip(config)
        return total + dt, embedding_head + de

    message = flat(ex.check(stlm_budget).message)
    assert words in message, message


def _misread(**changes):
    """Exercise 11's reference run on the config with some settings misread."""
    return lambda c: exercises.get(11).reference(replace(c, **changes))


def _ffn_matrix(c):
    """One d -> h Linear of every FFN object, biases included."""
    h = ffn_width(c)
    return (1 if c.share_ffn else c.n_layer) * (c.d_model * h + h * c.bias)


def _linear_biases_forgotten(c):
    """Every bias left out but the LayerNorms' offsets (the first such case is token)."""
    total, head = _misread(bias=False)(c)
    offsets = (2 * c.n_layer + 1) * c.d_model if c.norm == "layer" and c.bias else 0
    return total + offsets, head


def _plus(delta):
    """Exercise 11's reference count plus ``delta(config)``: a whole answer."""
    return lambda c: tuple(r + d for r, d in zip(exercises.get(11).reference(c), delta(c)))


@pytest.mark.parametrize("answer, words", [
    (_misread(tie_embeddings=True), "the head is missing: with tie_embeddings=False"),
    (_misread(share_ffn=True), "it counts one FFN, but without share_ffn each of the 3 layers"),
    (_misread(norm="rms"), "the LayerNorm offsets are missing"),
    (_linear_biases_forgotten, "the Linear layers' biases are missing"),
    (_plus(lambda c: ((2 * c.n_layer + 1) * c.d_model * (c.norm == "layer" and not c.bias), 0)),
     "it counts an offset in every norm, but a LayerNorm without bias has a gain only"),
    (_misread(learned_positions=True), "it counts a position table, but with "
                                       "learned_positions=False"),
    (_plus(lambda c: (0, c.context * c.d_model * c.learned_positions)),
     "embedding_head includes the position table wpe"),
    (_misread(n_kv_head=None), "keys and values full width, but they have n_kv_head = 2 of "
                               "the 8 heads"),
    (_plus(lambda c: (-_ffn_matrix(c) * (c.ffn == "swiglu"), 0)),
     "the SwiGLU FFN has THREE matrices"),
    (_plus(lambda c: (_ffn_matrix(c) * (c.ffn == "mlp"), 0)), "a GELU MLP (ffn='mlp') has TWO"),
    (_plus(lambda c: (-(2 * c.n_layer + 1) * c.d_model * _norm_width(c)
                      - 10 * c.byte_dim * _norm_width(c), -10 * c.byte_dim * _norm_width(c))
           if c.embedder == "byte" else (0, 0)),
     "the norms are missing, in the core (2 L + 1 of width d) and in every byte block"),
    (_plus(_byte(lambda c: -(2 * c.byte_dim * _norm_width(c) + 12 * c.byte_dim ** 2
                             + 9 * c.byte_dim * c.bias))),
     "a byte block is missing: the decoder has TWO blocks B(c, c, 4 c)"),
    (_plus(_byte(lambda c: 1)),
     "(+1). It is not one of the usual slips; compare your parts with the right ones: byte "
     "embedder"),
], ids=["head-missing", "one-ffn", "ln-offsets", "linear-biases", "ln-no-bias-offsets",
        "rope-table", "wpe-in-head", "gqa", "swiglu-two", "mlp-three", "all-norms",
        "decoder-block", "unknown-byte"])
def test_stlm_budget_names_every_slip_it_knows(answer, words):
    """Each slip in the checker's list is the one it names, on the first case it shows in,
    as one slip (two others may add up to it)."""
    message = flat(exercises.get(11).check(answer).message)
    assert words in message and "Two slips" not in message, message


def _head_only(delta):
    """A slip made in embedding_head alone: the total is right."""
    return _plus(lambda c: (0, delta(c)[1]))


@pytest.mark.parametrize("answer, words", [
    (_head_only(lambda c: (0, c.vocab_size * c.d_model * c.tie_embeddings)),
     "counts the LM head separately"),
    (_head_only(_byte(lambda c: c.vocab_size * c.d_model)), "counts a (V, d) token table"),
    (_head_only(_byte(lambda c: -10 * c.byte_dim * _norm_width(c))),
     "the byte blocks' norms are missing"),
    (_head_only(_byte(lambda c: -c.byte_window * c.byte_dim)), "a slot-position table is "
                                                                "missing"),
    (_head_only(_byte(lambda c: -(2 * c.byte_dim * _norm_width(c) + 12 * c.byte_dim ** 2
                                  + 9 * c.byte_dim * c.bias))), "a byte block is missing"),
], ids=["tied-head", "byte-token-table", "byte-norms", "slot-table", "decoder-block"])
def test_stlm_budget_names_a_slip_in_embedding_head_alone(answer, words):
    """A right total with a wrong embedding_head: the slip is named for embedding_head,
    as one slip (two others may add up to it)."""
    message = flat(exercises.get(11).check(answer).message)
    assert message.startswith("your `embedding_head` is") and words in message, message
    assert "Two slips" not in message, message


def _stlm_cases():
    """Every config exercise 11 checks, by the label its messages give."""
    ex = exercises.get(11).module
    small = {name: STLMConfig(**fields) for name, fields in {**ex.TOKEN_CASES,
                                                              **ex.BYTE_CASES}.items()}
    paper = {f"the paper, {name}": c for name, c in ex.paper_configs().items()}
    return {**small, **paper}


@pytest.mark.parametrize("name", list(_stlm_cases()))
def test_stlm_budget_checks_every_case(name):
    """A count wrong on one config only fails, on that config, and the message names it
    (with the byte window and width where the model has them)."""
    ex, config = exercises.get(11), _stlm_cases()[name]

    def stlm_budget(c):
        total, head = ex.reference(c)
        return total + (c == config), head

    said, _, inputs = ex.check(stlm_budget).message.partition("\n(checked on: ")
    assert "(+1)" in flat(said) and flat(inputs).startswith(f"{name}: V={config.vocab_size},")
    if config.embedder == "byte":
        assert f"W={config.byte_window}, c={config.byte_dim}" in flat(inputs)
    assert ("The paper: " in said) == name.startswith("the paper")


@pytest.mark.parametrize("total, words", [("55.89M", "is the string '55.89M'"),
                                          (10.5, "a count is a whole number"),
                                          ([1, 2], "is a list, not a number")])
def test_stlm_budget_wants_an_int(total, words):
    message = exercises.get(11).check(lambda config: (total, 0)).message
    assert words in flat(message), message


def _modal_answer(edit_y):
    """Exercise 9's reference step with its output passed through ``edit_y(y, r, s, u)``."""
    def modal_step(u_t, state, poles, residues, direct):
        y_t, new_state = exercises.get(9).reference(u_t, state, poles, residues, direct)
        return edit_y(y_t.copy(), residues, state, u_t), new_state
    return modal_step


def _first_off_by_one(y, r, s, u):
    y[0] += 1.0
    return y


@pytest.mark.parametrize("edit_y, words", [
    (lambda y, r, s, u: r * s, ["`y_t` has shape (3, 2)", "Sum over the modes"]),
    (lambda y, r, s, u: (r * s).sum(-1), ["`y_t` is complex", "take np.real"]),
    (lambda y, r, s, u: "y", ["`y_t` is a str, not an array of numbers"]),
    (_first_off_by_one, ["`y_t` is wrong: at index (0,) it is", "the correct value is"]),
], ids=["modes-not-summed", "complex", "text", "one-value"])
def test_modal_step_names_a_wrong_output(edit_y, words):
    message = flat(exercises.get(9).check(_modal_answer(edit_y)).message)
    for w in words:
        assert w in message, message


def _modal(y_t, new_state):
    """An exercise 9 answer from two formulas of (u, s, p, r, d)."""
    def modal_step(u_t, state, poles, residues, direct):
        args = (u_t, state, poles, residues, direct)
        return y_t(*args), new_state(*args)
    return modal_step


def right_y(u, s, p, r, d):
    return np.real((r * s).sum(-1)) + d * u


def right_state(u, s, p, r, d):
    return p * s + u[..., None]


@pytest.mark.parametrize("y_t, new_state, words", [
    (lambda u, s, p, r, d: np.real((r * right_state(u, s, p, r, d)).sum(-1)), right_state,
     "reads the state AFTER this token's update (an off-by-one in time: y_t uses s_{t-1}) "
     "and misses the direct term"),
    (lambda u, s, p, r, d: (r.real * s.real).sum(-1) + d * u, right_state,
     "it multiplies the real parts, Re(R) Re(s)"),
    (right_y, lambda u, s, p, r, d: p * s, "the input u_t is not added to the state."),
    (right_y, lambda u, s, p, r, d: p * (s + u[..., None]), "u_t is multiplied by lambda"),
], ids=["after-update-no-direct", "real-parts", "no-input", "input-decayed"])
def test_modal_step_names_slips_beyond_the_planted_ones(y_t, new_state, words):
    message = flat(exercises.get(9).check(_modal(y_t, new_state)).message)
    assert words in message, message


def test_modal_step_takes_a_complex_output_whose_imaginary_part_is_zero():
    assert exercises.get(9).check(_modal(lambda *a: right_y(*a) + 0j, right_state)).passed


def _with_grad(ex, edit, index=0):
    """Exercise ``ex``'s reference with gradient ``index`` of its backward passed through
    ``edit(grad, *inputs)``."""
    def answer(*inputs, **kwargs):
        out, backward = ex.reference(*inputs, **kwargs)

        def edited(g):
            grads = backward(g)
            many = isinstance(grads, tuple)
            grads = list(grads) if many else [grads]
            grads[index] = edit(grads[index].copy(), *inputs)
            return tuple(grads) if many else grads[0]
        return out, edited
    return answer


def _padding_leaks(g, logits, target, ignore_index=-100):
    g[target == ignore_index] += 0.1
    return g


def _first_row_dropped(g, logits, target, ignore_index=-100):
    g[np.flatnonzero(target != ignore_index)[0]] = 0.0
    return g


@pytest.mark.parametrize("number, edit, index, words", [
    (3, _padding_leaks, 0, "rows [2, 5] have target == ignore_index (-100): they are padding"),
    (3, _first_row_dropped, 0, "rows [0] (targets [1]) got a zero gradient"),
    (5, lambda g, *_: 2 * g, 0, "is 2 times too large (2 is the number of its uses)"),
    (5, lambda g, *_: 0 * g, 0, "is all zeros: no gradient reaches it"),
    (6, lambda g, X, *_: np.stack([g / len(X)] * len(X)), 1,
     "has shape (3, 2, 4): one (2, 4) slice per layer. `A` is tied"),
], ids=["padding-leaks", "row-dropped", "use-counted-twice", "all-zeros", "tied-per-layer"])
def test_gradient_slips_beyond_the_planted_ones_are_named(number, edit, index, words):
    ex = exercises.get(number)
    message = flat(ex.check(_with_grad(ex, edit, index)).message)
    assert words in message, message


def test_explain_causality_finds_leaks_and_off_by_one():
    x = np.random.default_rng(1).standard_normal(8)
    assert explain_causality(lambda v: _conv(v, 0), x) is None
    leak = explain_causality(lambda v: _conv(v, -1), x)
    assert leak and "one step after it" in leak and "off-by-one" in leak
    assert "not causal" in explain_causality(lambda v: v[::-1].copy(), x)
    late = explain_causality(lambda v: _conv(v, 1), x)
    assert late and "one step too far" in late


# --------------------------------------------------------------------- CLI


def test_cli_round_trip_every_exercise(tmp_path, capsys):
    """start writes the stub; the stub fails; filled in with the reference, it passes."""
    for ex in EXERCISES:
        assert cli.main(["exercise", "start", str(ex.number), "--dir", str(tmp_path)]) == 0
        path = tmp_path / ex.stub_filename
        assert f"exercise check {ex.number}" in capsys.readouterr().out
        assert cli.main(["exercise", "check", str(ex.number), str(path)]) == 1
        assert "not written yet" in flat(capsys.readouterr().out)
        path.write_text(path.read_text() + "\n\n" + solution_source(ex))
        assert cli.main(["exercise", "check", str(ex.number), str(path)]) == 0, \
            capsys.readouterr().out
        assert "Passed" in capsys.readouterr().out


def test_cli_check_defaults_to_the_stub_name_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ex = exercises.get(1)
    assert cli.main(["exercise", "start", "1"]) == 0
    (tmp_path / ex.stub_filename).write_text("import numpy as np\n\n" + solution_source(ex))
    assert cli.main(["exercise", "check", "1"]) == 0
    assert "Passed" in capsys.readouterr().out


def test_cli_start_refuses_to_overwrite_without_force(tmp_path, capsys):
    ex = exercises.get(2)
    path = tmp_path / ex.stub_filename
    path.write_text("# my work\n")
    assert cli.main(["exercise", "start", "2", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]
    assert path.read_text() == "# my work\n"
    assert cli.main(["exercise", "start", "2", "--dir", str(tmp_path), "--force"]) == 0
    assert f"def {ex.function}(" in path.read_text()


WRONG_MATMUL = """\
import numpy as np


def matmul(a, b):
    out = a @ b

    def backward(g):
        return g @ b.T, g.swapaxes(-1, -2) @ a

    return out, backward
"""


@pytest.mark.parametrize("source, code, words", [
    (WRONG_MATMUL, 1, ["FAIL", "the shape of b.T", "Did you transpose?"]),
    ("import numpy as np\ndef matmul(a, b)\n    return a\n", 1,
     ["cannot check", "line 2", "def matmul(a, b)"]),
    ("import numpyy\n", 1, ["cannot check", "ModuleNotFoundError", "line 1"]),
    ("def mat_mul(a, b):\n    return a\n", 1, ["defines no function `matmul`", "mat_mul"]),
    ("matmul = 3\n", 1, ["cannot check", "`matmul` is a int, not a function"]),
    (b"\xff\xfe not UTF-8", 1, ["cannot check", "cannot be read", "utf-8"]),
    (None, 2, ["no such file"]),
])
def test_cli_check_wrong_missing_or_broken_files(tmp_path, capsys, source, code, words):
    path = tmp_path / "answer.py"
    if isinstance(source, bytes):
        path.write_bytes(source)
    elif source is not None:
        path.write_text(source)
    assert cli.main(["exercise", "check", "2", str(path)]) == code
    captured = capsys.readouterr()
    text = flat(captured.out + captured.err)
    assert "Traceback" not in text
    for w in words:
        assert w in text, text
    if code == 2 or source != WRONG_MATMUL:        # errors: a line or two on stderr
        assert 1 <= len(captured.err.strip().splitlines()) <= 2 and not captured.out


@pytest.mark.parametrize("args, words", [
    (["exercise"], "list, start N or check N"),
    (["exercise", "start", "99"], "no exercise 99"),
    (["exercise", "check", "x"], "invalid int value"),
    (["exercise", "frobnicate"], "invalid choice"),
])
def test_cli_exercise_usage_errors_are_one_line(capsys, args, words):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanotie: error:") and words in err[0]


@pytest.mark.parametrize("seconds", ["abc", "0", "-1", "nan", "inf", ""])
def test_a_time_limit_that_is_not_a_positive_number_is_a_usage_error(
        tmp_path, monkeypatch, capsys, seconds):
    """Said in a line about the variable, not a traceback nor "did not finish within 0 s"."""
    path = tmp_path / "answer.py"
    path.write_text(solution_source(exercises.get(2)))
    monkeypatch.setenv("NANOTIE_CHECK_SECONDS", seconds)
    assert cli.main(["exercise", "check", "2", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nanotie: error: NANOTIE_CHECK_SECONDS="
                                               f"{seconds!r}: the time limit"), err


def test_a_check_without_a_limit_takes_the_variables_and_a_fraction_of_a_second_is_one(
        tmp_path, monkeypatch):
    path = tmp_path / "answer.py"
    path.write_text(matmul_file(in_function="while True:\n        pass"))
    monkeypatch.setenv("NANOTIE_CHECK_SECONDS", "0.5")
    assert "did not finish within 0.5 s" in check_file(exercises.get(2), path).problem


def test_a_stub_is_not_written_over_unless_forced(tmp_path):
    ex = exercises.get(2)
    path = files.write_stub(ex, tmp_path)
    path.write_text("my work")
    with pytest.raises(files.StubExistsError):
        files.write_stub(ex, tmp_path)
    assert path.read_text() == "my work"
    assert files.write_stub(ex, tmp_path, force=True).read_text() == stub_text(ex)


def test_cli_exercise_list_and_load_errors():
    result = subprocess.run([sys.executable, "-m", "nanotie", "exercise", "list"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for ex in EXERCISES:
        assert ex.title in result.stdout and ex.stub_filename in result.stdout
    with pytest.raises(LearnerFileError, match="no such file"):
        load_function("/nonexistent/answer.py", "matmul")


def test_the_walkthrough_shows_what_exercise_list_prints(capsys):
    readme = open(os.path.join(os.path.dirname(exercises.__file__), "README.md")).read()
    shown = readme.split("$ python -m nanotie exercise list\n", 1)[1].split("\n\n", 1)[0]
    assert cli.main(["exercise", "list"]) == 0
    assert capsys.readouterr().out.startswith(shown + "\n"), shown


def test_the_top_readmes_quoted_diagnoses_are_what_the_checkers_say():
    """README.md quoted diagnoses that no checker printed ("off by a factor of 3, the
    number of layers: is the tied weight's gradient summed?")."""
    readme = open(os.path.join(os.path.dirname(exercises.__file__), "..", "..", "README.md"))
    said = " ".join(readme.read().split()).split("says WHAT: ", 1)[1].split(" | # |")[0]
    quotes = re.findall(r'"([^"]+)"', said)
    messages = [" ".join(ex.check(m.fn).message.split()) for ex in EXERCISES
                for m in ex.module.MISTAKES]
    assert len(quotes) == 3 and all(any(q in m for m in messages) for q in quotes), quotes


# ---------------------------------------- a check cannot be fooled, nor hang the grader

RIGHT_MATMUL = """\
import numpy as np


def matmul(a, b):
    out = a @ b

    def backward(g):
        {in_backward}
        ga = g @ np.swapaxes(b, -1, -2)
        gb = np.swapaxes(a, -1, -2) @ g
        while gb.ndim > b.ndim:
            gb = gb.sum(axis=0)
        return ga, gb

    {in_function}
    return out, backward
"""


def matmul_file(at_import="", in_function="", in_backward=""):
    return at_import + "\n" + RIGHT_MATMUL.format(in_function=in_function or "pass",
                                                  in_backward=in_backward or "pass")


@pytest.mark.parametrize("source, words", [
    (matmul_file(), ["Passed"]),
    (matmul_file(at_import="import sys; sys.exit(0)"), ["SystemExit", "line 1"]),
    (matmul_file(at_import="import os; os._exit(0)"), ["ended the check", "exit status 0"]),
    (matmul_file(in_function="import sys; sys.exit(0)"), ["SystemExit", "sys.exit()"]),
    (matmul_file(in_function="import os; os._exit(0)"), ["ended the check", "os._exit"]),
    (matmul_file(in_backward="import sys; sys.exit(0)"), ["backward(g)", "SystemExit"]),
    (matmul_file(in_backward="import os; os._exit(0)"), ["ended the check"]),
    (matmul_file(at_import="class Stop(BaseException):\n    pass\nraise Stop('no')"),
     ["importing answer.py raised Stop: no"]),
    (matmul_file(in_backward="raise KeyboardInterrupt"), ["interrupted"]),
], ids=["right", "exit-import", "_exit-import", "exit-function", "_exit-function",
        "exit-backward", "_exit-backward", "baseexception-import", "ctrl-c-backward"])
def test_a_check_passes_only_when_the_checker_says_so(tmp_path, capsys, source, words):
    """A grader goes by the exit status: a file that exits with status 0 (at import, in
    the function, in the backward) must not pass, and each way says why in a line or
    two, never a traceback."""
    path = tmp_path / "answer.py"
    path.write_text(source)
    code = cli.main(["exercise", "check", "2", str(path)])
    captured = capsys.readouterr()
    text = flat(captured.out + captured.err)
    assert "Traceback" not in text
    for w in words:
        assert w in text, text
    if words == ["Passed"]:
        assert code == 0
        return
    assert code == 1 and "Passed" not in text
    if captured.err:
        assert len(captured.err.strip().splitlines()) <= 2, captured.err


def test_an_endless_loop_is_stopped_by_the_time_limit(tmp_path):
    """In a subprocess, so that a check without a limit fails this test instead of
    hanging the suite."""
    path = tmp_path / "answer.py"
    path.write_text(matmul_file(in_function="while True:\n        pass"))
    env = {**os.environ, "NANOTIE_CHECK_SECONDS": "2"}
    result = subprocess.run([sys.executable, "-m", "nanotie", "exercise", "check", "2",
                             str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "did not finish within 2 s" in err[0], result.stderr


def test_a_check_out_of_time_or_killed_leaves_no_process_behind(tmp_path, monkeypatch):
    children = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            children.append(self)

    monkeypatch.setattr(files.subprocess, "Popen", Recorded)
    path = tmp_path / "answer.py"
    path.write_text(matmul_file(in_function="while True:\n        pass"))
    assert "did not finish within 1 s" in check_file(exercises.get(2), path, 1.0).problem
    path.write_text(matmul_file(in_function="import os, signal; os.kill(os.getpid(), "
                                            "signal.SIGKILL)"))
    assert "(killed by signal 9)" in check_file(exercises.get(2), path).problem
    assert len(children) == 2 and all(c.returncode is not None for c in children)


def test_a_grading_script_without_a_main_guard_runs_once(tmp_path):
    """The check's child is a fresh interpreter: it does not run the calling script
    again, as multiprocessing's spawn and fork server do."""
    (tmp_path / "answer.py").write_text(matmul_file(in_function="raise ValueError('no')"))
    (tmp_path / "grade.py").write_text(
        "from nanotie import exercises\nfrom nanotie.exercises.files import check_file\n"
        "print('top level')\nprint(check_file(exercises.get(2), 'answer.py').passed)\n")
    result = subprocess.run([sys.executable, "grade.py"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.stdout.split() == ["top", "level", "False"], result.stdout + result.stderr
    assert "ended the check" not in result.stderr


def test_the_checks_child_imports_from_where_the_caller_does(tmp_path):
    """A module the calling script put on sys.path is importable in the learner's file."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("MESSAGE = 'no'\n")
    (tmp_path / "answer.py").write_text(
        "from helper import MESSAGE\n" + matmul_file(in_function="raise ValueError(MESSAGE)"))
    (tmp_path / "grade.py").write_text(
        "import sys\nsys.path.insert(0, 'lib')\nfrom nanotie import exercises\n"
        "from nanotie.exercises.files import check_file\n"
        "found = check_file(exercises.get(2), 'answer.py')\nprint(found.problem)\n")
    result = subprocess.run([sys.executable, "grade.py"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.stdout.strip() == "None", result.stdout + result.stderr


def test_a_learners_file_may_use_dataclasses_and_leaves_no_module_behind(tmp_path):
    path = tmp_path / "answer.py"
    path.write_text("from __future__ import annotations\n\n"       # string annotations:
                    "from dataclasses import dataclass\n\n\n"      # dataclass looks up
                    "@dataclass\nclass Pair:\n    a: float\n\n\n"   # the module by name
                    "def matmul(a, b):\n    return Pair(a).a @ b\n")
    before = set(sys.modules)
    assert np.array_equal(load_function(path, "matmul")(np.eye(2), np.ones((2, 2))),
                          np.ones((2, 2)))
    assert set(sys.modules) == before


def test_a_missing_function_lists_only_the_files_own_public_functions(tmp_path):
    path = tmp_path / "answer.py"
    path.write_text("from math import sqrt\n\n\ndef _helper(a):\n    return a\n\n\n"
                    "def mat_mul(a, b):\n    return a\n")
    with pytest.raises(LearnerFileError, match=r"defines no function `matmul` \(it defines: "
                                                r"mat_mul\);"):
        load_function(path, "matmul")


def test_exercise_start_makes_the_folder_it_is_given(tmp_path):
    folder = tmp_path / "course" / "week1"
    assert cli.main(["exercise", "start", "1", "--dir", str(folder)]) == 0
    assert (folder / exercises.get(1).stub_filename).is_file()


def test_a_baseexception_in_learner_code_is_a_mistake_in_process():
    class Stop(BaseException):
        pass

    def matmul(a, b):
        raise Stop("halt")

    result = exercises.get(2).check(matmul)
    assert not result.passed and "raised Stop: halt" in result.message


# ------------------------------------------------ messages that say what is wrong


def test_a_float32_answer_is_told_to_work_in_float64():
    """Not "1 times the correct one" nor "finite differences disagree": the dtype."""
    ex = exercises.get(2)

    def matmul(a, b):
        out, backward = ex.reference(a.astype(np.float32), b.astype(np.float32))
        return out, lambda g: backward(g.astype(np.float32))

    msg = flat(ex.check(matmul).message)
    assert "float32" in msg and "work in float64" in msg
    assert "times the correct one" not in msg


def test_a_float32_backward_under_gradcheck_is_told_to_work_in_float64():
    from nanotie.exercises.checking import Checker, Mistake, learner_op, leaves

    def matmul(a, b):      # float32 inside, float64 out: only gradcheck can see it
        a32, b32 = a.astype(np.float32), b.astype(np.float32)

        def backward(g):
            g32 = g.astype(np.float32)
            return g32 @ b32.T, a32.T @ g32
        return (a32 @ b32).astype(np.float64), backward

    rng = np.random.default_rng(0)
    with pytest.raises(Mistake, match="work in float64"):
        Checker("t").expect_gradcheck(learner_op(matmul, "matmul"),
                                      leaves(rng.normal(size=(3, 4)), rng.normal(size=(4, 2))))


@pytest.mark.parametrize("edit, words", [
    ("in_backward", ["changed the upstream gradient g IN PLACE", "must only read g"]),
    ("in_function", ["changed its input `a` IN PLACE"]),
])
def test_an_in_place_edit_is_named(tmp_path, edit, words):
    """A backward that scales g in place (or a forward that shifts its input) gives the
    right numbers on copies, and wrong ones where the engine shares the array."""
    code = {"in_backward": "g *= 2.0\n        g /= 3.0", "in_function": "a -= 1.0"}[edit]
    path = tmp_path / "answer.py"
    path.write_text(matmul_file(**{edit: code}))
    msg = flat(exercises.get(2).check(load_function(path, "matmul")).message)
    for w in words:
        assert w in msg, msg


# ------------------------------------------------- the notebooks' own exercises

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "notebooks")


@pytest.fixture(scope="module")
def notebook_before_exercise(tmp_path_factory):
    """run(notebook, name) -> (the namespace after the cells before the stub of ``name``,
    the code cells from the stub through the cell that checks it); each notebook's
    cells run once, in quick mode, as a script."""
    jupytext = pytest.importorskip("jupytext")
    runs = {}

    def run(notebook: str, name: str):
        if notebook not in runs:
            code = [c.source for c in jupytext.read(os.path.join(NOTEBOOK_DIR, notebook))
                    .cells if c.cell_type == "code"]
            stub = next(i for i, c in enumerate(code) if f"def {name}(" in c)
            check = next(i for i, c in enumerate(code) if f'unwritten("{name}")' in c)
            namespace = {"__name__": "__main__"}
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("NANOTIE_QUICK", "1")
                mp.setenv("MPLBACKEND", "Agg")
                mp.chdir(tmp_path_factory.mktemp("notebook"))
                for cell in code[:stub]:
                    exec(compile(cell, notebook, "exec"), namespace)
            runs[notebook] = namespace, code[stub:check + 1]
        return runs[notebook]

    yield run
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.mark.parametrize("notebook, answer, words", [
    ("00_autograd.py", "def softplus_backward(a, g):\n    return g / (1 + np.exp(-a))",
     "softplus_backward must return a tuple of exactly one gradient, (grad_a,); it "
     "returned a ndarray"),
    ("00_autograd.py", "def softplus_backward(a, g):\n    return (g * 0.5 * (1 + np.tanh(a)),)",
     "gradcheck failed for 'softplus'"),
    ("00_autograd.py", "def softplus_backward(a, g):\n    return (g / (1 + np.exp(-a)),)",
     "overflow encountered in exp"),           # right values, but the cell asks for no overflow
    ("01_nn_and_tying.py", "def share_first_block(model):\n"
                           "    model.blocks = [model.blocks[0]] * len(model.blocks)\n"
                           "    return model",
     "model.blocks is now a list, which a Module does not register"),
    ("01_nn_and_tying.py", "import copy\ndef share_first_block(model):\n"
                           "    for i in range(1, len(model.blocks)):\n"
                           "        model.blocks[i] = copy.deepcopy(model.blocks[0])\n"
                           "    return model",
     "slot(s) [1, 2] hold another object than model.blocks[0]"),
    ("01_nn_and_tying.py", "def share_first_block(model):\n"
                           "    for i in range(1, len(model.blocks)):\n"
                           "        model.blocks[i] = model.blocks[0]",
     "share_first_block must return the model, not None"),
], ids=["softplus-bare-array", "softplus-wrong", "softplus-overflows", "blocks-new-list",
        "blocks-deepcopy", "blocks-no-return"])
def test_a_wrong_answer_to_a_notebooks_own_exercise_stops_it_with_what_is_wrong(
        notebook_before_exercise, notebook, answer, words):
    """notebooks/README.md promises it: a message that names the mistake, not a bare
    AssertionError or an IndexError from inside the engine."""
    name = re.search(r"def (\w+)\(", answer).group(1)
    namespace, cells = notebook_before_exercise(notebook, name)
    namespace = dict(namespace)
    with pytest.raises(Exception) as info:
        for cell in [answer] + cells[1:]:
            exec(compile(cell, notebook, "exec"), namespace)
    assert words in " ".join(str(info.value).split()), info.value


def test_a_notebook_numbers_an_exercise_by_the_checker_it_runs():
    """"Exercise N" in a notebook is `exercise check N`; a notebook's own exercise has
    no number, so that it cannot be taken for the CLI's exercise of that number."""
    for name in sorted(os.listdir(NOTEBOOK_DIR)):
        if not name.endswith(".py"):
            continue
        text = open(os.path.join(NOTEBOOK_DIR, name)).read()
        checked = {fn: int(n) for n, fn in re.findall(
            r"exercises\.get\((\d+)\)\.check_in_notebook\((\w+)\)", text)}
        for n, fn in re.findall(r"# -+ EXERCISE (\d+): your code here -*\ndef (\w+)\(", text):
            assert checked.get(fn) == int(n), f"{name}: EXERCISE {n} is {fn}"
        for n in re.findall(r"^# #+ .*\bExercise (\d+)\b", text, re.M):
            assert int(n) in checked.values(), f"{name}: a heading says Exercise {n}"
