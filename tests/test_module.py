"""Module, the containers, modes, buffers, and state_dict / load_state_dict.

The tying side of all this (de-duplication, counts, saving a tie once) lives in
test_tying.py; here are the mechanics a learner relies on, and the contract of
load_state_dict: a checkpoint that does not fit raises ONE StateDictError that lists
EVERY problem, and leaves the model exactly as it was.
"""

import numpy as np
import pytest

import nanotie as nt
from nanotie.nn import (GPT, Dropout, GPTConfig, LayerNorm, Linear, Module, ModuleDict,
                        ModuleList, Parameter, StateDictError)


class Net(Module):
    def __init__(self):
        super().__init__()
        self.fc = Linear(3, 4)
        self.scale = Parameter(np.ones(4, dtype=np.float32))
        self.drop = Dropout(0.5)
        self.heads = ModuleList([Linear(4, 2), Linear(4, 2, bias=False)])
        self.extra = ModuleDict({"ln": LayerNorm(4)})
        self.note = "not registered"
        self.plain = nt.tensor(np.zeros(2, dtype=np.float32))   # a Tensor, not a Parameter

    def forward(self, x):
        h = self.extra["ln"](self.drop(self.fc(x)) * self.scale)
        return self.heads[0](h) + self.heads[1](h)


# ---------------------------------------------------------------- registration


def test_attributes_register_parameters_and_modules_only():
    net = Net()
    assert list(net._parameters) == ["scale"]
    assert list(net._modules) == ["fc", "drop", "heads", "extra"]
    assert [n for n, _ in net.named_parameters()] == [
        "scale", "fc.weight", "fc.bias", "heads.0.weight", "heads.0.bias",
        "heads.1.weight", "extra.ln.weight", "extra.ln.bias"]
    assert net.note == "not registered" and "plain" not in net._parameters
    assert [p.shape for p in net.parameters()] == [(4,), (4, 3), (4,), (2, 4), (2,),
                                                   (2, 4), (4,), (4,)]


def test_reassigning_and_deleting_attributes_updates_the_registry():
    net = Net()
    net.scale = None                      # a Parameter removed by assigning None
    assert "scale" not in net._parameters and net.scale is None
    net.fc = Parameter(np.zeros((2, 2), dtype=np.float32))   # a Module by a Parameter
    assert "fc" not in net._modules and "fc" in net._parameters
    del net.fc
    assert "fc" not in net._parameters
    with pytest.raises(AttributeError, match="'Net' has no attribute 'fc'"):
        net.fc
    del net.heads
    assert [n for n, _ in net.named_parameters()] == ["extra.ln.weight", "extra.ln.bias"]


def test_a_parameter_or_buffer_is_not_silently_replaced_by_a_plain_value():
    """Assigning a plain Tensor where a Parameter is registered used to drop it from
    parameters() (so the optimizer never saw the new weight); a number where a buffer
    is registered dropped the buffer. Both raise, as in PyTorch, and change nothing."""
    lin = Linear(3, 4)
    weight = lin.weight
    for value in (nt.randn(4, 3, requires_grad=True), np.zeros((4, 3)), 3.0):
        with pytest.raises(TypeError, match=f"cannot assign {type(value).__name__} as "
                                            r"parameter 'weight' \(Parameter or None"):
            lin.weight = value
    assert lin.weight is weight and [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    lin.weight = Parameter(np.ones((4, 3), dtype=np.float32))     # a Parameter is fine
    assert lin.weight is not weight and "weight" in lin._parameters
    m = WithBuffers()
    with pytest.raises(TypeError, match=r"cannot assign float as buffer 'running' \(Tensor"):
        m.running = 7.0
    assert "running" in m._buffers and "running" in m.state_dict()


def test_forgetting_super_init_says_so():
    class Broken(Module):
        def __init__(self):
            self.fc = Linear(2, 2)

    with pytest.raises(AttributeError, match=r"Broken.__init__ must call super\(\).__init__\(\)"):
        Broken()


def test_missing_forward_says_so():
    class NoForward(Module):
        pass

    with pytest.raises(NotImplementedError, match="NoForward does not define forward"):
        NoForward()(1)


def test_call_runs_forward_and_gradients_reach_every_parameter():
    net = Net().eval()
    out = net(nt.randn(5, 3))
    assert out.shape == (5, 2)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_get_submodule_and_apply():
    net = Net()
    assert net.get_submodule("heads.1") is net.heads[1]
    assert net.get_submodule("extra.ln") is net.extra["ln"]
    assert net.get_submodule("") is net
    with pytest.raises(AttributeError, match="no submodule 'nope' .*'heads.nope'"):
        net.get_submodule("heads.nope")
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3 and "LayerNorm" in seen


def test_apply_calls_fn_once_on_a_shared_module():
    """A module held twice (layer sharing) is ONE module, as a tied weight is one
    Parameter: an init that scales weights in place would scale it twice otherwise."""
    lin = Linear(2, 2)
    net = ModuleList([ModuleList([lin, lin]), Dropout(0.1), ModuleList([lin])])
    seen = []
    net.apply(seen.append)
    assert [id(m) for m in seen].count(id(lin)) == 1 and len(seen) == 5
    assert all(seen.index(c) < seen.index(m) for m in seen for c in m.children())


def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = nt.randn(4, 3)
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())   # dropout off
    assert net.train() is net and all(m.training for m in net.modules())


