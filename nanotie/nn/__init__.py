"""Neural-network building blocks. ``nanotie.nn.functional`` (imported as ``F``) holds
the functions; modules, layers and optimizers build on them."""

from . import functional

__all__ = ["functional"]
