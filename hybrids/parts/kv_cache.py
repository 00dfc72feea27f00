"""A preallocated key/value cache for decoding with attention mixers.

:class:`KVCache` keeps K and V of shape (batch, kv_heads, capacity, head_dim) in buffers that are
written in place: appending a token (``step``) or a block of tokens (``prefill``) copies only the
new keys, and the buffers are replaced only when they are full, by buffers of twice the capacity
(so a decode of n tokens copies O(n) elements in all, amortised O(1) per token, where a cache that
grows by concatenation copies the whole cache every token, O(n^2)). A capacity given up front
(``capacity=``, e.g. the prompt plus the tokens to generate) is allocated once and never grown.

The same class serves the bounded caches of local attention: with ``keep_last=w`` it keeps the
first ``keep_first`` tokens for good (global tokens, attention sinks) and only the latest ``w``
of the others, in a ring of ``w`` slots after the first ``keep_first`` slots. Such a cache never
holds more than ``keep_first + w`` tokens and stops growing there; each new token overwrites the
slot of the token ``w`` positions before it.

The cache is itself a mixer state: a ``dict`` whose items ``"k"`` and ``"v"`` are views of the live
slots, (batch, kv_heads, length, head_dim), as a plain state of tensors would hold, and whose
:meth:`state_elements` counts those live elements only (not the spare capacity), so that
``mixer.state_size(L) * batch == state_elements(state)`` holds for a preallocated cache too.
The buffers themselves are attributes; the views are refreshed after every write, so the items
are for reading: write through :meth:`append`.

``append`` updates the cache in place (and a mixer's ``step`` / ``prefill`` return the same
object): to branch one prompt into several continuations, :meth:`clone` it first.
"""

from __future__ import annotations

import torch

# The smallest capacity a growing cache allocates, in tokens: doubling from 1 would reallocate
# five times over the first 16 tokens for nothing.
MIN_CAPACITY = 16


