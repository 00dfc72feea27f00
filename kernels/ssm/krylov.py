"""The state a dense discrete system reaches after a sequence, in log depth (no loop over L).

For ``x_s = A x_(s-1) + b u_s`` with a dense A (H, N, N) per channel, the state after L inputs
from ``x_(-1) = x0`` is::

    x_(L-1) = A^L x0 + sum_s A^(L-1-s) b u_s

S4's DPLR matrix is dense once discretised, so this is how :func:`dplr_ssm` carries its state
across a sequence. L is cut into chunks of c steps: the Krylov matrix [A^(c-1) b, ..., A b, b]
(H, N, c), built by doubling, turns every chunk's own contribution into one contraction, and
the chunk states are then folded pairwise with A^c, A^2c, A^4c, ... Cost: O(H N^3 log L) for
the powers plus O(batch H N L) for the contraction; memory O(H N c + batch H N L / c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.ssm.cauchy import DEFAULT_CHUNK


def krylov_matrix(A: torch.Tensor, b: torch.Tensor, length: int) -> torch.Tensor:
    """``[A^(length-1) b, ..., A b, b]`` -> (..., N, length): A (..., N, N), b (..., N).

    Built by doubling: from the m newest columns K_m, K_2m = [A^m K_m, K_m], with A^m squared
    each time, so log2(length) matrix products instead of a loop over the columns.
    """
    return _krylov_and_power(A, b, length)[0]


def _krylov_and_power(A: torch.Tensor, b: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the Krylov matrix of ``length`` columns, A^m) where m >= length is the power of two the
    doubling reached: for a power-of-two ``length``, A^length comes for free."""
    columns = b[..., None]  # (..., N, 1): A^0 b
    power = A
    while columns.shape[-1] < length:
        columns = torch.cat((power @ columns, columns), dim=-1)
        power = power @ power
    return columns[..., -length:], power


class DenseStatePlan:
    """What :func:`dense_ssm_state` needs of (A, b) alone, for reuse across calls with the same
    system (a decoder prefilling prompt after prompt with fixed parameters): the Krylov matrix of
    one chunk and the powers A^c, A^2c, A^4c, ... the fold uses (grown on demand).

    A plan kept across calls holds detached tensors (``detach=True``); one made for a single
    call keeps A's graph, so that gradients flow through the powers.
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor, chunk: int = DEFAULT_CHUNK, detach: bool = True) -> None:
        # A power-of-two chunk, so that the doubling that builds the Krylov matrix also yields
        # A^chunk; about N columns balance its cost (N^2 chunk) against the fold's.
        self.chunk = 1 << (max(1, min(chunk, A.shape[-1])) - 1).bit_length()
        self.A, self.b = (A.detach(), b.detach()) if detach else (A, b)
        columns, A_chunk = _krylov_and_power(self.A, self.b, self.chunk)
        self.columns = columns  # (H, N, c)
        self.powers = [A_chunk]  # A^(c 2^k)

    def power(self, k: int) -> torch.Tensor:
        """A^(c 2^k)."""
        while len(self.powers) <= k:
            self.powers.append(self.powers[-1] @ self.powers[-1])
        return self.powers[k]


def dense_ssm_state(
    A: torch.Tensor,
    b: torch.Tensor,
    u: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    plan: DenseStatePlan | None = None,
) -> torch.Tensor:
    """``A^L x0 + sum_s A^(L-1-s) b u_s`` -> (batch, H, N) in A's dtype.

    A: (H, N, N); b: (H, N); u: (batch, H, L) (real or complex); initial_state x0:
    (batch, H, N) or None (zero). ``plan`` (a :class:`DenseStatePlan` of the same A and b) skips
    recomputing what depends on A and b alone.
    """
    batch, _, length = u.shape
    if length == 0:
        zeros = torch.zeros(batch, *b.shape, dtype=A.dtype, device=A.device)
        return zeros if initial_state is None else initial_state.to(A.dtype)
    if plan is None:
        plan = DenseStatePlan(A, b, min(chunk, length), detach=False)
    chunk = plan.chunk
    n_chunks = -(-length // chunk)
    # Zeros before the first input change nothing, so pad at the front to whole chunks.
    u = F.pad(u, (n_chunks * chunk - length, 0)).to(A.dtype).unflatten(-1, (n_chunks, chunk))  # (batch, H, C, c)
    states = torch.einsum("hnj,bhcj->bchn", plan.columns, u)  # (batch, C, H, N): each chunk's own contribution
    state = _fold(states, plan)
    if initial_state is not None:
        state = state + torch.einsum("hnm,bhm->bhn", torch.linalg.matrix_power(A, length), initial_state.to(A.dtype))
    return state


def _fold(states: torch.Tensor, plan: DenseStatePlan) -> torch.Tensor:
    """``sum_c A_chunk^(C-1-c) states[:, c]`` -> (batch, H, N), pairwise in log2(C) rounds.

    states: (batch, C, H, N), oldest chunk first; round k uses A^(chunk 2^k) from the plan. Zero
    chunks in front pad C to a power of two; each round combines (older, newer) into
    A_p older + newer.
    """
    n = states.shape[1]
    padded = 1 << (n - 1).bit_length()
    if padded > n:
        states = torch.cat((states.new_zeros(states.shape[0], padded - n, *states.shape[2:]), states), dim=1)
    k = 0
    while states.shape[1] > 1:
        older, newer = states[:, 0::2], states[:, 1::2]
        states = torch.einsum("hnm,bchm->bchn", plan.power(k), older) + newer
        k += 1
    return states[:, 0]
