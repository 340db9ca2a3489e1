"""The checking toolkit under the exercises (``exercises/checking.py`` and
``exercises/diagnose.py``), one behaviour at a time: what a report shows, which error
becomes which message, and which diagnosis each kind of wrong array gets.

The exercises' own tests (``test_exercises.py``) run whole checks; these pin the parts
a whole check can pass over, such as a second inner frame or a fourth argument.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from nanotie import exercises
from nanotie.exercises.checking import (Checker, Mistake, as_array, describe_exception,
                                        explain_in_place, learner_op, leaves, softmax_rows,
                                        xent_rows)
from nanotie.exercises.diagnose import explain_causality, explain_shape, explain_values, your
from nanotie.exercises.files import load_function


def failing_check(title="t"):
    """A check whose first step passes with a case set and whose second fails."""
    with Checker(title) as c:
        with c.step("first"):
            c.case = "x = 1"
        with c.step("second"):
            raise Mistake("the second step's problem")
    return c.result


def mistake_of(fn, *args, **kwargs) -> str:
    """The message of the Mistake that ``fn(*args, **kwargs)`` raises, unwrapped."""
    with pytest.raises(Mistake) as info:
        fn(*args, **kwargs)
    return " ".join(str(info.value).split())


# ------------------------------------------------------------------ the report


def test_a_report_lists_the_passed_steps_then_the_failure_and_what_to_do():
    result = failing_check("Exercise 0")
    assert result.report().splitlines() == [
        "Exercise 0", "  ok    first", "  FAIL  second",
        "        the second step's problem",
        "Not passed yet: fix this one, then check again."]
    assert not result.unwritten


def test_a_case_is_shown_only_with_the_step_that_set_it():
    assert "checked on" not in failing_check().message      # set by the step before
    with Checker("t") as c:
        with c.step("one"):
            c.case = "a of shape (2, 3)"
            raise Mistake("wrong")
    assert c.result.message == "wrong\n(checked on: a of shape (2, 3))"


def test_a_passed_check_is_not_unwritten():
    result = exercises.get(2).check(exercises.get(2).reference)
    assert result.passed and not result.unwritten


# ------------------------------------------------------------------ the answer


def test_an_output_of_the_wrong_shape_is_a_mistake():
    msg = mistake_of(Checker("t").expect_shape, np.zeros((2, 3)), (3, 2), "f(x)")
    assert "your output of `f(x)` has shape (2, 3)" in msg and "the transpose" in msg


def test_none_is_named_with_the_shape_to_return():
    msg = mistake_of(as_array, None, (2, 5), "w", "gradient")
    assert msg == "your gradient for `w` is None. Return an array of shape (2, 5)."
    msg = mistake_of(as_array, None, (), "trainable", "count")       # a loss, a count
    assert msg == "your count of `trainable` is None. Return a number."


def test_returning_the_wrong_number_of_items_is_named():
    msg = mistake_of(Checker("t").forward, lambda a: (a, lambda g: g, a), np.ones(2),
                     what="f(a)")
    assert "must return a tuple of 2: (out, backward); it returned a tuple of length 3" in msg


@pytest.mark.parametrize("names, wanted", [(["a", "b"], "return grad_a, grad_b"),
                                           (["logits"], "return grad_logits,")])
def test_a_backward_that_returns_none_is_told_what_to_return(names, wanted):
    msg = mistake_of(Checker("t").per_input, None, names)
    assert msg == f"backward(g) returned None: did you forget `{wanted}`?"


def test_a_bare_array_is_the_one_gradient_of_a_one_input_op():
    g = np.ones(3)
    grads = Checker("t").per_input(g, ["x"])
    assert len(grads) == 1 and grads[0] is g


def test_a_wrong_float32_answer_is_told_both_problems_and_a_float64_one_one():
    want = np.arange(4.0)
    both = mistake_of(Checker("t").expect_array, (2 * want).astype(np.float32), want, "w",
                      "gradient")
    assert "has dtype float32" in both and "Apart from that:" in both and "2 times" in both
    one = mistake_of(Checker("t").expect_array, 2 * want, want, "w", "gradient")
    assert "dtype" not in one and "2 times the correct one" in one


# ------------------------------------------------------ errors in learner code


@pytest.mark.parametrize("raise_it, words", [
    (lambda: sys.exit(0), "Hint: sys.exit() or exit() ends the check"),
    (lambda: np.ones(3) + np.ones(4), "Hint: two arrays' shapes do not line up"),
    (lambda: np.ones((4, 3, 2)) + np.ones((4, 1, 3)),
     "a sum or mean without keepdims=True, or an array that needs a new axis to broadcast "
     "(x[..., None])?"),
    (lambda: np.ones((3, 4)) * np.ones((4, 3)),
     "the shapes (3,4) and (4,3) are transposes of each other: one of the arrays probably "
     "needs a transpose"),
    (lambda: np.ones((2, 3, 4)) - np.ones((2, 4, 3)),      # (the message quotes this line)
     "the shapes (2,3,4) and (2,4,3) are transposes of each other"),
    (lambda: np.ones((2, 3)) @ np.ones((2, 3)), "one of them probably needs a transpose"),
], ids=["exit", "broadcast", "new-axis", "transposed", "transposed-batch", "matmul"])
def test_an_error_gets_the_hint_for_its_kind(raise_it, words):
    assert words in mistake_of(Checker("t").call, raise_it, what="f(x)")


def test_an_error_that_only_mentions_matmul_gets_no_hint():
    def fn():
        raise ValueError("matmul(a, b) got a list")

    assert "Hint" not in mistake_of(Checker("t").call, fn, what="f(x)")


def test_an_error_points_at_the_innermost_line_of_the_learners_file(tmp_path):
    """Not at NumPy's frame where it raised, and not at every frame of theirs."""
    path = tmp_path / "mine.py"
    path.write_text("import numpy as np\n\n\ndef helper(a):\n"
                    "    return np.reshape(a, (7,))\n\n\ndef f(a):\n    return helper(a)\n")
    f = load_function(path, "f")
    try:
        f(np.ones(3))
    except ValueError as exc:
        text = describe_exception(exc, "f(a)")
    assert text.startswith("`f(a)` raised ValueError")
    assert "(mine.py, line 5: return np.reshape(a, (7,)))" in text
    assert text.count("mine.py") == 1 and "fromnumeric" not in text