class KVCache(dict):
    """K and V of ``batch_size`` sequences in preallocated buffers (batch, kv_heads, capacity,
    head_dim), written in place.

    Args:
        batch_size, kv_heads, head_dim: the shape of the cached keys and values.
        capacity: tokens to allocate up front (0: allocate on the first append). Appending beyond
            it grows the buffers to ``max(needed, 2 * capacity)``.
        keep_first: with ``keep_last``, the first ``keep_first`` tokens are kept for good.
        keep_last: None keeps every token; an int ``w`` keeps only the latest ``w`` tokens after
            the first ``keep_first`` (a ring), so at most ``keep_first + w`` tokens are held and
            the capacity never exceeds that bound.
        device, dtype: of the buffers (the mixer's parameters').

    Attributes:
        position: tokens appended so far (the absolute position of the next token).
        length: live slots, ``position`` for a cache that keeps every token, else
            ``min(position, keep_first) + min(position - keep_first, keep_last)``.
        reallocations: how many times the buffers were replaced by larger ones (the first
            allocation of a cache made with ``capacity=0`` counts too).

    Slot ``s`` holds position ``s`` until the ring wraps; afterwards ring slot ``keep_first + r``
    holds the latest position ``p`` with ``(p - keep_first) % keep_last == r``
    (:meth:`slot_positions`). Attention over the live slots does not care about their order
    (softmax is a sum over keys); masks that depend on positions read :meth:`slot_positions`, and
    :meth:`ordered` gives the keys in position order.
    """

    def __init__(
        self,
        batch_size: int,
        kv_heads: int,
        head_dim: int,
        capacity: int = 0,
        keep_first: int = 0,
        keep_last: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("kv_heads", kv_heads), ("head_dim", head_dim),
                            ("capacity", capacity), ("keep_first", keep_first)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an int >= 0, got {value!r}")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last: must be a positive int, or None to keep every token, got {keep_last!r}")
        if keep_last is None and keep_first:
            raise ValueError("keep_first: only means something with keep_last (a cache that keeps every token)")
        self.batch_size, self.kv_heads, self.head_dim = batch_size, kv_heads, head_dim
        self.keep_first, self.keep_last = keep_first, keep_last
        self.position = self.length = self.reallocations = 0
        capacity = capacity if self.bound is None else min(capacity, self.bound)
        shape = (batch_size, kv_heads, capacity, head_dim)
        self._k = torch.empty(shape, device=device, dtype=dtype)  # (B, Hkv, capacity, hd)
        self._v = torch.empty(shape, device=device, dtype=dtype)
        self._refresh_views()

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def bound(self) -> int | None:
        """Most tokens ever held (``keep_first + keep_last``); None if every token is kept."""
        return None if self.keep_last is None else self.keep_first + self.keep_last

    @property
    def capacity(self) -> int:
        """Tokens the buffers can hold without growing."""
        return self._k.shape[2]

    def state_elements(self) -> int:
        """Live elements, K and V of every sequence: 2 * batch * kv_heads * head_dim * length."""
        return 2 * self.batch_size * self.kv_heads * self.head_dim * self.length

    def _length_after(self, position: int) -> int:
        if self.keep_last is None:
            return position
        first = min(position, self.keep_first)
        return first + min(position - first, self.keep_last)

    # -- writing --------------------------------------------------------------------------------

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` tokens (clipped to the bound) without changing the contents:
        if the buffers are smaller, replace them by buffers of ``max(capacity, 2 * old capacity,
        MIN_CAPACITY)`` tokens (doubling, so that n appends reallocate O(log n) times) and copy
        the live slots over."""
        if self.bound is not None:
            capacity = min(capacity, self.bound)
        if capacity <= self.capacity:
            return
        new_capacity = max(capacity, 2 * self.capacity, MIN_CAPACITY)
        if self.bound is not None:
            new_capacity = min(new_capacity, self.bound)
        shape = (self.batch_size, self.kv_heads, new_capacity, self.head_dim)
        k, v = self._k.new_empty(shape), self._v.new_empty(shape)
        # Growth happens only before a ring wraps (a ring's capacity reaches its bound first),
        # so the live slots are exactly [0, length) and keep their indices.
        k[:, :, : self.length] = self._k[:, :, : self.length]
        v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v
        self.reallocations += 1

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write the keys and values of the next n tokens, k and v (batch, kv_heads, n, head_dim),
        in place (cast to the cache's dtype). A ring keeps only what it must of them: the tokens
        among the first ``keep_first``, and the latest ``keep_last`` of the others."""
        expected = (self.batch_size, self.kv_heads, self.head_dim)
        if k.shape != v.shape or k.ndim != 4 or (k.shape[0], k.shape[1], k.shape[3]) != expected:
            raise ValueError(
                f"k, v: expected (batch={expected[0]}, kv_heads={expected[1]}, n, head_dim={expected[2]}), "
                f"got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        n, start = k.shape[2], self.position
        end = start + n
        self.reserve(self._length_after(end))
        if self.keep_last is None:
            self._write(k, v, start, 0, n)
        else:
            first, last = self.keep_first, self.keep_last
            # Tokens [start, min(end, first)) are kept tokens: slot = position.
            if start < first:
                self._write(k, v, start, 0, min(end, first) - start)
            # Of the others only the latest `last` matter: positions [lo, end), into the ring
            # slot first + (p - first) % last, one contiguous run or two when it wraps.
            lo = max(start, first, end - last)
            while lo < end:
                slot = first + (lo - first) % last
                run = min(end - lo, first + last - slot)
                self._write(k, v, slot, lo - start, run)
                lo += run
        self.position, self.length = end, self._length_after(end)
        self._refresh_views()

    def _write(self, k: torch.Tensor, v: torch.Tensor, slot: int, offset: int, n: int) -> None:
        """Slots [slot, slot + n) <- tokens [offset, offset + n) of k and v (B, Hkv, *, hd)."""
        self._k[:, :, slot : slot + n].copy_(k[:, :, offset : offset + n])
        self._v[:, :, slot : slot + n].copy_(v[:, :, offset : offset + n])

    def _refresh_views(self) -> None:
        self["k"], self["v"] = self.live()

    # -- reading --------------------------------------------------------------------------------

    def live(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the live slots, K and V (batch, kv_heads, length, head_dim), in slot order."""
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def slot_positions(self) -> torch.Tensor:
        """(length,) int64 on the cache's device: the absolute position each live slot holds."""
        slots = torch.arange(self.length, device=self._k.device)
        if self.keep_last is None or self.position <= self.bound:
            return slots  # nothing was overwritten: slot s holds position s
        first, last, newest = self.keep_first, self.keep_last, self.position - 1
        ring = slots[first:] - first  # r in [0, last)
        # The latest p <= newest with p - first = r (mod last).
        return torch.cat((slots[:first], newest - (newest - first - ring) % last))

    def ordered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the live slots in increasing position order (batch, kv_heads, length,
        head_dim): views while the ring has not wrapped, copies after."""
        k, v = self.live()
        if self.keep_last is None or self.position <= self.bound:
            return k, v
        order = self.slot_positions().argsort()
        return k.index_select(2, order), v.index_select(2, order)

    def clone(self) -> "KVCache":
        """An independent copy with the same contents, capacity and counters (to branch a decode)."""
        copy = type(self).__new__(type(self))  # a subclass's extra attributes come along in __dict__
        dict.__init__(copy)
        copy.__dict__.update(self.__dict__)
        copy._k, copy._v = self._k.clone(), self._v.clone()
        copy._refresh_views()
        return copy

    def __repr__(self) -> str:
        ring = "" if self.keep_last is None else f", keep_first={self.keep_first}, keep_last={self.keep_last}"
        return (
            f"KVCache(batch_size={self.batch_size}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
            f"position={self.position}, length={self.length}, capacity={self.capacity}{ring}, "
            f"dtype={self._k.dtype}, device={self._k.device})"
        )
