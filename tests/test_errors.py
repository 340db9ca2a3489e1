"""The errors a learner will hit read clearly: they name the op, the shapes, the devices.

Each test triggers one mistake and matches the message, so a regression to NumPy's
bare "operands could not be broadcast" (or a traceback from the CLI) fails here.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

import nanotie as nt
from nanotie import autograd, data, nn
from nanotie.nn import functional as F


def has_all(*parts):
    """A regex that matches when every part appears, in order (parts are literal)."""
    return ".*".join(re.escape(str(p)) for p in parts)


def ones(*shape):
    return nt.tensor(np.ones(shape))


# ---------------------------------------------------------------------- shapes


def test_matmul_mismatch_names_both_shapes_the_op_and_the_dims_that_differ():
    with pytest.raises(nt.ShapeError, match=has_all("matmul", (2, 3), (4, 5), "not aligned",
                                                    "3 (last dim of the first) != 4 "
                                                    "(second-to-last dim")):
        ones(2, 3) @ ones(4, 5)
    with pytest.raises(nt.ShapeError, match=has_all("3 (last dim of the first) != 4 "
                                                    "(only dim of the second)")):
        ones(2, 3) @ ones(4)


def test_matmul_batch_mismatch_names_both_shapes():
    with pytest.raises(nt.ShapeError, match=has_all("matmul: batch dims", (2, 3, 4),
                                                    (5, 4, 6), "cannot be broadcast")):
        ones(2, 3, 4) @ ones(5, 4, 6)


def test_matmul_with_a_scalar_suggests_star():
    with pytest.raises(nt.ShapeError, match=r"matmul.*use \*"):
        nt.matmul(ones(2, 3), nt.tensor(2.0))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum"])
def test_broadcast_failure_names_both_shapes_and_the_op(op):
    fn = getattr(nt, op)
    with pytest.raises(nt.ShapeError, match=has_all(op, (2, 3), (4,), "broadcast")):
        fn(ones(2, 3), ones(4))


def test_broadcast_failure_through_an_operator():
    with pytest.raises(nt.ShapeError, match=has_all("add", (3, 2), (3,))):
        ones(3, 2) + ones(3)


def test_where_broadcast_failure_names_all_shapes():
    """The condition may be a raw boolean array; its shape must still be reported."""
    cond = np.ones(5, dtype=bool)
    with pytest.raises(nt.ShapeError, match=has_all("where", (5,), (2, 3))):
        nt.where(cond, ones(2, 3), 0.0)
    with pytest.raises(nt.ShapeError, match=has_all("where", (2, 3), (4,))):
        nt.where(True, ones(2, 3), ones(4))


def test_backward_on_a_non_scalar_needs_a_gradient():
    y = nt.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=has_all((2, 3), "gradient")):
        y.backward()


def test_backward_with_a_wrong_shaped_gradient():
    y = nt.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(nt.ShapeError, match=has_all("backward()", (3, 2), (2, 3))):
        y.backward(np.ones((3, 2)))
    # One that broadcasts: sum's backward would take it without a word.
    s = nt.tensor(np.ones((2, 3)), requires_grad=True).sum(dim=0)
    with pytest.raises(nt.ShapeError, match=has_all("backward()", (1, 3), (3,))):
        s.backward(np.ones((1, 3)))


def test_reshape_to_a_wrong_size():
    with pytest.raises(nt.ShapeError, match=has_all("reshape", (2, 3), "6", (4, 2))):
        ones(2, 3).reshape(4, 2)
    with pytest.raises(nt.ShapeError, match=has_all("reshape", (2, 3), "6", (-2, 3))):
        ones(2, 3).reshape(-2, 3)                  # only -1 stands for "the rest"


def test_cat_with_mismatched_shapes():
    with pytest.raises(nt.ShapeError, match=has_all("cat", (2, 3), (2, 4))):
        nt.cat([ones(2, 3), ones(2, 4)], dim=0)


def test_cat_with_different_numbers_of_dims():
    with pytest.raises(nt.ShapeError, match=has_all("cat", "number of dims", (2, 3), (3,))):
        nt.cat([ones(2, 3), ones(3)], dim=0)


def test_stack_with_mismatched_shapes():
    with pytest.raises(nt.ShapeError, match=has_all("stack", (2,), (3,))):
        nt.stack([ones(2), ones(3)])


def test_expand_of_a_non_singleton_axis():
    with pytest.raises(nt.ShapeError, match=has_all("expand", (2, 3), (4, 3))):
        ones(2, 3).expand(4, 3)


@pytest.mark.parametrize("ids", [[0, 4], [-1, 2]])
def test_embedding_ids_out_of_range(ids):
    with pytest.raises(IndexError, match=has_all("embedding", "[0, 4)")):
        nt.embedding(ones(4, 3), nt.tensor(ids))


def test_embedding_needs_integer_ids():
    with pytest.raises(TypeError, match="embedding.*integers"):
        nt.embedding(ones(4, 3), nt.tensor([0.0, 1.0]))


def test_cross_entropy_with_a_wrong_target_shape():
    with pytest.raises(nt.ShapeError, match=has_all("cross_entropy", (2,), (4,), (4, 3))):
        F.cross_entropy(ones(4, 3), nt.tensor([0, 1]))


def test_cross_entropy_needs_integer_targets():
    with pytest.raises(TypeError, match="cross_entropy.*integer"):
        F.cross_entropy(ones(2, 3), nt.tensor([0.0, 1.0]))


@pytest.mark.parametrize("target", [-3, 5, 7])
def test_cross_entropy_refuses_a_target_outside_the_classes(target):
    """-3 would score class 2 (NumPy counts from the end), 5 would be NumPy's IndexError."""
    with pytest.raises(IndexError, match=has_all("cross_entropy", f"target {target}",
                                                 "5 classes", "0 <= target < 5")):
        F.cross_entropy(ones(3, 5), nt.tensor([0, target, 1]))


