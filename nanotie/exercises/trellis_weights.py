"""Exercise 12: the converter's weights (TrellisNet).

The learner's weights, built into TrellisNets, must compute ``truncated_lstm``. Only the
weights ``nanotie.papers.trellis.convert.trellis_blocks`` returns do: a change of 1e-6 to
any one entry moves the output. Where they don't, the diagnosis compares with those.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations

import numpy as np

from ..autograd import Tensor
from ..papers.trellis.convert import trellis_blocks
from ..papers.trellis.lstm import LSTM, LSTMConfig, truncated_lstm
from ..papers.trellis.trellisnet import TrellisConfig, TrellisNet
from . import Planted
from .checking import Checker, CheckResult, Mistake, as_array
from .diagnose import close, worst_index

TITLE = "TrellisNet: the converter's weights"
GOAL = ("Turn a one-layer LSTM into a TrellisNet: put W_ih on the x_t tap and W_hh on "
        "the z_{t-1} tap of the one shared convolution, reorder the gates, and see M "
        "levels of that convolution compute the LSTM truncated to its last M inputs, to "
        "float64 precision, with the same weights at every depth.")
FUNCTION = "trellis_weights"

STUB = '''
import numpy as np


def trellis_weights(w_ih, w_hh, b):
    """The TrellisNet weights that compute a one-layer LSTM truncated to M steps:
    returns (weight_x, weight_h, bias).

    The LSTM (H units, I input channels) comes as PyTorch stores it, with the four
    gates in the order i, f, g, o (row blocks of H rows each):

        w_ih: (4H, I)    w_hh: (4H, H)    b: (4H,)   (PyTorch's bias_ih + bias_hh)

        a_t = w_ih x_t + w_hh h_{t-1} + b                        (4H,)
        c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

    A TrellisNet applies ONE kernel-2 causal convolution at every level, to the
    input x and the level below's hidden sequence z (z = c = 0 at level 0):

        zhat_t = W1x x_{t-1} + W2x x_t + W1h z_{t-1} + W2h z_t + bias     (4H,)

    and reads the gates in the order i, o, g, f:

        i, o = sigma(zhat[0:H]), sigma(zhat[H:2H])
        g, f = tanh(zhat[2H:3H]), sigma(zhat[3H:4H])
        c'_t = f * c_{t-1} + i * g         z'_t = o * tanh(c'_t)

    It stores each matrix with its two taps side by side, the t-1 tap FIRST:

        weight_x = [W1x | W2x]    (4H, 2I)     columns [:I] multiply x_{t-1}
        weight_h = [W1h | W2h]    (4H, 2H)     columns [:H] multiply z_{t-1}
        bias                      (4H,)        added once

    Choose them so that level j at time t is ONE LSTM step from level j-1 at time
    t-1 (compare a_t with zhat_t term by term: which tap reads x_t, which reads the
    previous step's h?). Then level M at time t is the LSTM run from a zero state
    over x_{t-M+1..t}, for every M: the weights do not depend on M. A tap the LSTM
    does not use gets a block of zeros (np.zeros_like, np.concatenate(..., axis=1)).
    Mind the gate order: reorder the row blocks of w_ih, w_hh and b.
    """
    weight_x = ...  # your code
    weight_h = ...  # your code
    bias = ...      # your code
    return weight_x, weight_h, bias
'''


def reference(w_ih, w_hh, b):
    """The solution."""
    H = w_hh.shape[1]
    # PyTorch's gate blocks (i, f, g, o) -> TrellisNet's (i, o, g, f): blocks 0, 3, 2, 1.
    rows = np.concatenate([np.arange(q * H, (q + 1) * H) for q in (0, 3, 2, 1)])
    w_ih, w_hh, b = w_ih[rows], w_hh[rows], b[rows]
    weight_x = np.concatenate([np.zeros_like(w_ih), w_ih], axis=1)   # [W1x | W2x] = [0 | W_ih]
    weight_h = np.concatenate([w_hh, np.zeros_like(w_hh)], axis=1)   # [W1h | W2h] = [W_hh | 0]
    return weight_x, weight_h, b.copy()


# ------------------------------------------------------------------ the cases

GATES = ("i", "o", "g", "f")           # TrellisNet's (and nanotie's LSTM's) gate order
TORCH_BLOCKS = (0, 3, 2, 1)            # PyTorch's i, f, g, o as TrellisNet blocks; its own inverse
NAMES = ("weight_x", "weight_h", "bias")
CASES = {"I = 2, H = 3": (2, 3), "I = H = 3": (3, 3)}   # the first tells W_ih from W_hh by shape
DEPTHS = (1, 2, 5)                     # M, the truncation: the number of levels


def reorder(a: np.ndarray, blocks) -> np.ndarray:
    """The row blocks of ``a`` (four of 4H/4 rows) in the order ``blocks``."""
    H = a.shape[0] // 4
    return np.concatenate([a[q * H:(q + 1) * H] for q in blocks], axis=0)


@lru_cache(maxsize=None)
def case(name: str) -> dict:
    """A random float64 LSTM (the learner gets it in PyTorch's order), an input x,
    the library's converter weights and the M-truncated LSTM's outputs."""
    I, H = CASES[name]
    rng = np.random.default_rng(12 + I)
    w_ih = rng.uniform(-0.9, 0.9, (4 * H, I))           # TrellisNet's order i, o, g, f
    w_hh = rng.uniform(-0.9, 0.9, (4 * H, H))
    b = rng.uniform(-0.5, 0.5, 4 * H)
    x = rng.standard_normal((2, 8, I))                  # (B, T, I)
    lstm = LSTM(LSTMConfig(I, (H,), bias=True)).double()
    layer = lstm.layers[0]
    layer.weight_ih.data, layer.weight_hh.data, layer.bias.data = w_ih, w_hh, b
    truncated = {M: truncated_lstm(lstm, Tensor(x), M).numpy() for M in DEPTHS}
    return dict(I=I, H=H, x=x, lib=(w_ih, w_hh, b), torch=pytorch_weights(layer),
                converter=trellis_blocks(lstm), truncated=truncated)


def pytorch_weights(layer) -> tuple:
    """(w_ih, w_hh, b) of a nanotie ``LSTMLayer`` (gates i, o, g, f) as NumPy arrays in
    PyTorch's gate order i, f, g, o: what ``trellis_weights`` is given."""
    return tuple(reorder(p.numpy(), TORCH_BLOCKS)
                 for p in (layer.weight_ih, layer.weight_hh, layer.bias))


def trellis_output(weights, I: int, H: int, M: int, x: np.ndarray) -> np.ndarray:
    """The output (B, T, H) of an M-level TrellisNet with these (weight_x, weight_h, bias)."""
    net = TrellisNet(TrellisConfig(n_in=I, n_hid=0, n_out=H, n_levels=M), dtype=np.float64)
    for param, value in zip((net.conv.weight_x, net.conv.weight_h, net.conv.bias), weights):
        param.data = np.ascontiguousarray(value, dtype=np.float64)
    return net(Tensor(x)).out.numpy()


# ------------------------------------------------------------------- diagnosis

def _layouts(data: dict) -> dict:
    """{array name: [(wrong-or-right layout, None or what is wrong with it)]}, gates in
    TrellisNet's order; the gate order is tried separately."""
    I, H = data["I"], data["H"]
    A, R, b = data["lib"]
    zx, zh = np.zeros_like(A), np.zeros_like(R)
    x_lay = [(np.concatenate([zx, A], 1), None),
             (np.concatenate([A, zx], 1),
              f"W_ih is on the x_{{t-1}} tap (the first I = {I} columns, W1x), an off-by-one "
              f"in time: an LSTM step reads the CURRENT input, a_t = W_ih x_t + ..., so "
              f"W_ih belongs in the x_t tap (the last I columns, W2x) and W1x = 0. As it "
              f"is, the output at t never sees x_t."),
             (np.concatenate([A, A], 1),
              "W_ih is on both taps, so every input counts twice (at t-1 and at t): "
              "only the x_t tap (W2x) holds W_ih; W1x = 0.")]
    h_lay = [(np.concatenate([R, zh], 1), None),
             (np.concatenate([zh, R], 1),
              f"W_hh is on the z_t tap (the last H = {H} columns, W2h), but the recurrence "
              f"reads the PREVIOUS step, h_{{t-1}}: level j at time t is one LSTM step from "
              f"level j-1 at time t-1, so W_hh goes on the z_{{t-1}} tap (the first H "
              f"columns, W1h) and W2h = 0. Swapping the taps is an off-by-one in time."),
             (np.concatenate([R, R], 1),
              "W_hh is on both taps: only the z_{t-1} tap (W1h) holds W_hh; W2h = 0.")]
    bias_lay = [(b, None),
                (2 * b, "the bias is counted twice (it is 2 b): the convolution adds its "
                        "bias once per output, not once per tap or once per input (x and "
                        "z). TrellisNet's one bias is the LSTM's b."),
                (np.zeros_like(b), "the bias is zero: the LSTM's b must be carried over "
                                   "(gates in TrellisNet's order).")]
    return {"weight_x": x_lay, "weight_h": h_lay, "bias": bias_lay}


def _order_problem(blocks: tuple, names: list) -> str:
    which = ", ".join(f"`{n}`" for n in names[:-1]) + (" and " if len(names) > 1 else "")
    which += f"`{names[-1]}`"
    if blocks == TORCH_BLOCKS:
        return (f"the rows of {which} are still in PyTorch's gate order i, f, g, o, but "
                f"TrellisNet reads zhat's row blocks as i, o, g, f (sigma, sigma, tanh, "
                f"sigma): the o and f gates trade places. Reorder the row blocks of w_ih, "
                f"w_hh and b: PyTorch blocks 0, 3, 2, 1.")
    order = ", ".join(GATES[q] for q in blocks)
    return (f"the row blocks of {which} come out in the gate order {order}, but "
            f"TrellisNet reads them as i, o, g, f (PyTorch's blocks 0, 3, 2, 1).")


def diagnose(arrays, data: dict) -> str:
    """What is wrong with the learner's arrays: the recognised mistakes they match (a tap
    layout and/or a gate order), one a line, or else where they first differ."""
    found, orders = [], {}
    layouts = _layouts(data)
    for name, got in zip(NAMES, arrays):
        for blocks in permutations(range(4)):            # the identity first
            hit = next((why for right, why in layouts[name]
                        if close(got, reorder(right, blocks))), False)
            if hit is not False:
                if hit:
                    found.append(f"`{name}`: {hit}")
                if blocks != tuple(range(4)):
                    orders.setdefault(blocks, []).append(name)
                break
    found += [_order_problem(blocks, names) for blocks, names in orders.items()]
    return "\n".join(found) or _not_a_layout(arrays, data)


def _not_a_layout(arrays, data: dict) -> str:
    """For an answer that matches no recognised mistake: where it differs first."""
    for name, got, want in zip(NAMES, arrays, data["converter"]):
        if not close(got, want):
            i = worst_index(got, want)
            where = ""
            if name != "bias":
                n = got.shape[1] // 2
                tap = "t-1" if i[1] < n else "t"
                where = (f" (gate {GATES[i[0] // data['H']]}, the {tap} tap of "
                         f"{'x' if name == 'weight_x' else 'z'})")
            return (f"`{name}` at index {i}{where} is {got[i]:.6g}, the right value is "
                    f"{want[i]:.6g}.")
    return ""


# ----------------------------------------------------------------------- check

def _arrays(c, fn, data: dict) -> list:
    """Call the learner's function on the case's LSTM; its three arrays, shapes checked."""
    what = "trellis_weights(w_ih, w_hh, b)"
    out = c.returns(fn, *data["torch"], what=what, names="weight_x, weight_h, bias")
    I, H = data["I"], data["H"]
    shapes = {"weight_x": (4 * H, 2 * I), "weight_h": (4 * H, 2 * H), "bias": (4 * H,)}
    arrays = [as_array(got, shapes[name], name) for name, got in zip(NAMES, out)]
    sx, sh = arrays[0].shape, arrays[1].shape
    if I != H and sx == (4 * H, 2 * H) and sh == (4 * H, 2 * I):
        raise Mistake(f"`weight_x` has shape {sx} and `weight_h` {sh}: they look swapped. "
                      f"weight_x multiplies the input's two taps [x_{{t-1}}; x_t] (2 I = "
                      f"{2 * I} columns) and holds W_ih; weight_h multiplies [z_{{t-1}}; z_t] "
                      f"(2 H = {2 * H} columns) and holds W_hh. Did you put the input "
                      f"weights on the z path?")
    for name, arr, n in (("weight_x", arrays[0], I), ("weight_h", arrays[1], H)):
        if arr.shape == (4 * H, n):
            raise Mistake(f"`{name}` has shape {arr.shape}: one tap only. It needs both "
                          f"taps side by side, [t-1 tap | t tap], 2 x {n} columns; the tap "
                          f"the LSTM does not use is a block of zeros.")
    for name, arr in zip(NAMES, arrays):
        if arr.ndim == 2 and arr.shape == shapes[name][::-1]:
            raise Mistake(f"`{name}` has shape {arr.shape}, the transpose of "
                          f"{shapes[name]}: its rows are the 4H gate pre-activations "
                          f"(as in w_ih, w_hh), its columns the two taps' inputs. Did "
                          f"you transpose?")
        c.expect_shape(arr, shapes[name], name)
    return arrays


def check(fn) -> CheckResult:
    answers = {}
    with Checker(f"Exercise 12: {TITLE}") as c:
        with c.step("the shapes: weight_x (4H, 2I), weight_h (4H, 2H), bias (4H,)"):
            for name in CASES:
                c.case = f"an LSTM with {name}, weights in PyTorch's gate order i, f, g, o"
                answers[name] = _arrays(c, fn, case(name))
        with c.step(f"an M-level TrellisNet with your weights computes the M-truncated "
                    f"LSTM (truncated_lstm), float64, M = {', '.join(map(str, DEPTHS))}"):
            for name in CASES:
                data = case(name)
                for M in DEPTHS:
                    c.case = f"an LSTM with {name}; x of shape {data['x'].shape} (B, T, I)"
                    got = trellis_output(answers[name], data["I"], data["H"], M, data["x"])
                    err = np.abs(got - data["truncated"][M]).max(axis=(0, 2))     # (T,)
                    if not np.all(err < 1e-12):
                        raise Mistake(_explain_mismatch(answers[name], data, M, err))
    return c.result


def _explain_mismatch(arrays, data: dict, M: int, err) -> str:
    t = int(np.argmax(err >= 1e-12))
    head = (f"with M = {M} level{'s' if M > 1 else ''}, your TrellisNet's output differs "
            f"from the {M}-truncated LSTM: first at t = {t}, largest error "
            f"{err.max():.2e}.")
    if M > 1:                                  # M = 1, the first depth, matched
        head += (" (With M = 1 it matched: one level is a single LSTM step from the zero "
                 "state, where only W_ih on x_t and b act; the recurrent weights first "
                 "matter at two levels.)")
    return head + "\n" + diagnose(arrays, data)


# ------------------------------------------------ wrong answers, for the tests

def _in_trellis_order(w_ih, w_hh, b):
    return [reorder(a, TORCH_BLOCKS) for a in (w_ih, w_hh, b)]


def _taps_swapped(w_ih, w_hh, b):
    """"x_{t-1} first" read as "the current step first": both taps swapped."""
    A, R, bias = _in_trellis_order(w_ih, w_hh, b)
    return (np.concatenate([A, np.zeros_like(A)], 1),
            np.concatenate([np.zeros_like(R), R], 1), bias)


def _w_hh_on_current_tap(w_ih, w_hh, b):
    A, R, bias = _in_trellis_order(w_ih, w_hh, b)
    return (np.concatenate([np.zeros_like(A), A], 1),
            np.concatenate([np.zeros_like(R), R], 1), bias)


def _input_on_z_path(w_ih, w_hh, b):
    A, R, bias = _in_trellis_order(w_ih, w_hh, b)
    return (np.concatenate([np.zeros_like(R), R], 1),
            np.concatenate([A, np.zeros_like(A)], 1), bias)


def _bias_on_both_taps(w_ih, w_hh, b):
    weight_x, weight_h, bias = reference(w_ih, w_hh, b)
    return weight_x, weight_h, bias + bias          # "one bias per tap"


def _pytorch_gate_order(w_ih, w_hh, b):
    weight_x = np.concatenate([np.zeros_like(w_ih), w_ih], 1)
    weight_h = np.concatenate([w_hh, np.zeros_like(w_hh)], 1)
    return weight_x, weight_h, b.copy()             # rows left as i, f, g, o


MISTAKES = [
    Planted("both taps swapped (x_{t-1} and z_t instead of x_t and z_{t-1})", _taps_swapped,
            ("x_{t-1} tap", "off-by-one in time", "z_t tap")),
    Planted("W_hh on the z_t tap", _w_hh_on_current_tap,
            ("W_hh is on the z_t tap", "h_{t-1}", "With M = 1 it matched")),
    Planted("W_ih and W_hh swapped: the input weights on the z path", _input_on_z_path,
            ("look swapped", "z path")),
    Planted("the bias counted twice, once per tap", _bias_on_both_taps,
            ("counted twice",)),
    Planted("the gates left in PyTorch's order i, f, g, o", _pytorch_gate_order,
            ("rows of `weight_x`, `weight_h` and `bias` are still in PyTorch's gate order "
             "i, f, g, o", "o and f")),
]
