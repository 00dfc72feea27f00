"""The external memory of :class:`~hybrids.mixers.MemorizingAttention`: (key, value) pairs of
past segments, one bounded memory per sequence of the batch, searched for the top-k keys of
each query.

The memory's buffers are the truth: keys and values (batch, heads, capacity, head_dim), written
as a ring per sequence, so that once a sequence's memory is full each new entry evicts the
oldest. A search index mirrors them:

- ``search="torch"``: exact top-k by a matrix product over the live entries (queries in chunks,
  so the scores never exceed ``SCORE_BUDGET`` elements per sequence and head). No dependency;
  fine for memories of some thousands of entries and for tests.
- ``search="faiss"``: a faiss index per (sequence, head): ``index="exact"`` (``IndexFlatIP``),
  ``"hnsw"`` (``IndexHNSWFlat``, ``hnsw_m`` links per node) or ``"ivf"`` (``IndexIVFFlat``,
  up to ``ivf_lists`` cells, at most one per 39 entries, ``ivf_probe`` of them searched; trained
  on the memory's contents when the index is built, and built again each time the memory has
  doubled since). New entries are added to the index as they are written; an eviction (the
  ring wrapping) makes faiss rebuild that sequence's indexes from the buffers at the next search,
  since HNSW cannot delete: once a memory is full, every search after a write rebuilds, O(capacity)
  per sequence and head, which for HNSW and IVF costs far more than the search itself. faiss searches float32 on the CPU; the buffers stay where they are.

Searches return indices into the buffers, not scores: the caller gathers the keys and values
and scores them itself, so gradients reach the queries (never the memory) and approximate
indexes only decide *which* keys are used.
"""

from __future__ import annotations

import torch

INDEXES = ("exact", "hnsw", "ivf")
SEARCHES = ("torch", "faiss")
# Scores the torch search may hold at once per (sequence, head), in elements.
SCORE_BUDGET = 1 << 22


