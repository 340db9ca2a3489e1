"""No implicit host copies in the papers' training paths.

On a GPU, nanotie's arrays are CuPy arrays, and CuPy refuses to turn one into a NumPy
array behind the program's back: ``np.asarray(cupy_array)`` raises ``TypeError:
Implicit conversion to a NumPy array is not allowed``, and so does a CuPy function
handed a NumPy array. Code that only ever ran on the CPU can hide such a call for
months (``np.asarray(targets)`` in a loss, say) and crash ``--device cuda`` minutes
into a run.

These tests catch it on the CPU. :class:`DeviceArray` is a NumPy array in disguise
that behaves as CuPy's does at the host boundary: its ``__array__`` raises, mixing it
with a NumPy array raises, and only ``.get()`` (or ``backend.asnumpy``) copies it
out. :func:`fake_gpu` makes nanotie's backend believe that a GPU is present whose
arrays are DeviceArrays, so ``device="cuda"`` runs the real code paths (parameters,
batches, losses, backward, optimizer) on them. A few training steps of each paper's
model then either pass, or fail with the line that copies to the host.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from numpy.lib.mixins import NDArrayOperatorsMixin

from nanotie import backend

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")     # CuPy's own words


class HostMixError(TypeError):
    """A NumPy (host) array was handed to an operation on device arrays."""


# ------------------------------------------------------------------ the array


def _unwrap(value, strict: bool):
    """DeviceArray -> its NumPy data, through lists, tuples and dicts. ``strict``: a
    NumPy array with any elements (host data) raises, as in a CuPy function."""
    if isinstance(value, DeviceArray):
        return value._a
    if strict and isinstance(value, np.ndarray) and value.ndim > 0:
        raise HostMixError(f"a host np.ndarray {value.shape} was mixed with device arrays "
                           "(CuPy: Unsupported type <class 'numpy.ndarray'>)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, strict) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, strict) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results -> DeviceArrays (scalars too: CuPy reductions give 0-d arrays)."""
    if isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, DeviceArray):
        return DeviceArray(np.asarray(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_wrap(v) for v in value)
    return value


class DeviceArray(NDArrayOperatorsMixin):
    """An array "on the GPU": NumPy underneath, CuPy's rules at the host boundary."""

    __array_priority__ = 200

    def __init__(self, data: np.ndarray):
        self._a = data

    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT)

    def get(self) -> np.ndarray:
        """The explicit device -> host copy."""
        return self._a.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")                         # the DeviceArrays written in place
        result = getattr(ufunc, method)(*_unwrap(inputs, strict=True),
                                        **_unwrap(kwargs, strict=True))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args, strict=False), **_unwrap(kwargs, strict=False)))

    # -- the ndarray surface, answered by the data underneath
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, strict=False)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, strict=False)] = _unwrap(value, strict=True)

    def __getattr__(self, name):
        if name.startswith("__"):         # no __array_interface__ etc.: NumPy would read
            raise AttributeError(name)    # the data through them without asking
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a, strict=False),
                                              **_unwrap(k, strict=False)))
        return _wrap(attr)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (DeviceArray(np.asarray(row)) for row in self._a)

    def __float__(self):              # CuPy allows these (they synchronise and copy one
        return float(self._a)         # number), as does .item()

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"


# --------------------------------------------------------- the fake cupy module


def _device_function(fn):
    """A NumPy function as CuPy's: device arrays in, device arrays out. Host arrays are
    let through here (CuPy takes them as shapes, split points, index lists); the
    elementwise operators, where CuPy refuses them, are strict."""
    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args, strict=False), **_unwrap(kwargs, strict=False)))
    call.__name__ = getattr(fn, "__name__", "fn")
    return call


def _to_device(data, dtype=None, copy=True):
    """cupy.asarray / cupy.array: the explicit host -> device copy."""
    if isinstance(data, DeviceArray):
        data = data._a
    return DeviceArray(np.array(data, dtype=dtype, copy=True))


