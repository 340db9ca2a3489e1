"""The training loop: exact resume, the checkpoint cache, atomic and validated
checkpoints, evaluation, and that training actually learns."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

import nanotie as nt
from nanotie import data, nn
from nanotie import train as T

TINY = dict(vocab_size=256, context=16, d_model=16, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def splits():
    ids = np.frombuffer(data.prose_corpus(60_000), dtype=np.uint8)
    return data.train_val_split(ids, 0.2)


def make_model(seed=0, dropout=0.1):
    nt.manual_seed(seed)
    return nn.GPT(nn.GPTConfig(**TINY, dropout=dropout))


def config(**overrides):
    base = dict(steps=10, batch_size=4, warmup_steps=2, eval_interval=4, eval_batches=2)
    return T.TrainConfig(**{**base, **overrides})


def arrays(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def same_arrays(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def bits_per_byte(loss_nats_per_token, n_tokens, n_bytes):
    """Bits per byte from its definition: the total nats, loss * n_tokens, over ln 2 are
    the total bits, spread over the n_bytes those tokens encode."""
    return loss_nats_per_token * n_tokens / (n_bytes * math.log(2))


class Interrupt(Exception):
    pass


def stop_after(n):
    """A loss function that raises on the n-th training call (a simulated crash)."""
    calls = [0]

    def loss_fn(model, x, y):
        if model.training:
            calls[0] += 1
            if calls[0] == n:
                raise Interrupt
        return model(x, y)[1]
    return loss_fn


def test_resume_after_a_crash_is_bitwise_identical(splits, tmp_path):
    train_ids, val_ids = splits
    cfg = config(checkpoint_interval=3)
    straight = make_model()
    h1 = T.train(straight, train_ids, val_ids, cfg, progress=False)

    ck = tmp_path / "run.npz"
    with pytest.raises(Interrupt):
        T.train(make_model(), train_ids, val_ids, cfg, checkpoint=ck, progress=False,
                loss_fn=stop_after(8))          # dies during step 8; step 6 was saved
    with np.load(ck) as z:
        assert z["history/step"].tolist() == [1, 2, 3, 4, 5, 6]    # every 3 steps
        saved_seconds = float(z["history/seconds"])
    resumed = make_model(seed=99)               # other init and generator: all must be restored
    h2 = T.train(resumed, train_ids, val_ids, cfg, checkpoint=ck, progress=False)

    assert same_arrays(arrays(straight), arrays(resumed))
    assert h1.train_loss == h2.train_loss and h1.val_bpb == h2.val_bpb
    assert h2.step == list(range(1, cfg.steps + 1)) and all(type(s) is int for s in h2.step)
    assert h1.eval_step == h2.eval_step == [4, 8, 10]     # and the last step, off the interval
    assert h2.seconds > saved_seconds > 0                  # the clock goes on from the file


@pytest.mark.gpu
@pytest.mark.skipif(not nt.cuda_available(), reason="no CUDA GPU")
def test_resume_on_the_gpu(splits, tmp_path):
    """On CuPy the dropout generator is not saved, so without dropout a resumed run
    matches the straight one up to rounding: GPU kernels (atomic adds) may sum in any
    order, and Adam's g / sqrt(v) can turn a rounding difference in a near-zero
    gradient into a step of up to lr. So each array is compared as a whole."""
    train_ids, val_ids = splits
    cfg = config(checkpoint_interval=3)
    straight = make_model(dropout=0.0).to("cuda")
    T.train(straight, train_ids, val_ids, cfg, progress=False)
    ck = tmp_path / "run.npz"
    with pytest.raises(Interrupt):
        T.train(make_model(dropout=0.0).to("cuda"), train_ids, val_ids, cfg, checkpoint=ck,
                progress=False, loss_fn=stop_after(8))
    resumed = make_model(seed=99, dropout=0.0).to("cuda")
    T.train(resumed, train_ids, val_ids, cfg, checkpoint=ck, progress=False)
    assert all(p.device == "cuda" for p in resumed.parameters())
    a, b = arrays(straight), arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            assert np.linalg.norm(a[k] - b[k]) <= 1e-3 * np.linalg.norm(a[k]) + 1e-5, k


def test_a_finished_checkpoint_is_a_cache(splits, tmp_path):
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    first = make_model()
    h1 = T.train(first, train_ids, val_ids, config(), checkpoint=ck, progress=False)

    def must_not_train(model, x, y):
        raise AssertionError("a finished run must not train again")
    again = make_model(seed=5)
    h2 = T.train(again, train_ids, val_ids, config(), checkpoint=ck, progress=False,
                 loss_fn=must_not_train)
    assert same_arrays(arrays(first), arrays(again))
    assert h2.val_loss == h1.val_loss


def test_checkpoint_from_other_settings_is_refused_and_changes_nothing(splits, tmp_path):
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    model = make_model(seed=3)
    before = arrays(model)
    with pytest.raises(T.CheckpointError) as err:
        T.train(model, train_ids, val_ids, config(lr=1e-4, batch_size=2), checkpoint=ck,
                progress=False)
    assert "lr" in str(err.value) and "batch_size" in str(err.value)
    assert "\n" not in str(err.value) and str(ck) in str(err.value)     # one line
    assert same_arrays(before, arrays(model))


def test_checkpoint_for_another_model_is_refused_and_changes_nothing(splits, tmp_path):
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    nt.manual_seed(0)
    other = nn.GPT(nn.GPTConfig(**{**TINY, "d_model": 8}))
    before = arrays(other)
    with pytest.raises(T.CheckpointError, match="shape") as err:
        T.train(other, train_ids, val_ids, config(), checkpoint=ck, progress=False)
    assert "\n" not in str(err.value) and str(ck) in str(err.value)     # one line
    assert not isinstance(err.value, T.DamagedCheckpointError)       # kept, not retrained
    assert same_arrays(before, arrays(other))


def _garbage(raw):
    return b"\x93NUMPY this is not a checkpoint" * 7


def _truncated(raw):
    return raw[:200]


def _empty(raw):
    return b""


def _rewritten(raw, edit):
    """The .npz ``raw`` with its arrays passed through ``edit`` (a dict -> dict)."""
    import io
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        kept = edit({k: z[k] for k in z.files})
    buf = io.BytesIO()
    np.savez(buf, **kept)
    return buf.getvalue()


def _lacks_history(raw):
    """A readable .npz that misses a part."""
    return _rewritten(raw, lambda a: {k: v for k, v in a.items()
                                      if not k.startswith("history/")})


def _lacks_optimizer(raw):
    """Readable, with a history, but no optimizer state: damaged, not another model's."""
    return _rewritten(raw, lambda a: {k: v for k, v in a.items()
                                      if not k.startswith("optim/")})


