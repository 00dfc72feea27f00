"""Hyena's implicit long filter: a convolution kernel as long as the sequence, produced by a small
network from the position instead of stored tap by tap (Poli et al. 2023, section 3.3).

For channel c and position n = 0, 1, 2, ...::

    t_n     = n / (l_max - 1)                          # 0 .. 1 over the first l_max positions
    z_n     = [t_n, cos(f_b w_n), -sin(f_b w_n)  for each band b]   w_n = 2 pi n / l_max
    h[c, n] = FFN(z_n)[c] * (exp(-|delta_c| t_n) + shift)

with ``bands = (emb_dim - 1) / 2`` frequencies ``f_b`` evenly spaced from 1e-4 to ``bands - 1``
(Hyena's positional features), and the FFN ``Linear(emb_dim, width) -> Sine -> (Linear(width,
width) -> Sine) x depth -> Linear(width, channels, no bias)``, where ``Sine`` is
``sin(frequency * x)`` with a frequency learnt per unit. The window's decay rates ``|delta_c|``
are fixed, spread evenly over the channels from ``-ln(target) / slow_decay_pct`` to
``-ln(target) / fast_decay_pct``: a channel with ``decay_pct = p`` has its window fall to
``target`` at ``t = p``, so some channels look far back and others only near.

``l_max`` sets the time scale, not a limit: the features are defined at every position, so the
filter at length ``m`` is the first ``m`` taps of the filter at any longer length (decoding
extends it as the sequence grows), and a sequence longer than ``l_max`` gets taps with ``t > 1``.

Differences from the published code (HazyResearch/safari, zoology), decided here: each Sine layer
has its own frequencies (the reference shares one module between its three activations); the
positional features are fixed buffers computed on the fly (the reference stores them for
``l_max`` positions as a parameter with its own learning rate).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Sine(nn.Module):
    """``sin(frequency * x)`` with one learnt frequency per unit: x (..., width)."""

    def __init__(self, width: int, frequency: float) -> None:
        super().__init__()
        self.frequency = nn.Parameter(torch.full((width,), float(frequency)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.frequency * x)


class ImplicitFilter(nn.Module):
    """The kernel ``h`` (channels, length) of a long convolution, from the positions (module
    docstring).

    Args:
        channels: kernels produced (one per channel of the convolution).
        l_max: positions over which ``t`` runs from 0 to 1 (the training length).
        emb_dim: positional features: ``t`` and a cosine and a sine per band (odd, >= 3).
        width: hidden width of the FFN (Hyena's ``filter_order``, 64).
        depth: hidden ``Linear -> Sine`` layers after the first (2 in Hyena).
        frequency: initial frequency of the Sine activations (Hyena's ``w``, 1).
        modulate: multiply by the exponential window.
        fast_decay_pct, slow_decay_pct, target: the window's decay rates (0.3, 1.5, 1e-2).
        shift: added to the window (0: the window decays to ``target``).
    """

    def __init__(
        self,
        channels: int,
        l_max: int,
        emb_dim: int = 3,
        width: int = 64,
        depth: int = 2,
        frequency: float = 1.0,
        modulate: bool = True,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
        shift: float = 0.0,
    ) -> None:
        super().__init__()
        check_filter_arguments(l_max=l_max, emb_dim=emb_dim, width=width, depth=depth,
                               fast_decay_pct=fast_decay_pct, slow_decay_pct=slow_decay_pct, target=target)
        self.channels, self.l_max, self.emb_dim, self.modulate, self.shift = channels, l_max, emb_dim, modulate, shift
        bands = (emb_dim - 1) // 2
        self.register_buffer("bands", torch.linspace(1e-4, bands - 1, bands), persistent=False)
        rates = torch.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, channels).abs()
        self.register_buffer("decay", rates, persistent=False)  # (channels,)
        layers: list[nn.Module] = [nn.Linear(emb_dim, width), Sine(width, frequency)]
        for _ in range(depth):
            layers += [nn.Linear(width, width), Sine(width, frequency)]
        layers.append(nn.Linear(width, channels, bias=False))
        self.ffn = nn.Sequential(*layers)

    def features(self, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (length, emb_dim), t (length,)) of positions 0 .. length - 1."""
        n = torch.arange(length, dtype=torch.float64, device=device)
        t = n / (self.l_max - 1)
        angle = self.bands.to(device, torch.float64)[None, :] * (2 * math.pi * n / self.l_max)[:, None]
        z = torch.cat((t[:, None], torch.cos(angle), -torch.sin(angle)), dim=1)
        return z.to(dtype), t.to(dtype)

    def forward(self, length: int) -> torch.Tensor:
        """The first ``length`` taps of every channel's kernel: (channels, length), in float32 or
        wider. The network runs in float32 at least whatever its parameters' dtype: in bfloat16
        (8 bits of mantissa) the positions past about 256 would share their ``t``."""
        weight = self.ffn[0].weight
        work = torch.promote_types(weight.dtype, torch.float32)
        z, t = self.features(length, work, weight.device)
        h = z
        for layer in self.ffn:
            if isinstance(layer, nn.Linear):
                bias = None if layer.bias is None else layer.bias.to(work)
                h = nn.functional.linear(h, layer.weight.to(work), bias)
            else:  # Sine
                h = torch.sin(layer.frequency.to(work) * h)
        h = h.transpose(0, 1)  # (channels, length)
        if self.modulate:
            h = h * (torch.exp(-self.decay.to(work)[:, None] * t[None, :]) + self.shift)
        return h


def check_filter_fits(sizes: dict[str, int], defaults: dict[str, int], channels: int, emb_dim: int, width: int,
                      depth: int) -> None:
    """ValueError when the filter network's float32 parameters would not fit in the memory
    available, checked before anything is built (a depth of 10^12 would otherwise loop for ever
    building layers). Keyed at the mixer's argument furthest above its default: ``sizes`` and
    ``defaults`` map the mixer's argument names to their values and defaults."""
    from hybrids.memory import available_memory, format_bytes

    need = 4 * (emb_dim * width + depth * (width * width + 2 * width) + width * channels + 2 * width)
    available = available_memory("cpu")
    if available is None or need <= available:
        return
    key = max(sizes, key=lambda name: max(sizes[name], 1) / max(defaults[name], 1))
    raise ValueError(f"{key}: the filter network's parameters take {format_bytes(need)}, more than the "
                     f"{format_bytes(available)} of memory available")


def check_filter_arguments(**values) -> None:
    """ValueError naming the first of the filter's arguments that is out of range."""
    l_max, emb_dim = values["l_max"], values["emb_dim"]
    if isinstance(l_max, bool) or not isinstance(l_max, int) or l_max < 2:
        raise ValueError(f"l_max: must be an integer >= 2 (the positions over which t runs from 0 to 1), got {l_max!r}")
    if isinstance(emb_dim, bool) or not isinstance(emb_dim, int) or emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim: must be an odd integer >= 3 (t and a cosine and a sine per band), got {emb_dim!r}")
    for name in ("width", "depth"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "width" else 0):
            raise ValueError(f"{name}: must be an integer >= {1 if name == 'width' else 0}, got {value!r}")
    for name in ("fast_decay_pct", "slow_decay_pct"):
        if not values[name] > 0:
            raise ValueError(f"{name}: must be > 0, got {values[name]!r}")
    if not 0 < values["target"] < 1:
        raise ValueError(f"target: must be in (0, 1) (the window's value at t = decay_pct), got {values['target']!r}")
