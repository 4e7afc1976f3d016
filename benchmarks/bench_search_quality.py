"""Residual of faiss-search pursuit against exact pursuit on in-memory float16 atoms.

    python benchmarks/bench_search_quality.py N D K {gradient,clustered} [CANDIDATES ...]

``gradient``: the model of ``bench_pursuit.py`` (rank-32 structure plus weak isotropic noise;
the target a mean of 50 rows plus noise), where the residual soon lies in the noise.
``clustered``: 200 random centres plus noise of 0.3 per column; the target a mean of 50 rows.
For each candidate count (rows per index list, default 1024): wall time of the steps (the
index is built once, timed apart), the relative residual, its ratio to exact pursuit's, the
support overlap and the calibration counts (``PursuitResult.search_info``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pursuit import make_data  # noqa: E402

from curation.pursuit import pursuit  # noqa: E402
from curation.pursuit.atoms import AtomSource  # noqa: E402
from curation.search import search_backend  # noqa: E402


def clustered(n: int, d: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d))
    atoms = centres[rng.integers(200, size=n)] + 0.3 * rng.standard_normal((n, d))
    return atoms, atoms[rng.choice(n, 50, replace=False)].mean(axis=0)


def main() -> None:
    if len(sys.argv) < 5 or sys.argv[4] not in ("gradient", "clustered"):
        raise SystemExit(__doc__)
    import faiss

    faiss.omp_set_num_threads(1)
    n, d, k = map(int, sys.argv[1:4])
    atoms, target = make_data(n, d, 0) if sys.argv[4] == "gradient" else clustered(n, d)
    atoms = atoms.astype(np.float16)
    pursuit(atoms[:200], target, 5)  # JIT compile / cache load
    start = time.perf_counter()
    exact = pursuit(atoms, target, k)
    exact_s = time.perf_counter() - start
    b = np.linalg.norm(target)
    print(f"{sys.argv[4]} n={n} d={d} k={k}: exact {exact_s:.2f} s  rel.residual "
          f"{exact.residual_norms[-1] / b:.4f}", flush=True)
    start = time.perf_counter()
    index = search_backend("faiss").build(AtomSource(atoms))
    print(f"index build {time.perf_counter() - start:.2f} s", flush=True)
    for m in [int(x) for x in sys.argv[5:]] or [1024]:
        start = time.perf_counter()
        r = pursuit(atoms, target, k, search="faiss", index=index, candidates=m)
        wall = time.perf_counter() - start
        overlap = len(np.intersect1d(r.indices, exact.indices)) / len(exact.indices)
        print(f"faiss candidates={m}: {wall:.2f} s  rel.residual {r.residual_norms[-1] / b:.4f}"
              f"  faiss/exact {r.residual_norms[-1] / exact.residual_norms[-1]:.3f}  overlap "
              f"{overlap:.2f}  {r.search_info}", flush=True)


if __name__ == "__main__":
    main()
