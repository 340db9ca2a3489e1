"""The configurations of Tied-LoRA: which of A, B, u, v are trained, and whether A and B
are tied. Each one's trainable count has a closed form (:func:`trainable_count`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# The named corners of the lattice: the paper's names for them.
PRESETS = {
    "LoRA": "untied:AB",       # LoRA with alpha = r: u and v frozen at 1
    "TL5": "tied:AB",          # tying alone: 1/L of LoRA's parameters
    "TL6": "tied:ABuv",        # the paper's pick: tied A, B plus trained u, v
    "VeRA-style": "tied:uv",   # random frozen A, B; only the scaling vectors train
}


@dataclass(frozen=True)
class TiedLoRAConfig:
    """One point of the lattice: (tie_AB, train_A, train_B, train_u, train_v) and a rank.

    The default is TL6: tied A and B, everything trained."""

    rank: int = 8            # r, the inner width of B A
    tie_AB: bool = True      # ONE A and ONE B shared by every layer (else one per layer)
    train_A: bool = True     # A (r, d) is trained; frozen, it stays at its random start
    train_B: bool = True     # B (3d, r) is trained
    train_u: bool = True     # the per-layer scale u_l (r,) is trained; frozen, u_l = 1
    train_v: bool = True     # the per-layer scale v_l (3d,) is trained; frozen, v_l = 1

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"TiedLoRAConfig: rank must be a positive int, got {self.rank!r}")
        if not self.trained:
            raise ValueError("TiedLoRAConfig: train_A, train_B, train_u and train_v are all "
                             "False, so nothing would be trained; train at least one")

    @property
    def trained(self) -> str:
        """The trained parts as letters, e.g. ``"ABuv"``."""
        return "".join(part for part in "ABuv" if getattr(self, f"train_{part}"))

    @property
    def key(self) -> str:
        """A name for any configuration, e.g. ``"tied:ABuv"`` or ``"untied:AB"``."""
        return f"{'tied' if self.tie_AB else 'untied'}:{self.trained}"

    @property
    def name(self) -> str:
        """The paper's name where it has one (LoRA, TL5, TL6, VeRA-style), else the key."""
        return next((name for name, key in PRESETS.items() if key == self.key), self.key)

    @property
    def zero_start(self) -> bool:
        """Whether the update diag(v) B diag(u) A is zero at step 0: it is when v is
        trained (v = 0) or B is trained while v is frozen (B = 0)."""
        return self.train_v or self.train_B

    @classmethod
    def from_key(cls, key: str, rank: int = 8) -> "TiedLoRAConfig":
        """The configuration of a preset name ("TL6") or a key ("tied:Bu")."""
        key = PRESETS.get(key, key)
        tie, sep, parts = key.partition(":")
        if not sep or tie not in ("tied", "untied") or set(parts) - set("ABuv"):
            raise ValueError(f"TiedLoRAConfig.from_key: {key!r} is neither a preset "
                             f"({', '.join(PRESETS)}) nor of the form 'tied:ABuv'")
        return cls(rank=rank, tie_AB=tie == "tied",
                   **{f"train_{p}": p in parts for p in "ABuv"})


def all_configurations(rank: int = 8) -> list:
    """Every configuration that trains something: 2 (tie) x 15 (non-empty subsets of
    A, B, u, v) = 30."""
    return [TiedLoRAConfig(rank, tie, *train)
            for tie in (True, False)
            for train in itertools.product((True, False), repeat=4) if any(train)]


def lattice(rank: int = 8) -> list:
    """The paper's sweep: LoRA, then the 15 tied configurations from TL6 (A, B, u, v
    all trained) to v alone, in the order of :func:`all_configurations`.

    Untied configurations other than LoRA are left out, as in the paper: untying
    FROZEN random matrices adds no trainable parameter, and untied trained A or B
    is LoRA's territory."""
    return ([TiedLoRAConfig.from_key("LoRA", rank)]
            + [c for c in all_configurations(rank) if c.tie_AB])


def trainable_count(config: TiedLoRAConfig, n_layer: int, d_model: int) -> int:
    """The closed-form count of the trainable scalars that the adapters add:

        copies * (train_A d r + train_B 3 d r) + L (train_u r + train_v 3 d)

    with copies = 1 when A, B are tied and L otherwise."""
    L, d, r = n_layer, d_model, config.rank
    copies = 1 if config.tie_AB else L
    return (copies * (config.train_A * d * r + config.train_B * 3 * d * r)
            + L * (config.train_u * r + config.train_v * 3 * d))
