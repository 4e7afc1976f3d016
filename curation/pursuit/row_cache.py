"""A bounded cache of atom rows for index-searched pursuit steps.

Consecutive steps re-score mostly the same candidates: the residual changes by one atom's
contribution per step. Measured on a 1M x 1024 float16 store (k = 600, 2 x 8,192 candidates
per step): 66% of a step's candidates were candidates of the step before, and only 9% had
never been a candidate before. Without a cache every step read all of them from the store
(about 70 of its 93 ms). The cache keeps the rows of the most recently used candidates, up to
a byte budget, so a step reads only the rows it has not seen lately.
"""

from __future__ import annotations

import numpy as np

from curation.pursuit.atoms import AtomSource

# Rows kept: at most this many bytes of them (64 MiB: 32,768 rows of a 1024-wide float16 store,
# two steps' candidates), and never fewer than one step's candidates. Not more: filling a cache
# touches fresh memory, and a first touch costs up to 7 us a page on a virtual machine; at 1M x
# 1024, k = 600 a 256 MiB cache's fill cost ~2 s of scattering into new pages and its steps
# took 24.1 and 24.5 s, against 22.5 and 20.5 s with 64 MiB.
CACHE_BYTES = 64 << 20


class RowCache:
    """The rows of ``src`` most recently asked for, least recently used out first."""

    def __init__(self, src: AtomSource, max_bytes: int = CACHE_BYTES) -> None:
        self.src = src
        row_bytes = src.d * np.dtype(src.dtype).itemsize
        self.max_rows = int(min(src.n, max(1, max_bytes // row_bytes)))
        self.slot_of = np.full(src.n, -1, np.int64 if src.n >= 2**31 else np.int32)
        self.ids = np.full(self.max_rows, -1, np.int64)  # the row in each slot (-1: free)
        self.used = np.zeros(self.max_rows, np.int64)  # the call that last asked for each slot
        # Not touched until written: resident memory grows with the slots in use.
        self.data = np.empty((self.max_rows, src.d), src.dtype)
        self.calls = self.hits = self.misses = 0

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """A new (m, d) array of the rows at ascending, distinct ``indices``, as ``src.rows``."""
        slots = self.slots(indices)
        return self.src.rows(indices) if slots is None else np.take(self.data, slots, axis=0)

    def scores(self, indices: np.ndarray, r: np.ndarray, inv_norms: np.ndarray) -> np.ndarray:
        """``rows(indices) @ r * inv_norms`` (float64) by the exact pass's arithmetic, scored
        in the cache without gathering the rows."""
        from curation.pursuit.kernels import score_block, score_rows

        out = np.empty(len(indices))
        slots = self.slots(indices)
        if slots is None:
            rows = self.src.rows(indices)
            score_block(rows.view(np.uint16) if self.src.half else rows, self.src.half, r,
                        inv_norms, out, serial=True)
        else:
            data = self.data.view(np.uint16) if self.src.half else self.data
            score_rows(data, slots, self.src.half, r, inv_norms, out)
        return out

    def slots(self, indices: np.ndarray) -> np.ndarray | None:
        """The cache slots holding the rows at ascending, distinct ``indices`` (reading the
        ones not held); None when they are more rows than the cache holds."""
        indices = np.asarray(indices, np.int64)
        self.calls += 1
        if len(indices) > self.max_rows:
            self.misses += len(indices)
            return None
        slots = self.slot_of[indices].astype(np.int64)
        miss = slots < 0
        self.used[slots[~miss]] = self.calls
        n_miss = int(miss.sum())
        self.hits += len(indices) - n_miss
        self.misses += n_miss
        if n_miss:
            # The least recently used slots (free ones first): this call's hits are the most
            # recent and at least n_miss slots are older, so no hit is evicted.
            free = np.argpartition(self.used, n_miss - 1)[:n_miss] \
                if n_miss < self.max_rows else np.arange(self.max_rows)
            old = self.ids[free]
            self.slot_of[old[old >= 0]] = -1
            self.ids[free] = indices[miss]
            self.slot_of[indices[miss]] = free
            self.used[free] = self.calls
            self.data[free] = self.src.rows(indices[miss])
            slots[miss] = free
        return slots
