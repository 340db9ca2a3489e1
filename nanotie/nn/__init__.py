"""Neural-network building blocks.

``functional`` (imported as ``F``) holds the functions; ``module`` the Module and
Parameter classes with the tying helpers; ``layers`` the standard layers;
``transformer`` the GPT; ``optim`` the optimizers.
"""

from . import functional, optim
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, RMSNorm, SwiGLU
from .module import (Module, ModuleDict, ModuleList, Parameter, StateDictError,
                     count_parameters, tie_report, tied_parameters)
from .transformer import GPT, Block, CausalSelfAttention, GPTConfig, KVCache

__all__ = ["functional", "optim", "Module", "ModuleList", "ModuleDict", "Parameter",
           "StateDictError", "count_parameters", "tied_parameters", "tie_report",
           "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "MLP", "SwiGLU",
           "GPT", "GPTConfig", "Block", "CausalSelfAttention", "KVCache"]