def test_cross_entropy_ignore_index_may_lie_outside_the_classes():
    z = nt.tensor(np.random.default_rng(0).normal(size=(3, 5)))
    with_pad = F.cross_entropy(z, nt.tensor([1, -100, 4]))
    without = F.cross_entropy(nt.tensor(z.numpy()[[0, 2]]), nt.tensor([1, 4]))
    np.testing.assert_allclose(with_pad.item(), without.item(), rtol=1e-12)


@pytest.mark.parametrize("x_shape, t_shape", [((4, 1), (4,)), ((4,), (4, 1)), ((3,), ())])
def test_mse_loss_refuses_shapes_that_would_broadcast(x_shape, t_shape):
    """(4, 1) against (4,) broadcasts to (4, 4): a mean of 16 differences, not 4."""
    with pytest.raises(nt.ShapeError, match=has_all("mse_loss", x_shape, t_shape)):
        F.mse_loss(ones(*x_shape), np.zeros(t_shape))


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("data", [["a"], None, {"a": 1}, object(), "text", [None, 1.0],
                                  [[1.0, 2.0], [3.0]], np.array(["a"]),
                                  np.array([1, None], dtype=object)],
                         ids=["list-of-str", "None", "dict", "object", "str", "list-None",
                              "ragged", "str-array", "object-array"])
def test_tensor_refuses_what_is_not_numbers(data):
    with pytest.raises(TypeError, match="tensor: expected numbers"):
        nt.tensor(data)


@pytest.mark.parametrize("widths", [(-5, 0), (0, -4), (-2, -2), (1, -5)])
def test_pad_refuses_to_crop_more_than_the_axis_holds(widths):
    left = f"would leave {3 + sum(widths)} entries"
    with pytest.raises(ValueError, match=has_all("pad", widths, (3,), left)):
        nt.pad(ones(3), widths)


def test_pad_crops_down_to_an_empty_axis_as_pytorch_does():
    assert nt.pad(ones(3), (-3, 0)).shape == (0,)
    assert nt.pad(ones(2, 3), (-1, -1)).shape == (2, 1)


