"""Non-negative orthogonal matching pursuit over a (possibly memory-mapped) atom matrix.

``pursuit(atoms, target, k)`` picks at most ``k`` rows of ``atoms`` (pool gradient vectors)
whose non-negative combination reconstructs ``target``. Each step:

1. Score every atom against the residual, ``c_i = <a_i, r> / ||a_i||`` (or ``<a_i, r>`` with
   ``normalize=False``), in row blocks of ``block_rows``, accumulating in float64.
2. Pick the best atom not in the active set (``argmax c``; ``argmax |c|`` when signed); ties go
   to the lowest row. Stop if the best score is ``<= tol * ||target||`` (times the largest atom
   norm when ``normalize=False``), so the threshold does not depend on the gradients' scale.
3. Refit the weights of the active atoms plus the new one by least squares: the exact NNLS
   solution on that small set (Lawson-Hanson, warm-started from the previous weights), or
   plain least squares when ``nonnegative=False``. Atoms whose weight hits zero leave the
   active set and go back to the pool; they may be picked again by a later step.
4. ``r = target - A_S^T w``. Stop when ``|S| == k`` or ``||r|| <= tol * ||target||``.

Why the loop is hand-written in Numba rather than calling ``scipy.optimize.nnls`` per step:
a from-scratch NNLS refit costs ``O(d |S|^2)`` or more every step, ``O(d k^3)`` in total. Here
the Cholesky factor of the active Gram matrix ``G = A_S A_S^T`` is updated incrementally
(a row appended per pick, a rank-one update per drop), so a refit is ``O(|S|^2)`` plus an
``O(d |S|)`` Gram column, and the pass over the atoms (``O(n d)``, parallel over rows) dominates.

float16 atoms (e.g. a float16 ``np.memmap`` larger than memory) are read as raw uint16 and
converted to float32 inside the kernel, bit-exactly; no float32 copy of the matrix or of a block
is made. Measured on one 20000 x 1024 pass (2 cores): 2.3-3 ms, against 48 ms converting blocks
with ``astype`` in Python and 7.5 ms through a 65536-entry lookup table; float32 input takes
2-2.8 ms. Blocks under ``kernels._PARALLEL_MIN_SIZE`` elements are scored on one thread (each
row kernel is one body compiled as a serial and a parallel twin). On a machine whose cores are
busy with other work, fork/join costs milliseconds per parallel pass; there set
``NUMBA_NUM_THREADS=1`` or ``OMP_WAIT_POLICY=PASSIVE``.

Termination: the number of picks (each one a pass over the atoms) is capped at ``2 * k + 10``
and each refit at ``3 * k + 30`` Lawson-Hanson iterations. An atom numerically in the span of
the active atoms (or one whose refit weight would not be positive, a rounding artefact) is
banned for the rest of the run.

Scale:

- ``atoms`` may be a list of row blocks, including ``MappedRows`` (a ``.npy`` file, or rows of
  it, mapped only while a pass reads it: a gradient store's float16 shards are read in place,
  and resident memory stays near one shard however large the store is).
- ``column_scale`` weights columns (e.g. checkpoint blocks of a trajectory) inside the kernels:
  ``<a * s, r> = <a, s * r>`` and the norms take ``s**2``, so no scaled copy is made.
- ``refresh=R > 1`` is lazy greedy: after a full pass the 2048 best-scoring atoms are kept as
  candidates and re-scored alone for up to ``R - 1`` steps, while the best of them beats the
  best score left out at the pass. Exact on pools of at most 2048 atoms; otherwise a left-out
  atom whose score rose past that mark is missed until the next pass. Measured: on real
  gradient stores (20 Newsgroups, 3,000 x 4 x 1,024, budgets 1-10%) refresh 4 and 8 chose
  exactly the exact selections with 4-8x fewer passes; on synthetic data where the residual
  falls to ~1e-4 of the target (k close to d) the paths differ and the final residual moved
  by +-10-30% (``benchmarks/bench_pursuit.py --sklearn``).
- ``sharded_pursuit`` runs each full pass as one task per row shard, in this process or on a
  Dask cluster, and merges the shards' winners; its result equals ``pursuit``'s.

Modules:

- ``kernels``: Numba kernels of a pass (row scores and norms for float rows and for float16
  rows read as uint16 bits, each a serial and a parallel twin of one body; the best-row pick).
- ``nnls``: Numba refit on the active atoms: the incremental Cholesky factor (append, delete,
  solve), the Gram column, add-and-refit (Lawson-Hanson NNLS or least squares), the residual
  and dropping zero-weight atoms.
- ``atoms``: where rows come from: ``MappedRows`` and ``AtomSource`` (row blocks read as one
  matrix).
- ``passes``: a full pass over an ``AtomSource``: norms, scores, best row and lazy candidates.
- ``driver``: ``PursuitResult``, ``pursuit``, ``correlations``, argument checks and the step
  loop ``pursue``.
- ``sharded``: ``sharded_pursuit``: shard tasks, their merge, in-process and Dask runners.

Numba's on-disk cache does not see edits to a jitted function called from another file (here
``kernels.dot_float`` from ``nnls``): after editing ``kernels.py``, delete this package's
``__pycache__``.
"""

from curation.pursuit.atoms import AtomPart, Atoms, MappedRows
from curation.pursuit.driver import PursuitResult, correlations, pursuit
from curation.pursuit.sharded import sharded_pursuit

__all__ = ["AtomPart", "Atoms", "MappedRows", "PursuitResult", "correlations", "pursuit",
           "sharded_pursuit"]
