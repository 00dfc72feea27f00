"""The auto-encoder readout (``StackConfig.readout = "last"``): MAD's compression set-up, where a
sequence is folded into the hidden state of its last token and reconstructed from it alone.

For the stack's normalised last hidden states h (B, L, d_model), the code is ``c = h[:, -1]``
(B, d_model); every position n gets ``c + p_n`` with ``p_n`` the fixed sinusoidal position
vector (Vaswani et al. 2017), then::

    z = GELU(Linear(RMSNorm(c + p_n)));  z = GELU(Linear(RMSNorm(z)));  features_n = RMSNorm(z)

and the LM head maps ``features`` to logits (B, L, vocab). Position n's output can read nothing
of the input but the code, so the task's loss over all positions measures what the code kept.
(The encoder stays causal, as MAD's: only the last position has read the whole sequence.)
"""

from __future__ import annotations


import torch
from torch import nn

READOUTS = ("tokens", "last")


def sinusoidal_positions(length: int, d_model: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(length, d_model): sin(n / 10000^(2i / d)) in even channels 2i, cos in odd ones 2i + 1."""
    n = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)
    angle = n / 10000 ** (i / d_model)
    p = torch.zeros(length, d_model, dtype=torch.float64, device=device)
    p[:, 0::2] = torch.sin(angle)
    p[:, 1::2] = torch.cos(angle)[:, : d_model // 2]
    return p.to(dtype)


class PooledDecoder(nn.Module):
    """The code (B, d_model) -> features (B, L, d_model) of every position (module docstring)."""

    def __init__(self, d_model: int, norm_eps: float | None = None) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.RMSNorm(d_model, eps=norm_eps) for _ in range(3))
        self.fc1, self.fc2 = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.act = nn.GELU()

    def forward(self, code: torch.Tensor, length: int) -> torch.Tensor:
        z = code[:, None, :] + sinusoidal_positions(length, code.shape[-1], code.dtype, code.device)
        z = self.act(self.fc1(self.norm1(z)))
        z = self.act(self.fc2(self.norm2(z)))
        return self.norm3(z)


