"""The ``"torch"`` backend of :func:`hybrids.kernels.scan`: pure PyTorch, any device.

A Python loop over L steps costs microseconds of overhead per step whatever the tensor sizes,
so the sequence is cut into ``K`` segments of ``T`` steps that are scanned side by side: the
loop runs over the T positions of a segment, each step updating the states of all K segments
at once, (batch, dim, K, d_state). Each segment starts from zero; the true state entering
segment k follows from a short sequential pass over the segments, which starts from the initial
state (``start[0] = h0``, zeros if none is given),

    start[k+1] = exp(A * sum_{t in k} delta[t]) * start[k] + local_end[k],

and its effect on the outputs, ``C[t] . (exp(A * cumdelta[t]) * start[k])`` with ``cumdelta``
summed from the segment's first step, is added afterwards. Every factor is a decay ``<= 1``
(``A < 0``, ``delta >= 0``), so the split is as stable as the plain recurrence.

Inside the loop, the decays ``exp(delta A)`` and inputs ``delta u B`` of ``S`` consecutive steps
are formed at once, (S, batch, dim, K, d_state), so that each step is a single fused
multiply-add. ``S`` is chosen to keep such a block near 2^18 elements and at least sqrt(T)
steps (see :func:`_plan`): memory is O(batch * dim * d_state * K * (S + T / S)), never the
(batch, dim, L, d_state) of the reference.

The backward is hand-written: the adjoint ``g[t] = dL/dh[t]`` obeys the reversed recurrence
``g[t] = exp(delta[t+1] A) g[t+1] + C[t] dy[t]``, split over the same segments. Block by block,
backwards, it recomputes the block's states from saved block-start states, runs ``g`` through
the block, and forms every gradient with batched contractions. The pass that combines the
segments' adjoints right to left ends with ``dL/dstart[0]``, the gradient of the initial state.
"""

from __future__ import annotations

import math

import torch

from hybrids.kernels.scan.common import gated_scan

# Elements of the state updated by one loop step (batch * dim * K * d_state), and of one block
# of S steps (1 MiB in float32): large enough to amortise per-op overhead, small enough to stay
# in cache and to keep the working set far below the (batch, dim, L, d_state) of the reference.
_STEP_ELEMENTS = 1 << 16
_BLOCK_ELEMENTS = 1 << 18


def selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=None):
    return gated_scan(
        _scan, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=initial_state
    )


def _scan(u, delta, A, B, C, h0=None):
    return _SegmentedScan.apply(u, delta, A, B, C, h0)