def _config_not_json(raw):
    return _rewritten(raw, lambda a: {**a, "meta/config": np.array("{steps: 4")})


def _config_not_a_dict(raw):
    """Valid JSON, but a list where the TrainConfig's fields should be."""
    return _rewritten(raw, lambda a: {**a, "meta/config": np.array("[4, 2]")})


def _rng_state_malformed(raw):
    """Valid JSON, but not a generator's state: it used to fail after the model loaded."""
    return _rewritten(raw, lambda a: {
        **a, "rng/state": np.array('{"bit_generator": "PCG64", "state": 3}')})


@pytest.mark.parametrize("damage", [_garbage, _truncated, _empty, _lacks_history,
                                    _lacks_optimizer, _config_not_json, _config_not_a_dict,
                                    _rng_state_malformed],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_checkpoint_is_named_in_one_line_and_the_run_retrains(splits, tmp_path,
                                                                         capsys, damage):
    """Not a traceback on every rerun until the user finds the file: one line naming
    it, then the run trains from scratch exactly as without it, and replaces it."""
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    clean = make_model()
    T.train(clean, train_ids, val_ids, config(), checkpoint=ck, progress=False)
    capsys.readouterr()
    ck.write_bytes(damage(ck.read_bytes()))
    model = make_model()
    T.train(model, train_ids, val_ids, config(), checkpoint=ck, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ck) in err[0] and "damaged" in err[0], err
    assert "training from scratch" in err[0] and "allow_pickle" not in err[0]
    assert same_arrays(arrays(clean), arrays(model))

    def must_not_train(model, x, y):                 # the file is whole again: a cache
        raise AssertionError("a finished run must not train again")
    again = make_model(seed=5)
    T.train(again, train_ids, val_ids, config(), checkpoint=ck, progress=False,
            loss_fn=must_not_train)
    assert same_arrays(arrays(clean), arrays(again))


def test_load_checkpoint_says_damaged_not_unpickle(splits, tmp_path):
    ck = tmp_path / "run.npz"
    ck.write_bytes(_garbage(b""))
    model = make_model()
    before = arrays(model)
    opt = T.AdamW(model.parameters(), lr=0.1)
    sampler = data.BatchSampler(splits[0], 16, 4)
    with pytest.raises(T.DamagedCheckpointError, match="not an .npz archive") as err:
        T.load_checkpoint(ck, model, opt, sampler, config())
    assert "\n" not in str(err.value) and str(ck) in str(err.value)
    assert same_arrays(before, arrays(model))


@pytest.mark.parametrize("edit, word", [
    (lambda a: {k: v for k, v in a.items() if k != "sampler/rng_state"}, "rng_state"),
    (lambda a: {**a, "sampler/seed": np.array([1, 2])}, "does not fit")],
    ids=["no-rng-state", "seed-not-a-scalar"])
def test_a_checkpoint_the_sampler_refuses_leaves_the_optimizer_and_sampler_as_they_were(
        splits, tmp_path, edit, word):
    """The sampler is restored last: when it refuses, the optimizer and the sampler must
    not keep half of the checkpoint (the model is already restored on a refusal)."""
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    ck.write_bytes(_rewritten(ck.read_bytes(), edit))
    model = make_model(seed=3)
    opt, sampler = T.setup(model, train_ids, config())
    before = (arrays(model), opt.state_dict(), sampler.state_dict())
    with pytest.raises(T.CheckpointError, match=word):
        T.load_checkpoint(ck, model, opt, sampler, config())
    after = (arrays(model), opt.state_dict(), sampler.state_dict())
    assert all(same_arrays(b, a) for b, a in zip(before, after))


def test_a_checkpoint_that_cannot_be_opened_is_kept_not_replaced(splits, tmp_path,
                                                                 monkeypatch):
    """Permission denied is not damage: the run stops with the OSError before training,
    and the file (a finished run, perhaps) is not replaced by a run from scratch."""
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    old = ck.read_bytes()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(ck))
    monkeypatch.setattr(T.np, "load", denied)
    monkeypatch.setattr(T, "open", denied, raising=False)       # what train.py opens
    with pytest.raises(PermissionError, match="Permission denied"):
        T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    assert ck.read_bytes() == old


