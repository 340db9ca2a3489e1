"""Module and Parameter: containers of trainable tensors, and where tying lives.

Tying is ALIASING. Two modules are tied when their attributes hold the SAME
Parameter object, as in nanoGPT's one line ``lm_head.weight = wte.weight``. Nothing
is copied; everything else follows from that identity:

* :meth:`Module.parameters` walks the module tree and yields each Parameter ONCE,
  compared by identity (``is``), so an optimizer steps a tied weight once;
* the engine sums the gradients of a Parameter's uses, so the gradient of a tied
  weight is the sum of what its untied copies would get;
* :func:`count_parameters` counts each Parameter once, so tying shrinks the count;
* :meth:`Module.state_dict` saves a tied weight once, under its first name, with a
  ``__ties__`` table (alias -> that name); :meth:`Module.load_state_dict` restores
  the values and, if needed, the tie itself;
* :func:`tied_parameters` reports which module paths share a Parameter.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..ops._common import parse_to_args

__all__ = ["Parameter", "Module", "ModuleList", "ModuleDict", "count_parameters",
           "tied_parameters", "tie_report", "StateDictError", "TIES_KEY"]

TIES_KEY = "__ties__"   # the state_dict entry that lists "alias=name" pairs


class StateDictError(ValueError):
    """A state_dict that does not fit the model; the message lists every problem."""


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)      # a Tensor shares its array

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__()[len("tensor("):]


class Module:
    """Base class of every layer and model.

    Assigning a :class:`Parameter` or a Module to an attribute registers it, so the
    module tree can be walked. A subclass defines ``forward``; calling the module
    calls it.
    """

    def __init__(self):
        self.__dict__.update(_parameters=OrderedDict(), _buffers=OrderedDict(),
                             _persistent=set(), _modules=OrderedDict(), training=True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call "
                                 "super().__init__() before assigning attributes")
        was_buffer = name in self._buffers
        # As in PyTorch: a plain Tensor (or a number) put where a Parameter was registered
        # would silently drop it from parameters(), and so from the optimizer.
        if name in self._parameters and not isinstance(value, (Parameter, Module, type(None))):
            raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}' "
                            "(Parameter or None expected)")
        if was_buffer and not isinstance(value, (Tensor, Module, type(None))):
            raise TypeError(f"cannot assign {type(value).__name__} as buffer '{name}' "
                            "(Tensor or None expected)")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value     # tying: the same object may sit here too
        elif isinstance(value, Module):
            self._modules[name] = value
        elif was_buffer:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """A tensor that belongs to the module but is not trained (a mask, running
        statistics). It moves with ``to()``; persistent ones go in ``state_dict``."""
        value = value if isinstance(value, Tensor) or value is None else Tensor(value)
        self.__dict__.pop(name, None)
        self._buffers[name] = value
        if persistent:
            self._persistent.add(name)
        else:
            self._persistent.discard(name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ------------------------------------------------------------------ walking
    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True, _seen=None):
        """(path, module) for this module and every descendant, depth first. A module
        reached twice (a shared block) is yielded once unless ``remove_duplicate`` is
        False."""
        seen = set() if _seen is None else _seen
        if remove_duplicate:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            path = f"{prefix}.{name}" if prefix else name
            yield from child.named_modules(path, remove_duplicate, seen)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True):
        """(path, Parameter) pairs. Each Parameter comes ONCE, under the first path
        that reaches it, unless ``remove_duplicate`` is False: then every path that
        holds it is listed (that is how :func:`tied_parameters` finds ties)."""
        seen = set()
        for mpath, module in self.named_modules(prefix, remove_duplicate=False):
            for name, p in module._parameters.items():
                if remove_duplicate and id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mpath}.{name}" if mpath else name), p

    def parameters(self):
        """Each Parameter of the tree exactly once (by identity): tied weights once."""
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = ""):
        seen = set()
        for mpath, module in self.named_modules(prefix, remove_duplicate=False):
            for name, b in module._buffers.items():
                if b is not None and id(b) not in seen:
                    seen.add(id(b))
                    yield (f"{mpath}.{name}" if mpath else name), b

    def _persistent_buffers(self) -> dict:
        """path -> buffer, for the buffers that ``state_dict`` saves."""
        return {f"{mpath}.{name}" if mpath else name: b
                for mpath, module in self.named_modules(remove_duplicate=False)
                for name, b in module._buffers.items()
                if name in module._persistent and b is not None}

    def get_submodule(self, path: str) -> "Module":
        """The module at a dotted path such as ``"blocks.0.attn"`` ("" is self)."""
        module = self
        for part in path.split(".") if path else ():
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' "
                                     f"(in path '{path}')")
            module = module._modules[part]
        return module

    def apply(self, fn, _seen=None) -> "Module":
        """Call ``fn(module)`` on every module of the tree (children first), once each: a
        shared module, like a tied weight, is one module."""
        seen = set() if _seen is None else _seen
        for child in self.children():
            if id(child) not in seen:
                seen.add(id(child))
                child.apply(fn, seen)
        fn(self)
        return self

    # -------------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout on). Returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    @contextmanager
    def evaluating(self):
        """``with model.evaluating():`` eval mode and no graph inside the block; the
        mode each module had is restored after it, whatever happens inside."""
        modes = [(m, m.training) for m in self.modules()]   # a part kept in eval stays so
        self.eval()
        try:
            with no_grad():
                yield self
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)

    def eval(self) -> "Module":
        """Evaluation mode (dropout off). Returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every Parameter. Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """Move (``"cuda"``/``"cpu"``) or cast (``np.float64``) every Parameter and buffer
        IN PLACE: each keeps its identity, so ties survive the move."""
        device, dtype = parse_to_args(args, kwargs)
        if device is not None:
            backend.check_device(device)
        for t in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            for attr in ("data", "grad"):
                array = getattr(t, attr)
                if array is not None and device is not None:
                    array = backend.to_device(array, device)
                if array is not None and dtype is not None and array.dtype.kind == "f":
                    array = array.astype(dtype)
                setattr(t, attr, array)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # -------------------------------------------------------------- state_dict
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """NumPy copies of every Parameter and persistent buffer, by path.

        A tied Parameter is stored ONCE, under the first path that reaches it; the
        entry ``"__ties__"`` (a string array of ``"alias=path"``) lists its other
        paths. Every value is a plain array, so ``np.savez(f, **model.state_dict())``
        saves it without pickle."""
        out = OrderedDict((name, backend.asnumpy(t.data).copy()) for name, t in [
            *self.named_parameters(), *self._persistent_buffers().items()])
        ties = [f"{alias}={name}" for name, paths in tied_parameters(self).items()
                for alias in paths[1:]]
        out[TIES_KEY] = np.array(ties, dtype=np.str_)
        return out

    def _state_dict_problems(self, state: dict, ties: dict) -> list:
        """What else makes ``state`` (its tie table parsed into ``ties``) unfit for this
        model, one string per problem; a subclass with rules of its own overrides it."""
        return []

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy the values of a :meth:`state_dict` into this model, restoring ties.

        Everything is checked first: unknown and missing keys (when ``strict``),
        shapes, dtypes, and the tie table. Any problem raises
        :class:`StateDictError` listing ALL of them, and the model is left unchanged.
        """
        problems = []
        state = _as_state(state_dict)
        ties = _parse_ties(state.pop(TIES_KEY, []), problems)
        params = dict(self.named_parameters(remove_duplicate=False))   # every path
        buffers = self._persistent_buffers()
        # 1. Every stored array must fit a parameter or buffer of this model.
        for key, value in state.items():
            target = params.get(key, buffers.get(key))
            if target is None:
                if strict:
                    problems.append(f"unexpected key '{key}'")
                continue
            value = np.asarray(value)
            if value.shape != target.shape:
                problems.append(f"'{key}': checkpoint shape {value.shape} != model shape "
                                f"{target.shape}")
            elif value.dtype != target.dtype:
                problems.append(f"'{key}': checkpoint dtype {value.dtype} != model dtype "
                                f"{target.dtype}")
        # 2. The tie table: each alias must name a parameter tied to a stored one.
        for alias, name in ties.items():
            if alias not in params:
                problems.append(f"tie '{alias}={name}': this model has no parameter '{alias}'")
            elif name not in state:
                problems.append(f"tie '{alias}={name}': '{name}' is not stored in the "
                                "checkpoint")
            elif alias in state:
                problems.append(f"tie '{alias}={name}': '{alias}' is also stored separately")
            elif name not in params:    # a buffer, or an unknown key kept by strict=False
                problems.append(f"tie '{alias}={name}': '{name}' is not a parameter of this "
                                "model")
            elif params[alias].shape != params[name].shape:
                problems.append(f"tie '{alias}={name}': shapes {params[alias].shape} and "
                                f"{params[name].shape} differ in this model")
        # 3. Every parameter of the model must be covered, with the same ties.
        first_of = {alias: name for name, paths in tied_parameters(self).items()
                    for alias in paths[1:]}
        for path in params:
            if strict and path not in state and path not in ties:
                problems.append(f"missing key '{path}'")
            if path in state and first_of.get(path) in state:
                problems.append(f"'{path}' is tied to '{first_of[path]}' in this model, "
                                "but the checkpoint stores them separately")
        if strict:
            problems += [f"missing buffer '{k}'" for k in buffers if k not in state]
        problems += self._state_dict_problems(state, ties)
        if problems:
            raise StateDictError("load_state_dict: the checkpoint does not fit this "
                                 f"{type(self).__name__}:\n  - " + "\n  - ".join(problems))
        # Validated: now change the model, ties first, then values.
        for alias, name in ties.items():
            if params[alias] is not params[name]:
                mpath, _, attr = alias.rpartition(".")
                setattr(self.get_submodule(mpath), attr, params[name])
        for key, value in state.items():
            target = params.get(key, buffers.get(key))
            if target is not None:
                target.data = backend.to_device(np.array(value, copy=True), target.device)


def _as_state(state_dict) -> dict:
    """A copy of ``state_dict`` as a dict; a path or a model instead is a TypeError."""
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"load_state_dict: expected a dict of arrays (a state_dict(), or "
                        f"np.load of a saved one), got {type(state_dict).__name__}")
    return dict(state_dict)


def _parse_ties(array, problems: list) -> dict:
    """``{"alias": "name"}`` from the ``__ties__`` entry; a malformed one goes to ``problems``."""
    ties = {}
    for entry in np.asarray(array).reshape(-1).tolist():
        alias, sep, name = str(entry).partition("=")
        if not sep or not alias or not name:
            problems.append(f"malformed '{TIES_KEY}' entry {entry!r} (expected 'alias=name')")
            return {}
        ties[alias] = name
    return ties


def _checked(module, container: str) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"{container} holds Modules, got {type(module).__name__}")
    return module


class ModuleList(Module):
    """A list of modules, registered as children "0", "1", ...; the same module may
    appear twice (that is layer sharing, a form of tying)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        self._modules[str(len(self._modules))] = _checked(module, "ModuleList")
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __setitem__(self, i: int, module: Module) -> None:
        self._modules[str(range(len(self))[i])] = _checked(module, "ModuleList")

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of named modules."""

    def __init__(self, modules=None):
        super().__init__()
        for name, m in dict(modules or {}).items():
            self[name] = m

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __setitem__(self, name: str, module: Module) -> None:
        setattr(self, name, _checked(module, "ModuleDict"))

    def __contains__(self, name) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


# ------------------------------------------------------------- the tie report


def count_parameters(model: Module, trainable_only: bool = True) -> int:
    """The number of scalars in the model's UNIQUE Parameters (a tied weight counts
    once); with ``trainable_only``, frozen ones (``requires_grad=False``) are left out."""
    return sum(p.numel() for p in model.parameters()
               if p.requires_grad or not trainable_only)


def tied_parameters(model: Module) -> "OrderedDict[str, list]":
    """Which paths share a Parameter: ``{first path: [every path holding it]}``,
    only for Parameters reached by more than one path."""
    paths = {}
    for path, p in model.named_parameters(remove_duplicate=False):
        paths.setdefault(p, []).append(path)       # keyed by the Parameter itself (identity)
    return OrderedDict((ps[0], ps) for ps in paths.values() if len(ps) > 1)


def tie_report(model: Module) -> str:
    """A readable table of the ties, their sizes, and what tying saves."""
    ties = tied_parameters(model)
    params = dict(model.named_parameters())
    if not ties:
        return f"{type(model).__name__}: no tied parameters"
    lines = [f"{type(model).__name__}: {len(ties)} tied parameter(s)"]
    saved = 0
    for name, paths in ties.items():
        p = params[name]
        saved += p.numel() * (len(paths) - 1)
        lines.append(f"  {' = '.join(paths)}  shape {tuple(p.shape)}, "
                     f"{p.numel():,} values shared by {len(paths)} uses")
    total = count_parameters(model, trainable_only=False)
    lines.append(f"  unique parameters {total:,}; untied it would be {total + saved:,} "
                 f"({saved:,} saved)")
    return "\n".join(lines)
