"""Which keys each query may see: :class:`SparsePattern` (window, dilation, global tokens,
BigBird random key blocks) and its dense rule, shared by every sparse-attention backend."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparsePattern:
    """Which keys each query may attend to.

    Causal (``causal=True``) query ``i`` sees key ``j <= i`` when any of these holds:

    - window: ``i - j < window * dilation`` and ``(i - j) % dilation == 0`` (``window=None``:
      every ``j <= i``, full causal attention);
    - global: ``i < global_tokens`` (a global query sees every earlier key) or
      ``j < global_tokens`` (every query sees the global keys);
    - random: ``j`` lies in one of the ``random_blocks`` key blocks drawn for the query's block
      (blocks of ``block_size`` positions; key blocks at or before the query block).

    Non-causal (``causal=False``, encoders): the window is symmetric, ``|i - j| < window *
    dilation`` with ``|i - j| % dilation == 0``; global queries see every key and every query sees
    the global keys; random key blocks are drawn among all blocks. The diagonal always lies in
    the window, so every query sees at least itself.

    Random blocks come from a ``torch.Generator`` seeded with ``seed``, one query block after
    the other, so they are deterministic, and in causal mode the blocks of a prefix do not depend
    on the length: ``dense_mask(n)`` is the leading (n, n) corner of ``dense_mask(L)``, as a
    decoder needs.
    """

    window: int | None
    dilation: int = 1
    global_tokens: int = 0
    random_blocks: int = 0
    block_size: int = 64
    causal: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("dilation", "global_tokens", "random_blocks", "block_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name}: must be an int, got {value!r}")
        if self.window is not None and (not isinstance(self.window, int) or isinstance(self.window, bool)):
            raise ValueError(f"window: must be an int or None (full attention), got {self.window!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window: must be positive (or None for full attention), got {self.window}")
        if self.dilation < 1:
            raise ValueError(f"dilation: must be positive, got {self.dilation}")
        if self.window is None and self.dilation != 1:
            raise ValueError(f"dilation: needs a window; window=None is full attention (got dilation={self.dilation})")
        if self.global_tokens < 0:
            raise ValueError(f"global_tokens: must be >= 0, got {self.global_tokens}")
        if self.random_blocks < 0:
            raise ValueError(f"random_blocks: must be >= 0, got {self.random_blocks}")
        if self.block_size < 1:
            raise ValueError(f"block_size: must be positive, got {self.block_size}")
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal: must be a bool, got {self.causal!r}")

    def within(self, L: int) -> "SparsePattern":
        """The same rule over ``L`` positions with every length capped at ``L`` (a window,
        dilation, global span or block longer than the sequence acts as one exactly ``L`` long:
        a dilation >= L keeps only the diagonal, a block >= L is the one block), so that no
        backend sizes a tensor by a value beyond the sequence. ``self`` where nothing exceeds L."""
        L = max(L, 1)
        capped = {name: L for name in ("window", "dilation", "global_tokens", "block_size")
                  if getattr(self, name) is not None and getattr(self, name) > L}
        return dataclasses.replace(self, **capped) if capped else self

    def random_key_blocks(self, L: int) -> torch.Tensor:
        """The random key blocks of each query block: int64 (n_blocks, min(random_blocks, n_blocks)),
        n_blocks = ceil(L / block_size).

        Row ``b`` lists, in increasing order, the distinct key blocks drawn uniformly for query
        block ``b`` (among blocks ``0..b`` if causal, all blocks otherwise); when fewer blocks
        exist than ``random_blocks``, all are taken and the row is padded with -1.
        """
        return _random_key_blocks(self, L).clone()

    def dense_mask(self, L: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool, True where query ``i`` (row) may attend key ``j`` (column)."""
        pos = torch.arange(L, device=device)
        return self.allowed(pos[:, None], pos[None, :], self.random_lookup(L, device))

    def allowed(self, i: torch.Tensor, j: torch.Tensor, random_lookup: torch.Tensor | None = None) -> torch.Tensor:
        """The rule of the class docstring, elementwise on broadcastable query and key positions.

        ``random_lookup`` (n_blocks, n_blocks) bool marks the drawn (query block, key block) pairs
        (see :meth:`random_lookup`); the FlexAttention mask and :meth:`dense_mask` both call this.
        """
        ok = self.in_window(i, j)
        if self.global_tokens:
            ok = ok | (i < self.global_tokens) | (j < self.global_tokens)
        if random_lookup is not None:
            # Clamped because FlexAttention also evaluates the padding past L of its last block.
            last = random_lookup.shape[0] - 1
            ok = ok | random_lookup[(i // self.block_size).clamp(max=last), (j // self.block_size).clamp(max=last)]
        if self.causal:
            ok = ok & (j <= i)
        return ok

    def in_window(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The window rule alone (including ``j <= i`` when causal), elementwise."""
        diff = i - j
        if not self.causal:
            diff = diff.abs()
        if self.window is None:
            return diff >= 0
        return (diff >= 0) & (diff < self.window * self.dilation) & (diff % self.dilation == 0)

    def random_lookup(self, L: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """(n_blocks, n_blocks) bool, True where the key block was drawn for the query block;
        None without random blocks."""
        if not self.random_blocks or L == 0:
            return None
        table = _random_key_blocks(self, L)
        lookup = torch.zeros(table.shape[0], table.shape[0] + 1, dtype=torch.bool)
        lookup.scatter_(1, table % (table.shape[0] + 1), True)  # -1 (no block) lands in the extra column
        return lookup[:, :-1].to(device)


def outside_inference_mode(build):
    """For cached builders of masks and tables: build them as ordinary tensors even when first
    asked for under ``torch.inference_mode()``, so that a training step that reuses the cached
    tensor later can save it for backward (inference tensors cannot be)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=64)
@outside_inference_mode
def _random_key_blocks(pattern: SparsePattern, L: int) -> torch.Tensor:
    """Cached draw behind :meth:`SparsePattern.random_key_blocks` (callers must not modify it)."""
    n_blocks = -(-L // pattern.block_size)
    # More random blocks than there are blocks draws them all: the columns beyond n_blocks could
    # only ever hold -1, so the table is no wider than n_blocks.
    table = torch.full((n_blocks, min(pattern.random_blocks, n_blocks)), -1, dtype=torch.long)
    generator = torch.Generator().manual_seed(pattern.seed)
    for block in range(n_blocks):
        # One draw per query block, in order: a causal block's draw depends only on the draws
        # before it, never on how many blocks follow.
        candidates = block + 1 if pattern.causal else n_blocks
        drawn = torch.randperm(candidates, generator=generator)[: pattern.random_blocks]
        table[block, : drawn.numel()] = drawn.sort().values
    return table