def test_a_failed_save_keeps_the_old_checkpoint(splits, tmp_path, monkeypatch):
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    T.train(make_model(), train_ids, val_ids, config(), checkpoint=ck, progress=False)
    old = ck.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(T.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        T.train(make_model(), train_ids, val_ids, config(steps=12), checkpoint=tmp_path / "b.npz",
                progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["run.npz"], "a failed save must leave no file behind"
    assert ck.read_bytes() == old


def test_training_learns_and_the_history_is_complete(splits):
    train_ids, val_ids = splits
    cfg = config(steps=40, batch_size=8, lr=1e-2, eval_interval=10, eval_batches=4)
    model = make_model(dropout=0.0)
    start = time.perf_counter()
    h = T.train(model, train_ids, val_ids, cfg, progress=False)
    assert 0 < h.seconds < time.perf_counter() - start
    assert h.step == list(range(1, 41)) and h.eval_step == [10, 20, 30, 40]
    assert len(h.train_loss) == len(h.lr) == len(h.grad_norm) == 40
    # bits per byte is the loss in bits for the byte tokenizer
    assert np.allclose(h.val_bpb, np.array(h.val_loss) / math.log(2))
    # uniform guessing over 256 bytes is 8 bits; 40 steps must beat it clearly
    assert h.val_bpb[-1] < h.val_bpb[0] and h.val_bpb[-1] < 6.0
    # warmup rises, then the cosine decays to lr * min_lr_ratio
    assert h.lr[0] < h.lr[1] and math.isclose(h.lr[1], max(h.lr))
    assert h.lr[-1] < h.lr[10] and math.isclose(min(h.lr), h.lr[-1])


def test_bits_per_byte_divides_by_the_bytes_a_token_stands_for(splits):
    """A token that stands for 4 bytes spreads its loss over 4 bytes: the bits per
    byte are a quarter of the bits per token, not four times them."""
    train_ids, val_ids = splits
    cfg = config(steps=4, batch_size=4, eval_interval=2, eval_batches=2)
    h = T.train(make_model(), train_ids, val_ids, cfg, bytes_per_token=4.0, progress=False)
    # any number of tokens, each standing for 4 bytes
    assert np.allclose(h.val_bpb, [bits_per_byte(v, 100, 400) for v in h.val_loss])


def test_evaluate_is_deterministic_and_leaves_the_mode(splits):
    _, val_ids = splits
    model = make_model()
    model.train()
    a = T.evaluate(model, val_ids, 16, 4, max_batches=3)
    b = T.evaluate(model, val_ids, 16, 4, max_batches=3)
    assert a == b and model.training
    assert 0 < a < 10


def test_each_step_uses_the_scheduled_rate(splits, monkeypatch):
    """The rate history records is the one every parameter group steps with (warmup
    and decay included), not a figure beside an optimizer left at ``lr``."""
    train_ids, val_ids = splits
    used = []
    step = T.AdamW.step

    def recording_step(opt):
        used.append([g["lr"] for g in opt.param_groups])
        step(opt)
    monkeypatch.setattr(T.AdamW, "step", recording_step)
    h = T.train(make_model(), train_ids, val_ids, config(steps=6), progress=False)
    assert len({len(groups) for groups in used}) == 1 and len(used[0]) >= 2
    assert used == [[lr] * len(used[0]) for lr in h.lr]
    assert h.lr[0] < h.lr[1] and h.lr[-1] < h.lr[1]     # it warmed up, then decayed


def test_a_run_depends_on_its_seed_not_on_the_generator_it_is_handed(splits):
    """``TrainConfig.seed`` seeds dropout too: whatever drew from the generator before,
    the same seed gives the same run, and another seed another run."""
    train_ids, val_ids = splits
    runs = []
    for left_at, seed in ((100, 0), (105, 0), (100, 1)):
        model = make_model(dropout=0.3)
        nt.manual_seed(left_at)                          # the generator left elsewhere
        runs.append(T.train(model, train_ids, val_ids, config(steps=3, seed=seed),
                            progress=False).train_loss)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_model_handed_over_in_eval_mode_is_trained_in_training_mode(splits):
    train_ids, val_ids = splits
    modes = []

    def loss_fn(model, x, y):
        modes.append(model.training)
        return model(x, y)[1]
    model = make_model()
    model.eval()
    T.train(model, train_ids, val_ids, config(steps=4, eval_interval=4), progress=False,
            loss_fn=loss_fn)
    assert modes[:4] == [True] * 4 and not any(modes[4:])    # 4 steps, then evaluation
    assert model.training


def test_progress_bar_is_quiet_when_asked(splits, capsys):
    train_ids, val_ids = splits
    T.train(make_model(), train_ids, val_ids, config(steps=2), progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_model_without_a_context_needs_a_block_size(splits):
    train_ids, val_ids = splits

    class Bigram(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(256, 256)

        def forward(self, x, y):
            logits = self.table(x)
            return logits, nn.functional.cross_entropy(logits, y)

    with pytest.raises(ValueError, match="block_size"):
        T.train(Bigram(), train_ids, val_ids, config(steps=2), progress=False)
    h = T.train(Bigram(), train_ids, val_ids, config(steps=2, block_size=8), progress=False)
    assert h.step == [1, 2]


def test_bad_train_config_is_a_clear_error():
    with pytest.raises(ValueError, match="steps"):
        T.TrainConfig(steps=0)
    for bad in (dict(lr=-1.0), dict(lr=0.0), dict(min_lr_ratio=-0.1), dict(min_lr_ratio=1.1),
                dict(warmup_steps=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            T.TrainConfig(**bad)
    for edge in (dict(min_lr_ratio=0.0), dict(min_lr_ratio=1.0), dict(grad_clip=0.0)):
        T.TrainConfig(**edge)                            # the ends are allowed; 0: no clipping


def test_loading_a_checkpoint_never_unpickles(splits, tmp_path):
    """An .npz can hold pickled objects, and unpickling runs code: a checkpoint with one
    is damaged, and the object's code never runs."""
    ck, ran = tmp_path / "run.npz", tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (ran.touch, ())
    np.savez(ck, **{"meta/config": np.array([Payload()], dtype=object)})
    model = make_model()
    opt = T.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(T.DamagedCheckpointError):
        T.load_checkpoint(ck, model, opt, data.BatchSampler(splits[0], 16, 4), config())
    assert not ran.exists()


@pytest.mark.parametrize("clip", [-1.0, float("nan")])
def test_a_negative_clip_norm_is_refused_not_a_sign_flip(clip):
    """max_norm / norm < 0 would multiply every gradient by a negative number."""
    with pytest.raises(ValueError, match="grad_clip must be >= 0"):
        T.TrainConfig(grad_clip=clip)
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.full(3, 2.0, dtype=np.float32)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        nn.optim.clip_grad_norm([p], clip)
    np.testing.assert_array_equal(p.grad, 2.0)


def test_an_atomic_write_takes_a_string_path_and_gets_the_umasks_mode(tmp_path):
    from nanotie.files import write_text

    outer = os.umask(0o022)
    try:
        write_text(str(tmp_path / "new" / "report.md"), "text")
    finally:
        os.umask(outer)
    path = tmp_path / "new" / "report.md"
    assert path.read_text() == "text" and path.stat().st_mode & 0o777 == 0o644


def test_no_pickle_in_checkpoints(splits, tmp_path):
    train_ids, val_ids = splits
    ck = tmp_path / "run.npz"
    outer = os.umask(0o027)
    try:
        T.train(make_model(), train_ids, val_ids, config(steps=2), checkpoint=ck,
                progress=False)
        assert os.umask(0o027) == 0o027, "the process's umask is left as it was"
    finally:
        os.umask(outer)
    with np.load(ck, allow_pickle=False) as z:     # raises if anything needs pickle
        assert all(z[k].dtype != object for k in z.files)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert ck.stat().st_mode & 0o777 == 0o640, "the umask's usual mode, not private"