@pytest.mark.parametrize("what, i, words", [
    ("matmul(a, b)", 1, "changed its input `b` IN PLACE"),
    ("f(x)", 1, "changed its input argument 2 IN PLACE"),
    ("f(x)", 3, "changed its input argument 4 IN PLACE"),
    ("backward(g)", 0, "changed the upstream gradient g IN PLACE"),
])
def test_an_in_place_edit_names_the_argument(what, i, words):
    assert words in explain_in_place(what, i)


# ------------------------------------------------------ under gradcheck


def square(x):
    return x * x, lambda g: 2 * x * g


def test_a_one_input_op_may_return_a_bare_gradient_under_gradcheck():
    x = leaves(np.random.default_rng(0).normal(size=(3, 2)))
    Checker("t").expect_gradcheck(learner_op(square, "square"), x)    # no Mistake


def test_a_backward_that_disagrees_with_finite_differences_is_a_mistake():
    def wrong(x):
        return x * x, lambda g: 3 * x * g

    x = leaves(np.random.default_rng(0).normal(size=(3, 2)))
    msg = mistake_of(Checker("t").expect_gradcheck, learner_op(wrong, "wrong"), x)
    assert msg.startswith("finite differences disagree with your backward:")
    assert "work in float64" not in msg


def test_a_float32_output_under_gradcheck_is_told_to_work_in_float64():
    def low(x):
        return (x * x).astype(np.float32), lambda g: 2 * x * g

    x = leaves(np.random.default_rng(0).normal(size=(3, 2)))
    msg = mistake_of(Checker("t").expect_gradcheck, learner_op(low, "low"), x)
    assert "computes in float32" in msg


@pytest.mark.parametrize("fn, words", [
    (lambda x: (x.__isub__(1.0) + 1.0, lambda g: g), "changed its input `x` IN PLACE"),
    (lambda x: (2.0 * x, lambda g: g.__imul__(2.0)), "upstream gradient g IN PLACE"),
    (lambda x: (2.0 * x, lambda g: 2.0 * g + 0.0 * x.__imul__(1.5)),
     "the backward of f(x)` changed its input `x` IN PLACE"),
    (lambda x: (lambda d: (d * x, lambda g: d.__imul__(g)))(2.0 * np.ones_like(x)),
     "returns other gradients when it is called a second time"),
], ids=["forward", "backward", "input-in-backward", "saved-array-in-backward"])
def test_an_in_place_edit_under_gradcheck_is_named(fn, words):
    """The last two give the right gradient once, so only the edit can be named: the
    backward writes into the forward's input, or into an array the forward saved (a
    second backward through the graph would then be wrong)."""
    x = leaves(np.random.default_rng(0).normal(size=4))
    assert words in mistake_of(Checker("t").expect_gradcheck, learner_op(fn, "f(x)"), x)


# ------------------------------------------- the references the checkers share