def _plan(batch: int, dim: int, d_state: int, length: int) -> tuple[int, int, int]:
    """(K segments, T steps per segment, S steps per block) for this shape."""
    state = batch * dim * d_state
    segments = max(1, min(length, _STEP_ELEMENTS // state))
    steps = -(-length // segments)
    segments = -(-length // steps)  # no empty segment
    # The backward keeps the state at every block start, T / S of them, beside blocks of S
    # steps: S >= sqrt(T) bounds both by sqrt(T) states of all segments.
    block = max(math.isqrt(steps - 1) + 1 if steps > 1 else 1, _BLOCK_ELEMENTS // (state * segments))
    return segments, steps, max(1, min(steps, block))


class _Layout:
    """Step-major views: time position j of every segment at once.

    Channels are split as (groups, dim // groups) so that B and C broadcast over a group's
    channels without being copied per channel. Shapes, with P = dim // groups:
        x-like (delta, u, y, dy):  (T, batch, G, P, K)
        B, C:                      (T, batch, G, 1, K, N)
        A:                         (G, P, 1, N)
        states:                    (batch, G, P, K, N)
    """

    def __init__(self, u: torch.Tensor, A: torch.Tensor, groups: int) -> None:
        self.batch, self.dim, self.length = u.shape
        self.groups, self.d_state = groups, A.shape[1]
        self.K, self.T, self.S = _plan(self.batch, self.dim, self.d_state, self.length)
        self.padded = self.K * self.T

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, dim, L) -> (T, batch, G, P, K); padding steps are zero."""
        x = torch.nn.functional.pad(x, (0, self.padded - self.length))
        x = x.view(self.batch, self.groups, self.dim // self.groups, self.K, self.T)
        return x.permute(4, 0, 1, 2, 3).contiguous()

    def unsteps(self, x: torch.Tensor) -> torch.Tensor:
        """(T, batch, G, P, K) -> (batch, dim, L)."""
        x = x.permute(1, 2, 3, 4, 0).reshape(self.batch, self.dim, self.padded)
        return x[..., : self.length]

    def state_steps(self, x: torch.Tensor) -> torch.Tensor:
        """B or C, (batch, G, N, L) -> (T, batch, G, 1, K, N)."""
        x = torch.nn.functional.pad(x, (0, self.padded - self.length))
        x = x.view(self.batch, self.groups, self.d_state, self.K, self.T)
        return x.permute(4, 0, 1, 3, 2).unsqueeze(3).contiguous()

    def unstate_steps(self, x: torch.Tensor) -> torch.Tensor:
        """(T, batch, G, 1, K, N) -> (batch, G, N, L)."""
        x = x.squeeze(3).permute(1, 2, 4, 3, 0).reshape(self.batch, self.groups, self.d_state, self.padded)
        return x[..., : self.length]

    def A(self, A: torch.Tensor) -> torch.Tensor:
        return A.view(self.groups, self.dim // self.groups, 1, self.d_state)

    def blocks(self):
        """Slices of S consecutive step positions, in order."""
        return [slice(j, min(j + self.S, self.T)) for j in range(0, self.T, self.S)]


def _decay_and_input(delta, x, A4, Bs):
    """Decays exp(delta A) and inputs delta u B of a block: (S, batch, G, P, K, N) each."""
    return torch.exp(delta.unsqueeze(-1) * A4), x.unsqueeze(-1) * Bs


def _carry_over_segments(segment_decay, local_end, first):
    """States entering each segment: start[k+1] = segment_decay[k] * start[k] + local_end[k].

    segment_decay, local_end: (batch, G, P, K, N); ``first``: the state entering segment 0.
    Returns the starts (batch, G, P, K, N) and the state after the last segment.
    """
    starts = torch.empty_like(local_end)
    state = first
    for k in range(local_end.shape[3]):
        starts[:, :, :, k] = state
        state = segment_decay[:, :, :, k] * state + local_end[:, :, :, k]
    return starts, state


class _SegmentedScan(torch.autograd.Function):
    """(u, delta, A, B (batch, G, N, L), C, h0 (batch, dim, N) or None) -> y (batch, dim, L),
    last state (batch, dim, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0=None):
        lay = _Layout(u, A, B.shape[1])
        A4 = lay.A(A)
        delta_s, x_s = lay.steps(delta), lay.steps(delta * u)
        Bs, Cs = lay.state_steps(B), lay.state_steps(C)
        y_s = torch.empty_like(delta_s)
        state_shape = (lay.batch, lay.groups, lay.dim // lay.groups, lay.K, lay.d_state)
        h = u.new_zeros(state_shape)
        for steps in lay.blocks():  # each segment from zero, all segments side by side
            decay, inputs = _decay_and_input(delta_s[steps], x_s[steps], A4, Bs[steps])
            states = torch.empty_like(decay)
            for j in range(decay.shape[0]):
                h = torch.addcmul(inputs[j], decay[j], h, out=states[j])
            y_s[steps] = torch.einsum("sbgpkn,sbgkn->sbgpk", states, Cs[steps].squeeze(3))
        cumdelta = delta_s.cumsum(0)  # (T, batch, G, P, K), from each segment's first step
        segment_decay = torch.exp(cumdelta[-1].unsqueeze(-1) * A4)
        first = torch.zeros_like(h[:, :, :, 0]) if h0 is None else h0.reshape_as(h[:, :, :, 0])
        starts, last = _carry_over_segments(segment_decay, h, first)
        for steps in lay.blocks():  # add what each segment's true starting state contributes
            from_start = torch.exp(cumdelta[steps].unsqueeze(-1) * A4) * starts
            y_s[steps] += (from_start * Cs[steps]).sum(-1)
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.layout = lay
        return lay.unsteps(y_s), last.reshape(lay.batch, lay.dim, lay.d_state)

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, starts = ctx.saved_tensors
        lay = ctx.layout
        A4 = lay.A(A)
        delta_s, u_s = lay.steps(delta), lay.steps(u)
        x_s = delta_s * u_s
        Bs, Cs = lay.state_steps(B), lay.state_steps(C)
        dy_s = lay.steps(dy) if dy is not None else torch.zeros_like(delta_s)
        blocks = lay.blocks()

        # 1. States at every block start, from the true segment starts.
        block_starts, h = [], starts
        for steps in blocks:
            block_starts.append(h)
            decay, inputs = _decay_and_input(delta_s[steps], x_s[steps], A4, Bs[steps])
            for j in range(decay.shape[0]):
                h = torch.addcmul(inputs[j], decay[j], h)

        # 2. The adjoint carried into each segment from its right: run every segment backwards
        # from zero, then combine right to left. carry = exp(delta A) g at a segment's first step.
        carry = torch.zeros_like(starts)
        for steps in reversed(blocks):
            decay = torch.exp(delta_s[steps].unsqueeze(-1) * A4)
            feed = Cs[steps] * dy_s[steps].unsqueeze(-1)  # C[t] dy[t]: (S, batch, G, P, K, N)
            for j in reversed(range(decay.shape[0])):
                carry = decay[j] * (carry + feed[j])
        segment_decay = torch.exp(delta_s.sum(0).unsqueeze(-1) * A4)
        right = torch.empty_like(carry)  # adjoint entering segment k from segment k + 1
        incoming = dlast.reshape_as(starts[:, :, :, 0]) if dlast is not None else torch.zeros_like(starts[:, :, :, 0])
        for k in reversed(range(lay.K)):
            right[:, :, :, k] = incoming
            incoming = carry[:, :, :, k] + segment_decay[:, :, :, k] * incoming
        # ``incoming`` is now dL/dstart[0]: the gradient of the initial state.
        dh0 = incoming.reshape(lay.batch, lay.dim, lay.d_state) if ctx.needs_input_grad[5] else None

        # 3. Block by block, backwards: states forward, adjoint backward, then the gradients.
        du_s, ddelta_s = torch.empty_like(delta_s), torch.empty_like(delta_s)
        dB_s, dC_s = torch.empty_like(Bs), torch.empty_like(Cs)
        dA = torch.zeros_like(A4)
        g_next = right  # exp(delta[t+1] A) g[t+1], for t the last step of the block
        for steps, h in zip(reversed(blocks), reversed(block_starts)):
            dl, x, dys = delta_s[steps], x_s[steps], dy_s[steps]
            decay, inputs = _decay_and_input(dl, x, A4, Bs[steps])
            states = torch.empty_like(decay)
            for j in range(decay.shape[0]):
                h = torch.addcmul(inputs[j], decay[j], h, out=states[j])
            adjoint = Cs[steps] * dys.unsqueeze(-1)  # becomes g[t] in place
            for j in reversed(range(decay.shape[0])):
                adjoint[j] += g_next
                g_next = decay[j] * adjoint[j]
            dC_s[steps] = torch.einsum("sbgpkn,sbgpk->sbgkn", states, dys).unsqueeze(3)
            dx = torch.einsum("sbgpkn,sbgkn->sbgpk", adjoint, Bs[steps].squeeze(3))
            dB_s[steps] = torch.einsum("sbgpkn,sbgpk->sbgkn", adjoint, x).unsqueeze(3)
            # dL/d(delta A) = g[t] exp(delta A) h[t-1] = g[t] (h[t] - delta u B): no h[t-1] needed.
            d_decay = adjoint * (states - inputs)
            dA += torch.einsum("sbgpkn,sbgpk->gpn", d_decay, dl).unsqueeze(2)
            ddelta_s[steps] = torch.einsum("sbgpkn,gpqn->sbgpk", d_decay, A4) + dx * u_s[steps]
            du_s[steps] = dx * dl
        dB = lay.unstate_steps(dB_s)
        dC = lay.unstate_steps(dC_s)
        return lay.unsteps(du_s), lay.unsteps(ddelta_s), dA.reshape(lay.dim, lay.d_state), dB, dC, dh0
