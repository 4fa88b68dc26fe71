"""Width spaces: the independent channel groups of a slimmable network.

A slimmable network runs at many widths from one set of weights. Layers whose channel counts
must agree (everything added by a residual connection, a depthwise conv and the conv feeding it,
an SE block's output and the conv it scales) share one *channel group*. A width configuration is a
vector ``alpha`` with one multiplier per group, ``alpha[g] in [lower, 1]``, mapped to channels::

    c_g = max(1, round(alpha[g] * C_g))          # divisor == 1 (the paper's choice)
    c_g = min(C_g, max(div, round(alpha[g] * C_g / div) * div))   # hardware-friendly divisor

Example: a ResNet stage with 16 channels and ``alpha = 0.5`` runs its residual path at 8 channels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

AlphaLike = float | Sequence[float] | torch.Tensor | None
"""What the public API accepts as a width configuration: ``None`` (full width), a scalar (one
multiplier for every group) or a length-``dim`` vector."""

_TOL = 1e-6


@dataclass(frozen=True)
class ChannelGroup:
    """One independent channel group: its name and its full channel count ``C_g``."""

    name: str
    channels: int


@dataclass(frozen=True)
class WidthSpace:
    """The box ``[lower, 1]^dim`` of width multipliers of one model and its channel mapping."""

    groups: tuple[ChannelGroup, ...]
    lower: float
    divisor: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.lower <= 1.0:
            raise ValueError(f"width lower bound must lie in (0, 1], got {self.lower}")
        if self.divisor < 1:
            raise ValueError(f"divisor must be a positive integer, got {self.divisor}")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"channel group names must be unique, got {names}")

    @property
    def dim(self) -> int:
        """Number of independent width multipliers."""
        return len(self.groups)

    @property
    def full_channels(self) -> tuple[int, ...]:
        return tuple(g.channels for g in self.groups)

    # ----------------------------------------------------------------------------- validation
    def validate(self, alpha: AlphaLike) -> tuple[float, ...]:
        """Return ``alpha`` as a tuple of ``dim`` floats, or raise ``ValueError`` saying why not.

        ``None`` means full width; a real scalar means the same multiplier for every group.
        """
        if alpha is None:
            return (1.0,) * self.dim
        if isinstance(alpha, torch.Tensor):
            if alpha.dim() == 0:
                alpha = alpha.item()
            elif alpha.dim() == 1:
                if alpha.is_complex() or alpha.dtype == torch.bool:
                    raise ValueError(f"alpha must hold real numbers, got a {alpha.dtype} tensor")
                alpha = alpha.detach().cpu().double().tolist()
            else:
                raise ValueError(
                    f"alpha must be a scalar or a 1-D vector of {self.dim} multipliers, "
                    f"got a tensor of shape {tuple(alpha.shape)}"
                )
        if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
            values = [alpha] * self.dim
        elif isinstance(alpha, (str, bytes, bool)) or not (
            hasattr(alpha, "__len__") and hasattr(alpha, "__iter__")
        ):
            raise ValueError(
                f"alpha must be None, a number or a sequence of {self.dim} numbers, "
                f"got {type(alpha).__name__}"
            )
        else:
            values = list(alpha)
            if len(values) != self.dim:
                raise ValueError(
                    f"alpha must have {self.dim} entries (one per channel group: "
                    f"{', '.join(g.name for g in self.groups)}), got {len(values)}"
                )
        out = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"alpha[{i}] must be a real number, got {type(v).__name__}")
            f = float(v)
            if math.isnan(f) or math.isinf(f):
                raise ValueError(f"alpha[{i}] must be finite, got {f}")
            if f < self.lower - _TOL or f > 1.0 + _TOL:
                raise ValueError(
                    f"alpha[{i}] = {f:g} ({self.groups[i].name}) is outside the width range "
                    f"[{self.lower:g}, 1]"
                )
            out.append(min(1.0, max(self.lower, f)))
        return tuple(out)

    # ------------------------------------------------------------------------------- mapping
    def channels(self, alpha: AlphaLike) -> tuple[int, ...]:
        """Channel count of every group for ``alpha`` (validated)."""
        a = self.validate(alpha)
        return tuple(self._round(x, g.channels) for x, g in zip(a, self.groups))

    def channels_batch(self, alphas: torch.Tensor) -> torch.Tensor:
        """Vectorized :meth:`channels` for an ``(n, dim)`` tensor of already valid multipliers."""
        full = torch.tensor(self.full_channels, dtype=torch.float64, device=alphas.device)
        a = alphas.to(torch.float64).clamp(self.lower, 1.0)
        div = float(self.divisor)
        c = torch.floor(a * full / div + 0.5) * div
        return torch.minimum(full, torch.clamp(c, min=div)).clamp(min=1.0)

    def _round(self, alpha: float, full: int) -> int:
        div = self.divisor
        c = int(math.floor(alpha * full / div + 0.5)) * div
        return max(1, min(full, max(div, c)))

    # ------------------------------------------------------------------------------ sampling
    def uniform(self, w: float) -> tuple[float, ...]:
        """The configuration with every multiplier equal to ``w``."""
        return self.validate(float(w))

    @property
    def smallest(self) -> tuple[float, ...]:
        return (self.lower,) * self.dim

    @property
    def full(self) -> tuple[float, ...]:
        return (1.0,) * self.dim

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` configurations drawn uniformly from the box, as an ``(n, dim)`` float64 tensor."""
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        return self.lower + (1.0 - self.lower) * u

    def sample_uniform_widths(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` single multipliers drawn from U[lower, 1], broadcast to ``(n, dim)`` (US-Nets)."""
        u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
        return (self.lower + (1.0 - self.lower) * u).expand(n, self.dim).clone()

    # ---------------------------------------------------------------------------- (de)serialize
    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "lower": self.lower,
            "divisor": self.divisor,
            "groups": [{"name": g.name, "channels": g.channels} for g in self.groups],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "WidthSpace":
        groups = tuple(ChannelGroup(str(g["name"]), int(g["channels"])) for g in d["groups"])
        space = cls(groups, float(d["lower"]), int(d.get("divisor", 1)))
        if "dim" in d and int(d["dim"]) != space.dim:
            raise ValueError(f"width space says dim={d['dim']} but lists {space.dim} groups")
        return space