def test_requires_grad_freezes_and_unfreezes_every_parameter():
    net = Net()
    assert net.extra.requires_grad_(False) is net.extra
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"extra.ln.weight", "extra.ln.bias"}
    net.requires_grad_(True)
    assert all(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------- containers


def test_module_list():
    a, b, c = Linear(2, 2), Linear(2, 3), Linear(3, 1)
    ml = ModuleList([a, b])
    ml.append(c)
    assert len(ml) == 3 and list(ml) == [a, b, c]
    assert ml[-1] is c and ml[0] is a
    assert list(ml[1:]) == [b, c]
    ml[1] = Linear(2, 3, bias=False)
    assert ml[1] is not b and [n for n, _ in ml.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "2.weight", "2.bias"]
    ml.extend([Linear(1, 1)])
    assert len(ml) == 4
    with pytest.raises(TypeError, match="ModuleList holds Modules, got int"):
        ml.append(3)
    with pytest.raises(TypeError, match="ModuleList holds Modules"):
        ml[0] = "x"


def test_module_dict():
    md = ModuleDict({"a": Linear(2, 2)})
    md["b"] = Linear(2, 1, bias=False)
    assert "a" in md and "c" not in md and len(md) == 2
    assert list(md) == ["a", "b"] and list(md.keys()) == ["a", "b"]
    assert md["b"] is md.b and dict(md.items())["a"] is md["a"]
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias", "b.weight"]
    with pytest.raises(TypeError, match="ModuleDict holds Modules"):
        md["c"] = 1.0


def test_passing_the_model_to_an_optimizer_says_what_to_do():
    with pytest.raises(TypeError, match=r"model.parameters\(\)"):
        nt.nn.optim.SGD(Net(), lr=0.1)


# ------------------------------------------------------------------- buffers


class WithBuffers(Module):
    def __init__(self):
        super().__init__()
        self.fc = Linear(2, 2)
        self.register_buffer("running", np.arange(3, dtype=np.float32))
        self.register_buffer("scratch", np.ones(2, dtype=np.float32), persistent=False)


def test_buffers_move_with_to_and_only_persistent_ones_are_saved():
    m = WithBuffers()
    assert [n for n, _ in m.named_buffers()] == ["running", "scratch"]
    assert "running" not in [n for n, _ in m.named_parameters()]
    sd = m.state_dict()
    assert "running" in sd and "scratch" not in sd
    m.to(np.float64)
    assert m.running.dtype == np.float64 and m.scratch.dtype == np.float64
    m.running = nt.tensor(np.full(3, 7.0))         # reassigning keeps it a buffer
    assert "running" in m._buffers
    # A checkpoint without the persistent buffer is incomplete.
    m2 = WithBuffers()
    bad = m2.state_dict()
    del bad["running"]
    with pytest.raises(StateDictError, match="missing buffer 'running'"):
        m2.load_state_dict(bad)


def test_buffer_values_round_trip():
    a, b = WithBuffers(), WithBuffers()
    a.running.data[...] = [4.0, 5.0, 6.0]
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.running.numpy(), [4.0, 5.0, 6.0])


# ---------------------------------------------------------------- state_dict


CFG = dict(vocab_size=11, context=8, d_model=8, n_layer=2, n_head=2)


def snapshot(model):
    """Every path's array (copied) and which Parameter object it is."""
    return {path: (p, p.numpy().copy()) for path, p in
            model.named_parameters(remove_duplicate=False)}


def assert_unchanged(model, snap):
    now = dict(model.named_parameters(remove_duplicate=False))
    assert now.keys() == snap.keys()
    for path, (p, values) in snap.items():
        assert now[path] is p, f"{path}: the Parameter object was replaced"
        assert now[path].dtype == values.dtype and now[path].shape == values.shape, path
        assert np.array_equal(now[path].numpy(), values), f"{path}: values changed"


def test_state_dict_holds_plain_copies():
    nt.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    sd = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["wpe.weight"][...] = 123.0                 # a copy: the model does not see it
    assert not np.any(model.wpe.weight.numpy() == 123.0)