def faiss_or_none():
    """The faiss module, or None where faiss-cpu is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def check_search(index: str, search: str | None) -> str:
    """The search for ``index`` (None: faiss for approximate indexes, torch for "exact"),
    checked: known names, approximate indexes on faiss, faiss installed.

    Raises ValueError starting with the argument at fault (``"search: ..."``), as mixers do, so
    that a model config names its key (:func:`hybrids.model.mixer_specs.build_mixer` maps
    ValueErrors to keyed config errors; an ImportError would pass through as a traceback)."""
    if index not in INDEXES:
        raise ValueError(f"index: unknown {index!r}; use one of {INDEXES}")
    if search is not None and search not in SEARCHES:
        raise ValueError(f"search: unknown {search!r}; use one of {SEARCHES} or None")
    if index != "exact" and search == "torch":
        raise ValueError(
            f"search: 'torch' is exact only; index={index!r} is approximate and needs search='faiss' (or None), "
            "or use index='exact'"
        )
    chosen = search if search is not None else ("torch" if index == "exact" else "faiss")
    if chosen == "faiss" and faiss_or_none() is None:
        install = "pip install -e '.[faiss]' (faiss-cpu)"
        if search is None:  # implied by the index: the index is what was asked for
            raise ValueError(
                f"index: {index!r} is approximate and searches with faiss, which is not installed: {install}; "
                "or use index='exact'"
            )
        raise ValueError(
            f"search: 'faiss' needs the faiss package, which is not installed: {install}; or use search='torch'"
        )
    return chosen


class KNNMemory:
    """A bounded (key, value) memory per sequence and head; see the module docstring.

    Args:
        batch_size, heads, head_dim: the shape of what is stored.
        capacity: entries kept per sequence (per head); writing beyond evicts the oldest.
        index: ``"exact"``, ``"hnsw"`` or ``"ivf"`` (the last two need ``search="faiss"``).
        search: ``"torch"`` or ``"faiss"``.
        hnsw_m, ivf_lists, ivf_probe: settings of the approximate indexes.
        device, dtype: of the buffers.

    Attributes:
        count: (batch,) int64, entries held per sequence, at most ``capacity``.
        written: (batch,) int64, entries ever written per sequence since it was last cleared
            (the ring's write position is ``written % capacity``).
    """

    def __init__(
        self,
        batch_size: int,
        heads: int,
        head_dim: int,
        capacity: int,
        index: str = "exact",
        search: str = "torch",
        hnsw_m: int = 32,
        ivf_lists: int = 64,
        ivf_probe: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_search(index, search)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity: must be a positive int, got {capacity!r}")
        self.batch_size, self.heads, self.head_dim, self.capacity = batch_size, heads, head_dim, capacity
        self.index, self.search_with = index, search
        self.hnsw_m, self.ivf_lists, self.ivf_probe = hnsw_m, ivf_lists, ivf_probe
        # Allocated on the first write, so that a memory that is never written costs nothing.
        self.keys = torch.empty(batch_size, heads, 0, head_dim, device=device, dtype=dtype)
        self.values = torch.empty_like(self.keys)
        self.count = torch.zeros(batch_size, dtype=torch.int64)
        self.written = torch.zeros(batch_size, dtype=torch.int64)
        # faiss: per sequence, a list of one index per head and how many ring slots they cover.
        self._faiss: list[list | None] = [None] * batch_size
        self._indexed = [0] * batch_size
        self._trained_on = [0] * batch_size  # IVF: entries its cells were trained on

    # -- writing ----------------------------------------------------------------------------

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append (batch, heads, n, head_dim) keys and values to every sequence's memory,
        evicting the oldest entries beyond ``capacity``. Stored detached."""
        n = keys.shape[2]
        if n == 0:
            return
        if self.keys.shape[2] == 0:
            shape = (self.batch_size, self.heads, self.capacity, self.head_dim)
            self.keys = self.keys.new_zeros(shape)
            self.values = self.values.new_zeros(shape)
        keys, values = keys.detach().to(self.keys.dtype), values.detach().to(self.values.dtype)
        if n > self.capacity:  # only the latest `capacity` survive
            skipped = n - self.capacity
            keys, values = keys[:, :, skipped:], values[:, :, skipped:]
            self.written += skipped
            n = self.capacity
        for b in range(self.batch_size):
            start = int(self.written[b]) % self.capacity
            slots = (torch.arange(n) + start) % self.capacity
            self.keys[b][:, slots.to(self.keys.device)] = keys[b]
            self.values[b][:, slots.to(self.keys.device)] = values[b]
        self.written += n
        self.count = self.written.clamp(max=self.capacity)

    def clear(self, slots: torch.Tensor | None = None) -> None:
        """Empty the memories of the sequences where ``slots`` (batch,) bool is True (all if
        None), e.g. at a document boundary."""
        which = torch.ones(self.batch_size, dtype=torch.bool) if slots is None else slots.to("cpu", torch.bool)
        for b in torch.nonzero(which).flatten().tolist():
            self.written[b] = 0
            self._faiss[b], self._indexed[b], self._trained_on[b] = None, 0, 0
        self.count = self.written.clamp(max=self.capacity)

    def holds_any(self) -> bool:
        """Whether any sequence's memory holds an entry."""
        return bool(self.count.any())

    def state_elements(self) -> int:
        """Live entries: keys and values of what every sequence holds (not the spare capacity)."""
        return int(self.count.sum()) * 2 * self.heads * self.head_dim

    def clone(self) -> "KNNMemory":
        copy = KNNMemory.__new__(KNNMemory)
        copy.__dict__.update(self.__dict__)
        copy.keys, copy.values = self.keys.clone(), self.values.clone()
        copy.count, copy.written = self.count.clone(), self.written.clone()
        copy._faiss, copy._indexed = [None] * self.batch_size, [0] * self.batch_size  # rebuilt on use
        copy._trained_on = [0] * self.batch_size
        return copy

    # -- searching --------------------------------------------------------------------------

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (batch, heads, L, head_dim) -> (indices (batch, heads, L, k') into the buffers,
        valid (batch, heads, L, k') bool), k' = min(k, capacity); a sequence holding fewer than
        k' entries marks the rest invalid."""
        batch, heads, length, _ = queries.shape
        k = min(k, self.capacity)
        indices = torch.zeros(batch, heads, length, k, dtype=torch.int64, device=queries.device)
        valid = torch.zeros(batch, heads, length, k, dtype=torch.bool, device=queries.device)
        if length == 0 or not self.holds_any():
            return indices, valid
        for b in range(batch):
            held = int(self.count[b])
            if held == 0:
                continue
            found = self._search_faiss(b, queries[b], k) if self.search_with == "faiss" else self._search_torch(b, queries[b], k)
            got = found.shape[-1]
            indices[b, :, :, :got] = found.clamp(min=0)
            valid[b, :, :, :got] = found >= 0  # faiss pads with -1 when it finds fewer
        return indices, valid

    def _search_torch(self, b: int, queries: torch.Tensor, k: int) -> torch.Tensor:
        """Exact: queries (heads, L, hd) -> indices (heads, L, min(k, held))."""
        held = int(self.count[b])
        keys = self.keys[b, :, :held].to(queries.dtype)  # the live slots are 0..held-1
        step = max(1, SCORE_BUDGET // held)
        out = []
        for start in range(0, queries.shape[1], step):
            scores = queries[:, start : start + step].detach() @ keys.transpose(-1, -2)  # (heads, chunk, held)
            out.append(scores.topk(min(k, held), dim=-1).indices)
        return torch.cat(out, dim=1)

    def _search_faiss(self, b: int, queries: torch.Tensor, k: int) -> torch.Tensor:
        import numpy as np

        self._sync_faiss(b)
        found = []
        for h, index in enumerate(self._faiss[b]):
            q = np.ascontiguousarray(queries[h].detach().to("cpu", torch.float32).numpy())
            _, labels = index.search(q, min(k, int(self.count[b])))
            found.append(torch.from_numpy(labels))
        return torch.stack(found).to(queries.device)

    def _sync_faiss(self, b: int) -> None:
        """Bring sequence b's indexes up to its buffers: add what was written since, or rebuild
        when entries were evicted (the ring wrapped past what the index holds)."""
        import numpy as np

        written, held = int(self.written[b]), int(self.count[b])
        if self._faiss[b] is not None and written == self._indexed[b]:
            return
        # Rebuild after an eviction, and (IVF) once the memory has doubled since the cells were
        # trained, so that they follow the data rather than the first segment written.
        retrain = self.index == "ivf" and held >= 2 * self._trained_on[b]
        rebuild = self._faiss[b] is None or written > self.capacity or retrain
        first = 0 if rebuild else self._indexed[b]
        if rebuild:
            self._faiss[b] = [self._new_index(self.keys[b, h, :held]) for h in range(self.heads)]
            self._trained_on[b] = held
        for h, index in enumerate(self._faiss[b]):
            new = self.keys[b, h, first:held].detach().to("cpu", torch.float32).numpy()
            index.add(np.ascontiguousarray(new))  # labels are ring slots: added in slot order
        self._indexed[b] = written

    def _new_index(self, keys: torch.Tensor):
        """An empty faiss index of the configured kind (IVF trained on ``keys``)."""
        import numpy as np

        faiss = faiss_or_none()
        dim = self.head_dim
        if self.index == "exact":
            return faiss.IndexFlatIP(dim)
        if self.index == "hnsw":
            return faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        # IVF: no more cells than the data can train (faiss wants ~39 points per cell).
        lists = max(1, min(self.ivf_lists, keys.shape[0] // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(keys.detach().to("cpu", torch.float32).numpy()))
        index.nprobe = min(self.ivf_probe, lists)
        return index