@pytest.mark.parametrize("call, op", [
    (lambda t: t.sum(dim=2), "sum"),
    (lambda t: t.mean(dim=-3), "mean"),
    (lambda t: t.amax(dim=5), "amax"),
    (lambda t: t.transpose(0, 2), "transpose"),
    (lambda t: t.unsqueeze(4), "unsqueeze"),
    (lambda t: nt.cat([t, t], dim=2), "cat"),
    (lambda t: nt.stack([t, t], dim=-4), "stack"),
])
def test_invalid_dims_name_the_op_and_the_rank(call, op):
    with pytest.raises(IndexError, match=has_all(op, "out of range", "2 dims")):
        call(ones(2, 3))


def test_permute_with_a_non_permutation():
    with pytest.raises(ValueError, match=has_all("permute", "(0, 0)", "permutation")):
        ones(2, 3).permute(0, 0)


# ------------------------------------------------- the functional API's arguments


@pytest.mark.parametrize("call, error, parts", [
    (lambda: F.linear(ones(2, 3), ones(4, 5)), nt.ShapeError,
     ("linear", (2, 3), (4, 5), "(out_features, 3)")),
    (lambda: F.linear(ones(2, 3), ones(4, 3), ones(3)), nt.ShapeError,
     ("linear", "bias", (3,), (4, 3), "(4,)")),
    (lambda: F.layer_norm(ones(2, 3), 4), nt.ShapeError,
     ("layer_norm", "(4,)", (2, 3))),
    (lambda: F.rms_norm(ones(2, 3), (2, 3, 1)), nt.ShapeError, ("rms_norm", (2, 3, 1))),
    (lambda: F.scaled_dot_product_attention(ones(2, 4), ones(3, 5), ones(3, 2)),
     nt.ShapeError, ("scaled_dot_product_attention", (2, 4), (3, 5), (3, 2))),
    (lambda: F.scaled_dot_product_attention(ones(2, 4), ones(3, 4), ones(2, 2)),
     nt.ShapeError, ("scaled_dot_product_attention", (3, 4), (2, 2), "(..., Tk, Ev)")),
    (lambda: F.scaled_dot_product_attention(ones(2, 4), ones(2, 4), ones(2, 4),
                                            dropout_p=1.0), ValueError,
     ("dropout_p", "[0, 1)", "1.0")),
    (lambda: F.scaled_dot_product_attention(ones(2, 4), ones(2, 4), ones(2, 4),
                                            attn_mask=ones(2, 2), is_causal=True),
     ValueError, ("attn_mask or is_causal, not both",)),
    (lambda: F.dropout(ones(3), p=1.5), ValueError, ("dropout", "[0, 1)", "1.5")),
    (lambda: F.gelu(ones(3), approximate="fast"), ValueError, ("gelu", "'fast'")),
    (lambda: F.cross_entropy(ones(2, 3), nt.tensor([0, 1]), reduction="avg"), ValueError,
     ("cross_entropy", "reduction", "'avg'")),
    (lambda: F.fftconv(ones(2, 8), ones(3, 8)), nt.ShapeError, ("fftconv", (2, 8), (3, 8))),
    (lambda: nt.einsum("ij,jk->ik", ones(2, 3)), ValueError, ("einsum", "2 operand", "1")),
    (lambda: nt.einsum("ijk->i", ones(2, 3)), nt.ShapeError, ("einsum", "'ijk'", (2, 3))),
    (lambda: nt.einsum("ij,jk->ik", ones(2, 3), ones(4, 5)), nt.ShapeError,
     ("einsum", (2, 3), (4, 5))),
    (lambda: nt.einsum("ii->i", nt.tensor(np.ones((3, 3)), requires_grad=True)),
     NotImplementedError, ("einsum", "diagonal")),
    (lambda: nt.from_numpy([1.0, 2.0]), TypeError, ("from_numpy", "NumPy array", "list")),
    (lambda: nt.from_numpy(np.array(["a"])), TypeError, ("from_numpy", "numbers", "<U1")),
    (lambda: ones(2, 3).expand(3), nt.ShapeError, ("expand", (2, 3), "fewer dims")),
    (lambda: nt.cat([]), ValueError, ("cat", "non-empty")),
    (lambda: nt.stack([]), ValueError, ("stack", "non-empty")),
    (lambda: nt.pad(ones(2, 3), (1, 1, 1)), ValueError, ("pad", "even", "(1, 1, 1)")),
    (lambda: nt.pad(ones(3), (1, 1, 1, 1)), ValueError, ("pad", "1-D", "(1, 1, 1, 1)")),
    (lambda: nt.clamp(ones(3)), ValueError, ("clamp", "min and max")),
    (lambda: ones(2, 3)[5], IndexError, ("getitem", "5", (2, 3))),
    (lambda: nn.optim.SGD([nn.Parameter(np.ones(2))], lr=-0.1), ValueError,
     ("SGD", "lr", ">= 0")),
    (lambda: nt.gradcheck(lambda x: x.numpy(), [nt.tensor(np.ones(2), requires_grad=True)]),
     TypeError, ("gradcheck", "return a Tensor", "ndarray")),
    (lambda: nt.gradcheck(lambda x: x.float(), [nt.tensor(np.ones(2), requires_grad=True)]),
     TypeError, ("gradcheck", "float32", "float64 all the way")),
    (lambda: nt.gradcheck_module(nn.Linear(2, 2).double().requires_grad_(False), lambda: 0),
     ValueError, ("gradcheck_module", "no parameter that requires grad")),
    (lambda: nt.gradcheck_module(nn.Linear(2, 2).double(), lambda: ones(2)), TypeError,
     ("gradcheck_module", "scalar Tensor")),
    (lambda: data.train_val_split(np.ones((2, 3), dtype=np.int64)), TypeError,
     ("1-D integer array", (2, 3), "int64")),
    (lambda: data.BPETokenizer([(1, 2), (1, 2)]), ValueError, ("the same pair twice",)),
    (lambda: data.BatchSampler(np.arange(10), block_size=0, batch_size=2), ValueError,
     ("block_size and batch_size must be >= 1", "0 and 2")),
    (lambda: data.ByteTokenizer().encode(123), TypeError, ("expected str or bytes", "got int")),
    (lambda: nt.add(1.0, 2.0), TypeError, ("add", "at least one Tensor", "float and float")),
    (lambda: ones(2).to("cpu", copy=True), TypeError, ("to()", "unexpected", "copy")),
    (lambda: nt.tensor(np.arange(3)).mean(), TypeError, ("mean", "floating-point", "int64")),
    (lambda: nn.Linear(2, 2).load_state_dict("ck.npz"), TypeError,
     ("load_state_dict", "dict of arrays", "np.load", "got str")),
    (lambda: nn.GPT(nn.GPTConfig(vocab_size=8, context=4, d_model=4, n_layer=1, n_head=1))
     .load_state_dict("ck.npz"), TypeError, ("load_state_dict", "dict of arrays", "got str")),
], ids=["linear-weight", "linear-bias", "layer_norm", "rms_norm", "sdpa-E", "sdpa-Tk",
        "sdpa-dropout", "sdpa-two-masks", "dropout", "gelu", "cross_entropy-reduction",
        "fftconv", "einsum-count", "einsum-rank", "einsum-sizes", "einsum-diagonal",
        "from_numpy-list", "from_numpy-strings", "expand-fewer-dims", "cat-empty",
        "stack-empty", "pad-odd", "pad-too-many", "clamp-no-bound", "getitem", "sgd-lr",
        "gradcheck-not-a-tensor", "gradcheck-float32", "gradcheck_module-frozen",
        "gradcheck_module-not-scalar", "split-2d-ids", "bpe-repeated-merge",
        "sampler-block-size", "encode-int", "add-no-tensor", "to-unknown-argument",
        "mean-of-integers", "load_state_dict-a-path", "gpt-load_state_dict-a-path"])