def test_state_dict_round_trips_through_npz(tmp_path):
    """np.savez / np.load(allow_pickle=False) restore every value bitwise."""
    nt.manual_seed(0)
    src = GPT(GPTConfig(**CFG))
    np.savez(tmp_path / "ckpt.npz", **src.state_dict())
    nt.manual_seed(1)
    dst = GPT(GPTConfig(**CFG))
    assert not np.array_equal(dst.wte.weight.numpy(), src.wte.weight.numpy())
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as ckpt:
        dst.load_state_dict(ckpt)
    want = dict(src.named_parameters(remove_duplicate=False))
    for path, p in dst.named_parameters(remove_duplicate=False):
        assert p.dtype == want[path].dtype
        np.testing.assert_array_equal(p.numpy(), want[path].numpy(), err_msg=path)
    idx = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(dst(idx)[0].numpy(), src(idx)[0].numpy())


def _good():
    nt.manual_seed(0)
    return GPT(GPTConfig(**CFG)).state_dict()


def _wrong_shape(sd):
    sd["wpe.weight"] = np.zeros((9, 8), np.float32)
    return ["'wpe.weight'", "(9, 8)", "(8, 8)"]


def _wrong_dtype(sd):
    sd["ln_f.weight"] = sd["ln_f.weight"].astype(np.float64)
    return ["'ln_f.weight'", "float64", "float32"]


def _missing(sd):
    del sd["blocks.1.attn.qkv.bias"]
    return ["missing key 'blocks.1.attn.qkv.bias'"]


def _unexpected(sd):
    sd["blocks.2.ln1.weight"] = np.ones(8, np.float32)
    return ["unexpected key 'blocks.2.ln1.weight'"]


def _malformed_tie(sd):
    sd["__ties__"] = np.array(["lm_head.weight"])
    return ["malformed '__ties__' entry 'lm_head.weight'"]


def _tie_to_unstored(sd):
    sd["__ties__"] = np.array(["lm_head.weight=head.weight"])
    return ["tie 'lm_head.weight=head.weight'", "'head.weight' is not stored"]


def _tie_unknown_alias(sd):
    sd["__ties__"] = np.array(["lm_head.weight=wte.weight", "decoder.weight=wte.weight"])
    return ["this model has no parameter 'decoder.weight'"]


def _tie_shape_mismatch(sd):
    del sd["wpe.weight"]
    sd["__ties__"] = np.array(["lm_head.weight=wte.weight", "wpe.weight=wte.weight"])
    return ["tie 'wpe.weight=wte.weight'", "(8, 8) and (11, 8) differ"]


def _untied_checkpoint(sd):
    sd["lm_head.weight"] = sd["wte.weight"] + 1
    sd["__ties__"] = np.array([], dtype=np.str_)
    return ["'lm_head.weight' is tied to 'wte.weight' in this model, but the checkpoint "
            "stores them separately"]


def _tie_alias_also_stored(sd):
    """The table says lm_head IS wte, but the file also holds lm_head's own values."""
    sd["lm_head.weight"] = sd["wte.weight"] + 1
    return ["tie 'lm_head.weight=wte.weight'", "'lm_head.weight' is also stored separately"]


BAD = [_wrong_shape, _wrong_dtype, _missing, _unexpected, _malformed_tie,
       _tie_to_unstored, _tie_unknown_alias, _tie_shape_mismatch, _untied_checkpoint,
       _tie_alias_also_stored]


@pytest.mark.parametrize("corrupt", BAD, ids=lambda f: f.__name__.strip("_"))
def test_bad_checkpoint_raises_and_changes_nothing(corrupt):
    sd = _good()
    expected = corrupt(sd)
    for k in sd:                     # make the values differ from the model's
        if k != "__ties__" and sd[k].dtype.kind == "f":
            sd[k] = sd[k] + 1
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG))
    snap = snapshot(model)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(sd)
    for fragment in expected:
        assert fragment in str(info.value)
    assert_unchanged(model, snap)
    assert model.lm_head.weight is model.wte.weight


def test_every_problem_is_listed_at_once_and_no_tie_is_restored():
    """An UNTIED model and a tied checkpoint with four other problems: all four are
    named (once each), with the tie that the model's config does not have, and the
    tie entry is not applied."""
    sd = _good()
    fragments = [f(sd)[0] for f in (_wrong_shape, _wrong_dtype, _missing, _unexpected)]
    fragments.append("lm_head.weight is tied to wte.weight, but this GPT has "
                     "tie_embeddings=False")
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG, tie_embeddings=False))
    snap = snapshot(model)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    problems = message.split("\n  - ")[1:]
    assert len(problems) == 5, message
    for fragment in fragments:
        assert sum(fragment in p for p in problems) == 1, (fragment, message)
    assert_unchanged(model, snap)
    assert model.lm_head.weight is not model.wte.weight