class _Namespace:
    """np.<sub> (random, fft, linalg, ...) with device arrays in and out."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        obj = getattr(self._inner, name)
        if isinstance(obj, types.ModuleType):
            return _Namespace(obj)
        if isinstance(obj, type) or not callable(obj):
            return obj
        return _device_function(obj)


class _Generator:
    def __init__(self, seed):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name):
        return _device_function(getattr(self._g, name))


class _Ufunc:
    """A ufunc whose call and ``.at`` take device arrays (cupy.add.at)."""

    def __init__(self, uf):
        self._uf = uf

    def __call__(self, *args, **kwargs):
        return _device_function(self._uf)(*args, **kwargs)

    def at(self, target, index, values):
        self._uf.at(_unwrap(target, True), _unwrap(index, False), _unwrap(values, True))


class FakeCupy(_Namespace):
    """Enough of ``cupy`` for nanotie's backend, on NumPy, with CuPy's boundary."""

    ndarray = DeviceArray
    __name__ = "cupy"             # code that keys caches by xp.__name__ must see two names

    def __init__(self):
        super().__init__(np)
        self.random = types.SimpleNamespace(default_rng=_Generator)
        self.cuda = types.SimpleNamespace(
            Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None))
        self.add = _Ufunc(np.add)
        self.asarray = _to_device
        self.array = _to_device
        self.ascontiguousarray = _to_device

    @staticmethod
    def is_available():
        return True


@pytest.fixture
def fake_gpu(monkeypatch):
    """nanotie's backend sees a GPU whose arrays are :class:`DeviceArray`."""
    fake = FakeCupy()
    monkeypatch.setattr(backend, "_cupy_status", lambda: (fake, ""))
    monkeypatch.setattr(backend, "_generators", {})
    cupyx = types.ModuleType("cupyx")
    special = types.SimpleNamespace(erf=_device_function(__import__("scipy.special").special.erf))
    cupyx.scipy = types.SimpleNamespace(special=special)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", special)
    return fake


# ------------------------------------------------------- the fake is faithful


def test_device_array_refuses_implicit_host_conversion(fake_gpu):
    a = backend.to_device(np.arange(6.0).reshape(2, 3), "cuda")
    assert isinstance(a, DeviceArray) and backend.device_of(a) == "cuda"
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([a, a])
    with pytest.raises(HostMixError):
        a + np.ones((2, 3))                     # a host array in a device operation
    # What CuPy allows: device arithmetic, reductions to 0-d device arrays, explicit copies.
    b = (a * 2 + 1).sum(axis=0)
    assert isinstance(b, DeviceArray) and isinstance(a.sum(), DeviceArray)
    np.testing.assert_array_equal(backend.asnumpy(b), [8.0, 12.0, 16.0])
    assert float(a.max()) == 5.0 and a[1, 2].item() == 5.0


def test_nanotie_tensors_train_on_the_fake_device(fake_gpu):
    """The engine itself is clean: a linear layer's step never leaves the device."""
    import nanotie as nt
    from nanotie.nn import Linear
    from nanotie.nn import functional as F
    from nanotie.nn.optim import AdamW

    nt.manual_seed(0)
    layer = Linear(4, 3, device="cuda")
    assert isinstance(layer.weight.data, DeviceArray)
    x = nt.Tensor(backend.to_device(np.ones((5, 4), np.float32), "cuda"))
    y = backend.to_device(np.array([0, 1, 2, 0, 1]), "cuda")
    opt = AdamW(list(layer.parameters()), lr=0.1)
    loss = F.cross_entropy(layer(x), y)
    loss.backward()
    opt.step()
    assert isinstance(layer.weight.grad, DeviceArray) and np.isfinite(loss.item())


def test_a_host_array_in_a_device_op_is_named_as_a_device_mix(fake_gpu):
    """A NumPy mask is no Tensor, so the ops' device check does not see it;
    backend.xp_of does, and says what to do instead of a TypeError from CuPy."""
    import nanotie as nt

    a = nt.tensor(np.ones((2, 3))).to("cuda")
    with pytest.raises(nt.DeviceError, match=r"different devices \(cpu and cuda\).*\.to"):
        nt.where(np.ones((2, 3), bool), a, a)