def test_a_bad_argument_names_the_op_and_what_is_wrong(call, error, parts):
    with pytest.raises(error, match=has_all(*parts)):
        call()


# --------------------------------------------------------------------- devices


class FakeCudaTensor(nt.Tensor):
    """A CPU tensor that CLAIMS to live on the GPU: enough to reach the device checks
    (nanotie.autograd.check_same_device) without a GPU."""

    __slots__ = ()

    @property
    def device(self):
        return "cuda"


def fake_cuda(*shape):
    return FakeCudaTensor(np.ones(shape))


@pytest.mark.parametrize("op, call", [
    ("add", lambda c, g: c + g),
    ("mul", lambda c, g: g * c),
    ("sub", lambda c, g: nt.sub(c, g)),
    ("matmul", lambda c, g: c @ g),
    ("cat", lambda c, g: nt.cat([c, g])),
    ("where", lambda c, g: nt.where(c.gt(0), c, g)),
    ("where", lambda c, g: nt.where(FakeCudaTensor(np.ones((3, 3), bool)), c, c)),
    ("embedding", lambda c, g: nt.embedding(g, nt.tensor([0, 1]))),
    ("cross_entropy", lambda c, g: F.cross_entropy(g, nt.tensor([0, 1, 2]))),
])
def test_mixing_devices_names_the_op_and_both_devices(op, call):
    cpu, gpu = ones(3, 3), fake_cuda(3, 3)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    with pytest.raises(nt.DeviceError, match=has_all(op, "different devices", "cpu", "cuda")):
        call(cpu, gpu)