def test_non_strict_load_ignores_unknown_and_missing_keys():
    sd = _good()
    _unexpected(sd)
    _missing(sd)
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG))
    kept = model.blocks[1].attn.qkv.bias.numpy().copy()
    model.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(model.blocks[1].attn.qkv.bias.numpy(), kept)
    np.testing.assert_array_equal(model.wpe.weight.numpy(), sd["wpe.weight"])
    # A shape mismatch is still an error.
    _wrong_shape(sd)
    with pytest.raises(StateDictError, match="'wpe.weight'"):
        model.load_state_dict(sd, strict=False)


class ThreeLinears(Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = Linear(3, 3), Linear(3, 3), Linear(3, 3)
        self.register_buffer("buf", np.ones((3, 3), dtype=np.float32))


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("target", ["buf", "stray"])
def test_a_tie_to_a_stored_non_parameter_is_refused_before_any_tie_is_made(strict, target):
    """A valid tie listed first must not be made when a later one points at a buffer
    (or, with strict=False, at an unknown stored key): the load fails as a whole."""
    nt.manual_seed(0)
    sd = ThreeLinears().state_dict()
    del sd["a.weight"], sd["c.weight"]
    sd["stray"] = np.ones((3, 3), dtype=np.float32)
    sd["__ties__"] = np.array(["a.weight=b.weight", f"c.weight={target}"])
    nt.manual_seed(5)
    model = ThreeLinears()
    snap = snapshot(model)
    with pytest.raises(StateDictError, match=f"tie 'c.weight={target}': '{target}' is not a "
                                             "parameter of this model"):
        model.load_state_dict(sd, strict=strict)
    assert_unchanged(model, snap)
    assert model.a.weight is not model.b.weight


@pytest.mark.parametrize("saved_tied", [True, False])
def test_a_checkpoint_with_the_other_embedding_tie_is_refused(saved_tied):
    """A tied checkpoint does not tie an untied GPT behind its config's back (nor the
    reverse): refused, nothing changed, and the message says what to build instead."""
    nt.manual_seed(0)
    sd = GPT(GPTConfig(**CFG, tie_embeddings=saved_tied)).state_dict()
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG, tie_embeddings=not saved_tied))
    snap = snapshot(model)
    with pytest.raises(StateDictError, match=f"tie_embeddings={not saved_tied}: build it "
                                             f"with tie_embeddings={saved_tied}"):
        model.load_state_dict(sd)
    assert_unchanged(model, snap)
    assert model.config.tie_embeddings is (not saved_tied)


@pytest.mark.parametrize("saved_tied", [True, False])
def test_retie_takes_the_checkpoints_tie_and_says_so_in_the_config(saved_tied):
    nt.manual_seed(0)
    src = GPT(GPTConfig(**CFG, tie_embeddings=saved_tied))
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG, tie_embeddings=not saved_tied))
    model.load_state_dict(src.state_dict(), retie=True)
    assert model.config.tie_embeddings is saved_tied
    assert (model.lm_head.weight is model.wte.weight) is saved_tied
    now = dict(model.named_parameters(remove_duplicate=False))
    for path, p in src.named_parameters(remove_duplicate=False):
        np.testing.assert_array_equal(now[path].numpy(), p.numpy())


def test_retie_with_another_problem_changes_nothing():
    sd = _good()                                       # tied
    _wrong_shape(sd)
    nt.manual_seed(5)
    model = GPT(GPTConfig(**CFG, tie_embeddings=False))
    snap = snapshot(model)
    with pytest.raises(StateDictError, match="wpe.weight"):
        model.load_state_dict(sd, retie=True)
    assert_unchanged(model, snap)
    assert model.config.tie_embeddings is False


def test_evaluating_turns_off_dropout_and_the_graph_and_restores_the_mode():
    from nanotie.nn import Dropout, Linear
    model = Linear(3, 2)
    model.drop = Dropout(0.5)
    x = nt.tensor(np.ones((1, 3)), requires_grad=True)
    with model.evaluating():
        assert not model.training and not model.drop.training
        assert not model(x).requires_grad              # no graph inside the block
    assert model.training and model.drop.training
    model.eval()
    with pytest.raises(RuntimeError):
        with model.evaluating():
            raise RuntimeError("inside")
    assert not model.training                          # the mode it had, even after a raise
    assert model(x).requires_grad
    model.train()
    model.drop.eval()                                  # a part kept in eval mode
    with model.evaluating():
        pass
    assert model.training and not model.drop.training