# ------------------------------------------------- the papers' training paths


def _train_steps(model, ids: np.ndarray, context: int, steps: int = 2):
    """A few steps of nanotie's own training loop on ``device="cuda"``."""
    from nanotie.train import TrainConfig, train

    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=1, eval_interval=steps,
                      eval_batches=1, weight_decay=0.0, block_size=context)
    return train(model, ids, ids, cfg, progress=False)


def _byte_ids(n=400):
    return np.frombuffer(b"the trellis ties one convolution across depth. " * 10,
                         dtype=np.uint8)[:n].astype(np.int64)


def test_trellis_lm_trains_on_the_device(fake_gpu):
    """The TrellisNet LM with its auxiliary loss, through train(): the path of
    ``reproduce trellis --device cuda`` that crashed on ``np.asarray(targets)``."""
    import nanotie as nt
    from nanotie.papers.trellis import LMConfig, SequenceLM, TrellisConfig, TrellisNet

    nt.manual_seed(0)
    core = TrellisNet(TrellisConfig(n_in=8, n_hid=8, n_out=8, n_levels=3, dilations=(1, 2, 4),
                                    aux_every=1, dropout_h=0.1), device="cuda")
    lm = SequenceLM(LMConfig(d_embed=8, context=8, aux_weight=0.3), core, 8, device="cuda")
    history = _train_steps(lm, _byte_ids(), 8)
    assert len(history.val_bpb) == 1 and np.isfinite(history.val_bpb[0])
    assert isinstance(lm.embedding.weight.data, DeviceArray)


@pytest.mark.parametrize("kind", ["tcn", "lstm"])
def test_trellis_baselines_train_on_the_device(fake_gpu, kind):
    import nanotie as nt
    from nanotie.papers.trellis import LMConfig, SequenceLM
    from nanotie.papers.trellis.experiment import build_core

    nt.manual_seed(0)
    core = build_core(kind, 8, budget=3000, H=12, levels=2, device="cuda")
    lm = SequenceLM(LMConfig(d_embed=8, context=8), core, 8, device="cuda")
    assert np.isfinite(_train_steps(lm, _byte_ids(), 8).val_bpb[0])


def test_trellis_adding_problem_trains_on_the_device(fake_gpu):
    from nanotie.papers.trellis import experiment

    prof = experiment.Profile(adding_T=8, adding_dilations=(1, 2, 4), adding_hidden=8,
                              adding_steps=2, adding_batch=4, adding_eval=8)
    core = experiment.build_core("trellis", 2, budget=0, H=8, levels=3, dilations=(1, 2, 4),
                                 n_out=4, device="cuda")
    res = experiment.train_adding(core, prof, seed=0, device="cuda", desc="adding",
                                  progress=False)
    assert np.isfinite(res["final_mse"])


def _tiny_gpt_config(cls=None, **extra):
    from nanotie.nn.transformer import GPTConfig

    cls = cls or GPTConfig
    return cls(context=8, d_model=16, n_layer=2, n_head=2, **extra)


def test_gpt_trains_on_the_device(fake_gpu):
    import nanotie as nt
    from nanotie.nn.transformer import GPT

    nt.manual_seed(0)
    model = GPT(_tiny_gpt_config()).to("cuda")
    assert np.isfinite(_train_steps(model, _byte_ids(), 8).val_bpb[0])


def test_headless_cwt_trains_on_the_device(fake_gpu):
    import nanotie as nt
    from nanotie.papers.headless import HeadlessConfig, HeadlessGPT
    from nanotie.papers.headless.experiment import zero_shot_loss
    from nanotie.train import TrainConfig, train

    nt.manual_seed(0)
    model = HeadlessGPT(_tiny_gpt_config(HeadlessConfig)).to("cuda")
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_interval=2,
                      eval_batches=1, weight_decay=0.0, block_size=8)
    h = train(model, _byte_ids(), _byte_ids(), cfg, loss_fn=zero_shot_loss, progress=False)
    assert np.isfinite(h.val_bpb[0])