def test_softmax_and_cross_entropy_rows_agree_with_scipy_even_for_huge_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 5)) + np.array([[0.0], [800.0], [-800.0], [3.0]])
    t = np.array([0, 4, 2, 1])
    assert np.allclose(softmax_rows(z), softmax(z, axis=-1), rtol=1e-12, atol=0)
    want = logsumexp(z, axis=-1) - z[np.arange(4), t]
    assert np.allclose(xent_rows(z, t), want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ the diagnoses


def test_your_says_for_a_gradient_and_of_an_output():
    assert your("gradient", "w") == "your gradient for `w`"
    assert your("output", "f(x)") == "your output of `f(x)`"


@pytest.mark.parametrize("got, want, words", [
    ((5, 2, 3), (3,), "sum the leading 2 axes away."),
    ((5, 3), (3,), "sum the leading axis away."),
    ((4, 3), (1, 1), "axis 0, 1 has size 1"),
    ((2, 3), (1, 1), "axis 0, 1 has size 1"),
    ((4, 3), (1, 1), "sum over those axes with keepdims=True"),
    ((4, 3), (4, 1), "sum over that axis with keepdims=True"),
])
def test_explain_shape_counts_the_axes_it_names(got, want, words):
    assert words in " ".join(explain_shape("w", got, want).split())


def test_a_scalar_that_is_not_finite_is_named_without_an_index():
    assert explain_values("loss", np.float64(np.nan), 1.0).startswith(
        "your gradient for `loss` is nan.")


@pytest.mark.parametrize("got, want", [(16648, 16640), (np.float64(2.5), 1.25),
                                       (np.array([3.0]), np.array([2.0]))])
def test_a_wrong_single_number_is_stated_not_called_a_scale_factor(got, want):
    """One number is always c times another: without a factor the exercise knows, the
    message says the two values, not "c times the correct one" (nor "1 times")."""
    msg = explain_values("count", got, want, what="count")
    assert msg == (f"your count of `count` is {np.asarray(got).item():g}; the correct "
                   f"value is {np.asarray(want).item():g}."), msg


def test_a_single_number_still_gets_its_known_factor_uses_and_sign():
    assert "2 times the correct one: a sum" in explain_values(
        "loss", 4.0, 2.0, factors={2: "a sum, not a mean."})
    assert "off by a factor of 3" in explain_values("b", 1.0, 3.0, uses=3)
    assert "wrong sign" in explain_values("loss", -2.0, 2.0)


def test_an_array_a_hair_off_is_not_called_1_times_the_correct_one():
    want = np.arange(1.0, 5.0)
    msg = explain_values("w", want * (1 + 4e-6), want)
    assert "times the correct one" not in msg and "at index" in msg, msg


def test_a_wrong_answer_where_zero_is_right_is_located():
    got = np.zeros((2, 2))
    got[1, 0] = 0.25
    msg = explain_values("w", got, np.zeros((2, 2)))
    assert "at index (1, 0) it is 0.25, the correct value is 0" in msg
    assert "largest error 2.50e-01" in msg


def test_the_largest_error_is_the_distance_to_the_right_answer():
    want = np.full(3, 10.0)
    got = want + np.array([0.0, -0.5, 0.1])
    assert "largest error 5.00e-01" in explain_values("w", got, want)


def test_a_batch_of_square_matrices_transposed_is_named():
    want = np.random.default_rng(0).normal(size=(2, 3, 3))
    assert "TRANSPOSE" in explain_values("w", want.swapaxes(-1, -2), want)


def test_any_proper_subset_of_three_tied_uses_is_named():
    rng = np.random.default_rng(0)
    parts = {k: rng.normal(size=(2, 2)) for k in ("A", "B", "C")}
    want = parts["A"] + parts["B"] + parts["C"]
    assert "only the part from A, and misses B + C" in explain_values(
        "w", parts["A"], want, parts=parts)
    assert "only the part from B + C, and misses A" in explain_values(
        "w", parts["B"] + parts["C"], want, parts=parts)
    assert "is all zeros" in explain_values("w", np.zeros((2, 2)), want, parts=parts)


def _leak(x, s, t):
    """The identity, except that output s also reads input t."""
    out = x.copy()
    out[s] += x[t]
    return out


def test_explain_causality_names_the_farthest_leak_and_how_far():
    x = np.random.default_rng(1).standard_normal(8)
    assert "the output at t=2 depends on the input at t=3, one step after it" in \
        explain_causality(lambda v: _leak(v, 2, 3), x)
    msg = explain_causality(lambda v: _leak(_leak(v, 2, 3), 1, 5), x)
    assert "the output at t=1 depends on the input at t=5, 4 steps after it" in msg
    msg = explain_causality(lambda v: _leak(_leak(v, 5, 6), 2, 3), x)     # as far: the first
    assert "the output at t=2 depends on the input at t=3" in msg


def test_a_pure_one_step_delay_is_named():
    x = np.random.default_rng(1).standard_normal(8)
    msg = explain_causality(lambda v: np.concatenate([[0.0], v[:-1]]), x)
    assert msg and "one step too far" in msg


# ------------------------------------------------------------ the registry


def test_an_unknown_exercise_or_mistake_is_a_keyerror_that_says_what_is_known():
    with pytest.raises(KeyError, match=r"no exercise 99 \(known: 1, 2, 3"):
        exercises.get(99)
    with pytest.raises(KeyError, match="exercise 2: no planted mistake mentions 'zzz'"):
        exercises.get(2).mistake("zzz")
