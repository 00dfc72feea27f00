"""The Memorizing Transformer's kNN-augmented attention (Wu et al., ICLR'22) as a mixer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import apply_rotary, rotary_cos_sin
from hybrids.memory import available_memory, format_bytes
from hybrids.mixers.attention import resolve_head_dim
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize
from hybrids.parts.knn_memory import KNNMemory, check_search


class MemorizingAttention(Mixer):
    """Causal attention within a segment, plus attention over the top-k (key, value) pairs that
    each query retrieves from an external memory of the sequence's past segments.

    Positions are cut into segments of ``segment_length`` tokens. A query attends, per head:

    - *locally*, to the earlier tokens of its own segment and itself (rotary positions);
    - *to its memory*, to the ``top_k`` keys nearest to it (inner product of unit vectors) among
      the tokens of earlier segments still held: at most ``memory_size`` per sequence, the oldest
      evicted first. A segment enters the memory when it is complete, detached: no gradient
      flows into the memory, as in the paper.

    and mixes the two by a learned per-head gate, ``g * memory + (1 - g) * local`` with
    ``g = sigmoid(gate)``; a query with nothing to retrieve (the first segment, or a cleared
    memory) uses local attention alone. Queries and keys are normalised to unit length (so that
    keys written many steps ago stay comparable with today's queries) and scored with a learned
    per-head scale. Memory keys carry no position.

    ``forward`` over a long input runs the segments in order, filling the memory as it goes;
    ``prefill(x, state)`` continues from a state, so a long document fed as consecutive
    segments to the same batch slot (``hybrids.data.ByteText(segments=True)``) keeps one memory
    across them. :meth:`clear_memory` empties chosen sequences' memories at a document boundary.

    Args:
        d_model: model width.
        heads: attention heads.
        head_dim: width of a head; defaults to ``d_model // heads``.
        segment_length: tokens per segment (the local attention span, and the unit in which the
            memory is written). In segment mode the data's ``seq_len`` must be a multiple of it
            (:meth:`check_sequence_length`).
        memory_size: (key, value) pairs held per sequence and head; 0 turns retrieval off.
        top_k: keys retrieved per query and head (the paper: 32); at most ``memory_size``.
        index: ``"exact"``, ``"hnsw"`` or ``"ivf"`` (approximate ones need faiss).
        search: ``"torch"`` (exact top-k by matrix product) or ``"faiss"``; ``None`` takes faiss
            for approximate indexes and torch for ``"exact"``.
        hnsw_m, ivf_lists, ivf_probe: approximate index settings (:class:`KNNMemory`).
        rotary, rotary_base: rotary positions on local attention.
        bias: biases in the projections.

    The decoding state: the current segment's keys and values (unrotated, unit keys) and the
    memory, a :class:`~hybrids.parts.knn_memory.KNNMemory`. ``state_size(L)`` counts both:
    ``2 * heads * head_dim * (min(full segments * segment_length, memory_size) + L mod
    segment_length)``.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        head_dim: int | None = None,
        segment_length: int = 512,
        memory_size: int = 4096,
        top_k: int = 32,
        index: str = "exact",
        search: str | None = None,
        hnsw_m: int = 32,
        ivf_lists: int = 64,
        ivf_probe: int = 8,
        rotary: bool = True,
        rotary_base: float = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model)
        for name, value, least in (("heads", heads, 1), ("segment_length", segment_length, 1),
                                   ("memory_size", memory_size, 0), ("top_k", top_k, 1), ("hnsw_m", hnsw_m, 1),
                                   ("ivf_lists", ivf_lists, 1), ("ivf_probe", ivf_probe, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: must be an int >= {least}, got {value!r}")
        if memory_size and top_k > memory_size:
            # The memory would hand back at most memory_size keys per query: the rest of top_k
            # would be silently dropped (KNNMemory.search clamps it), not retrieved.
            raise ValueError(
                f"top_k: {top_k} exceeds memory_size ({memory_size}), the most keys a query can retrieve; "
                f"use top_k <= {memory_size} or a larger memory_size"
            )
        # Here as well as in KNNMemory (built at the first forward), so that a config fails before
        # training, with the argument's key.
        search = check_search(index, search)
        head_dim = resolve_head_dim(d_model, heads, head_dim, rotary)
        # The memory is allocated whole at its first write: refuse one that cannot be, for even
        # one sequence (keys and values, float32), here rather than at the first training step.
        one_sequence = 2 * heads * head_dim * memory_size * 4
        available = available_memory("cpu") if memory_size else None
        if available is not None and one_sequence > available:
            key = "head_dim" if head_dim > d_model else "memory_size"
            raise ValueError(f"{key}: memory_size {memory_size:,} x heads {heads} x head_dim {head_dim:,} take "
                             f"{format_bytes(one_sequence)} per sequence (keys and values), more than the "
                             f"{format_bytes(available)} of memory available")
        self.heads, self.head_dim = heads, head_dim
        self.segment_length, self.memory_size, self.top_k = segment_length, memory_size, top_k
        self.index, self.search = index, search
        self.hnsw_m, self.ivf_lists, self.ivf_probe = hnsw_m, ivf_lists, ivf_probe
        self.rotary, self.rotary_base = rotary, rotary_base
        self.q_proj = nn.Linear(d_model, heads * head_dim, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(heads * head_dim, d_model, bias=bias)
        # Unit queries and keys score in [-1, 1]: a learned per-head scale sets the softmax's
        # sharpness, starting where unnormalised attention of unit-variance entries would be.
        self.log_scale = nn.Parameter(torch.full((heads,), 0.5 * math.log(head_dim)))
        self.gate = nn.Parameter(torch.zeros(heads))  # sigmoid(0) = 1/2: memory and local alike

    # -- state ------------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        factory = self._factory()
        empty = torch.zeros(batch_size, self.heads, 0, self.head_dim, **factory)
        memory = KNNMemory(
            batch_size, self.heads, self.head_dim, max(self.memory_size, 1), index=self.index,
            search=self.search, hnsw_m=self.hnsw_m, ivf_lists=self.ivf_lists, ivf_probe=self.ivf_probe, **factory,
        )
        # position: tokens seen (its remainder by segment_length is the current segment's length).
        return {"k": empty, "v": empty.clone(), "memory": memory, "position": 0}

    # In the segment mode of training (hybrids.model.state_carry), this mixer's state always travels
    # from one segment to the next.
    carries_memory = True

    def check_sequence_length(self, seq_len: int) -> None:
        """Raise ValueError (``"segment_length: ..."``) unless the data's segments of ``seq_len``
        tokens can carry this mixer's memory from one to the next: ``seq_len`` must be a multiple
        of ``segment_length``, so that every document boundary (where the memory is cleared) falls
        on a boundary of this mixer's own segments (see :meth:`reset_state`).

        The mixer never sees the data at construction; whoever holds both (the CLI after
        instantiating model and data, or the Lightning module's setup) calls this before
        training, rather than letting the first segment batch fail (the validation sanity check).
        Only segment mode needs it: ordinary batches start from an empty state every time."""
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"segment_length: cannot be checked against the data's seq_len {seq_len!r}")
        if seq_len % self.segment_length == 0:
            return
        # The largest segment_length that fits, for the message (1 always divides).
        divisors = {d for i in range(1, math.isqrt(seq_len) + 1) if seq_len % i == 0 for d in (i, seq_len // i)}
        fits = max(d for d in divisors if d <= self.segment_length)
        raise ValueError(
            f"segment_length: {self.segment_length} does not divide the data's seq_len ({seq_len}); in segment mode a "
            "document boundary must fall on a segment boundary, so seq_len must be a multiple of segment_length: use "
            f"segment_length {fits} (the largest divisor of {seq_len} up to {self.segment_length}) or a seq_len that "
            f"is a multiple of {self.segment_length}"
        )

    @staticmethod
    def clear_memory(state: State, slots: torch.Tensor | None = None) -> None:
        """Empty the memory of the sequences where ``slots`` (batch,) is True (all if None)."""
        state["memory"].clear(slots)

    def reset_state(self, state: State, first: torch.Tensor) -> State:
        """At a segment boundary: the slots where ``first`` (batch,) is True start a new document
        with an empty memory. Refused mid-segment (the segment's local keys are shared by
        position): feed segments whose length is a multiple of ``segment_length``."""
        if state["position"] % self.segment_length:
            raise ValueError(
                f"segment_length={self.segment_length}: the data's segments must be a multiple of it, so that a "
                f"document boundary is a segment boundary (at position {state['position']})"
            )
        if bool(first.any()):
            self.clear_memory(state, first)
        return state

    state_size_rules = (StateSize(
        "2 * heads * head_dim * (min((L // segment_length) * segment_length, memory_size) + L % segment_length)",
        "the memory's (key, value) pairs of the finished segments (at most memory_size) and the current segment's"),)

    # -- computing --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.init_state(x.shape[0]))[0]

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._run(x, self.init_state(x.shape[0]) if state is None else state)

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self._run(x[:, None, :], state)
        return y[:, 0], state

    def _run(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B, L, d_model) from ``state`` -> y (B, L, d_model) and the state after it, one
        segment (or the rest of the current one) at a time."""
        b, length, _ = x.shape
        q = F.normalize(self.q_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2), dim=-1)
        k, v = self.kv_proj(x).view(b, length, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k = F.normalize(k, dim=-1)  # q, k, v: (B, H, L, hd)
        outputs, start = [], 0
        while start < length:
            offset = state["position"] % self.segment_length  # tokens of this segment already seen
            n = min(self.segment_length - offset, length - start)
            part = slice(start, start + n)
            # Keys of the segment so far: the state's (detached) and this call's (with gradient).
            seg_k = torch.cat([state["k"].to(k.dtype), k[:, :, part]], dim=2)  # (B, H, offset + n, hd)
            seg_v = torch.cat([state["v"].to(v.dtype), v[:, :, part]], dim=2)
            outputs.append(self._attend(q[:, :, part], seg_k, seg_v, offset, state["memory"]))
            state["k"], state["v"] = seg_k.detach(), seg_v.detach()
            state["position"] += n
            start += n
            if state["position"] % self.segment_length == 0:  # the segment is complete: memorise it
                if self.memory_size:
                    state["memory"].write(state["k"], state["v"])
                state["k"], state["v"] = state["k"][:, :, :0], state["v"][:, :, :0]
        y = torch.cat(outputs, dim=2) if outputs else q  # L = 0: q is empty, and keeps x in the graph
        return self.out_proj(y.transpose(1, 2).reshape(b, length, self.heads * self.head_dim)), state

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, offset: int, memory: KNNMemory):
        """Queries q (B, H, n, hd) at segment positions offset..offset+n-1 over the segment's keys
        (B, H, offset + n, hd) and the memory -> (B, H, n, hd)."""
        scale = self.log_scale.exp()[:, None, None]  # (H, 1, 1)
        n, seen = q.shape[2], keys.shape[2]
        ql, kl = q, keys
        if self.rotary:
            cos, sin = rotary_cos_sin(torch.arange(seen, device=q.device), self.head_dim, self.rotary_base, dtype=q.dtype)
            ql, kl = apply_rotary(q, cos[offset:], sin[offset:]), apply_rotary(keys, cos, sin)
        # Query i (segment position offset + i) sees keys j <= offset + i.
        mask = torch.arange(seen, device=q.device)[None, :] <= torch.arange(offset, offset + n, device=q.device)[:, None]
        scores = (ql @ kl.transpose(-1, -2)) * scale  # (B, H, n, seen)
        local = scores.masked_fill(~mask, -math.inf).softmax(-1) @ values
        if not self.memory_size or not memory.holds_any():
            return local
        index, valid = memory.search(q, self.top_k)  # (B, H, n, k): slots of the buffers
        b, h, _, k = index.shape
        flat = index.reshape(b, h, n * k, 1).expand(b, h, n * k, self.head_dim)
        mem_k = memory.keys.gather(2, flat).view(b, h, n, k, self.head_dim).to(q.dtype)
        mem_v = memory.values.gather(2, flat).view(b, h, n, k, self.head_dim).to(q.dtype)
        mem_scores = torch.einsum("bhnd,bhnkd->bhnk", q, mem_k) * scale  # (B, H, n, k)
        weights = mem_scores.masked_fill(~valid, -math.inf).softmax(-1).nan_to_num(0.0)  # no key: all 0
        retrieved = torch.einsum("bhnk,bhnkd->bhnd", weights, mem_v)
        gate = torch.sigmoid(self.gate)[:, None, None] * valid.any(-1, keepdim=True)  # (B, H, n, 1)
        return local + gate * (retrieved - local)