def test_headless_masked_lm_trains_on_the_device(fake_gpu):
    import nanotie as nt
    from nanotie.papers.headless import HeadlessConfig
    from nanotie.papers.headless.mlm import MaskedLM, mlm_loss_fn
    from nanotie.train import TrainConfig, train

    nt.manual_seed(0)
    model = MaskedLM(_tiny_gpt_config(HeadlessConfig), objective="cwt").to("cuda")
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_interval=2,
                      eval_batches=1, weight_decay=0.0, block_size=8)
    h = train(model, _byte_ids(), _byte_ids(), cfg, loss_fn=mlm_loss_fn(), progress=False)
    assert np.isfinite(h.val_loss[0])


@pytest.mark.parametrize("mixer", ["hyena", "multihyena"])
def test_hyena_trains_on_the_device(fake_gpu, mixer):
    import nanotie as nt
    from nanotie.papers.hyena import HyenaConfig, HyenaLM

    nt.manual_seed(0)
    model = HyenaLM(_tiny_gpt_config(HyenaConfig, mixer=mixer, filter_width=8,
                                     filter_emb_dim=5)).to("cuda")
    assert np.isfinite(_train_steps(model, _byte_ids(), 8).val_bpb[0])


@pytest.mark.parametrize("variant", [
    dict(embedder="token"),
    dict(embedder="byte", byte_head="decoder", tie_embeddings=False),
    dict(embedder="byte", byte_head="softmax", tie_embeddings=False)])
def test_stlm_trains_on_the_device(fake_gpu, variant):
    import nanotie as nt
    from nanotie import data
    from nanotie.papers.stlm import STLM, ByteWindows, STLMConfig
    from nanotie.papers.stlm.experiment import loss_fn_for
    from nanotie.train import TrainConfig, train

    text = bytes(_byte_ids().astype(np.uint8))
    tok = data.BPETokenizer.train(text, 270)
    ids = tok.encode(text)
    nt.manual_seed(0)
    model = STLM(STLMConfig(vocab_size=tok.vocab_size, context=8, d_model=16, n_layer=2,
                            n_head=2, byte_window=4, byte_dim=8, byte_heads=2,
                            **variant)).to("cuda")
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_interval=2,
                      eval_batches=1, weight_decay=0.0, block_size=8)
    h = train(model, ids, ids, cfg, loss_fn=loss_fn_for(model, ByteWindows(tok, 4)),
              progress=False)
    assert np.isfinite(h.val_loss[0])


def test_tied_lora_trains_on_the_device(fake_gpu):
    import nanotie as nt
    from nanotie.nn.transformer import GPT
    from nanotie.papers.tied_lora import TiedLoRAConfig, attach

    nt.manual_seed(0)
    model = attach(GPT(_tiny_gpt_config()).to("cuda"), TiedLoRAConfig(rank=2))
    assert np.isfinite(_train_steps(model, _byte_ids(), 8).val_bpb[0])


def test_dynamic_tying_trains_on_the_device(fake_gpu):
    import nanotie as nt
    from nanotie.papers.dynamic_tying import DynamicTiedGPT, DynamicTyingConfig, TyingAgent
    from nanotie.papers.dynamic_tying.loop import train_dynamic
    from nanotie.train import TrainConfig

    nt.manual_seed(0)
    tying = DynamicTyingConfig(lm_steps_per_decision=1, q_hidden=8)
    model = DynamicTiedGPT(_tiny_gpt_config()).to("cuda")
    agent = TyingAgent(2, tying, seed=0, device="cuda")
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_interval=2,
                      eval_batches=1, weight_decay=0.0, block_size=8)
    run = train_dynamic(model, _byte_ids(), _byte_ids(), cfg, tying, agent=agent,
                        progress=False)
    assert run is not None