def test_check_same_device_accepts_one_device_and_ignores_non_tensors():
    autograd.check_same_device("add", ones(2), ones(2), 3.0, None)
    autograd.check_same_device("add", fake_cuda(2), fake_cuda(2))


@pytest.mark.skipif(nt.cuda_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("make", [
    lambda: nt.tensor([1.0], device="cuda"),
    lambda: nt.tensor([1.0]).to("cuda"),
    lambda: nt.tensor([1.0]).cuda(),
    lambda: nt.zeros(3, device="cuda"),
])
def test_asking_for_cuda_without_a_gpu(make):
    with pytest.raises(nt.DeviceError, match="'cuda'.*no GPU can be used"):
        make()


def test_unknown_device_name():
    with pytest.raises(nt.DeviceError, match=has_all("unknown device", "'tpu'", "cpu")):
        nt.tensor([1.0]).to("tpu")


# ------------------------------------------------------------------------- CLI


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nanotie", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (("reproduce", "nosuch"), ["unknown experiment", "nosuch"]),
    (("bogus",), ["invalid choice", "bogus"]),
    (("reproduce", "--seed", "x"), ["--seed", "invalid int value"]),
    (("reproduce", "--device", "tpu"), ["--device", "invalid choice"]),
    (("reproduce", "--full", "gpt", "--bogus"), ["unrecognized arguments", "--bogus"]),
    (("reproduce", "gpt", "--out", __file__), ["--out", "not a folder"]),
])
def test_cli_usage_errors_are_one_line_without_traceback(args, words):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nanotie: error:")
    for w in words:
        assert w in lines[0]


def test_cli_list_exits_zero():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "gpt" in result.stdout


@pytest.mark.skipif(nt.cuda_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_a_gpu_is_a_usage_error():
    result = run_cli("reproduce", "gpt", "--device", "cuda")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("nanotie: error: --device cuda")


@pytest.mark.skipif(nt.cuda_available(), reason="needs a machine without CUDA")
def test_cli_nanotie_device_cuda_without_a_gpu_is_a_usage_error(monkeypatch, capsys):
    from nanotie import cli

    monkeypatch.setenv("NANOTIE_DEVICE", "cuda")
    assert cli.main(["reproduce", "gpt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanotie: error: $NANOTIE_DEVICE")
